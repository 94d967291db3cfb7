//go:build linux

package netns

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/gvpn/gvpn/runtime/owner"
	"github.com/gvpn/gvpn/runtime/proc"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/runtime/volume"
	"github.com/gvpn/gvpn/test/privtest"
)

func TestPayloadIsUnprivilegedWithAReadOnlyHost(t *testing.T) {
	s := openTest(t, Config{Volumes: defaultVolumes(t)})
	hostHostname, _ := os.Hostname()
	r := run(t, s, sh(`id -u; id -g; hostname; cat /etc/hostname; grep -E '^(Cap(Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status
		for p in /etc/gvt-sb-x /usr/gvt-sb-x /root/gvt-sb-x /gvt-sb-x /run/gvt-sb-x /dev/gvt-sb-x /proc/gvt-sb-x; do
			touch $p 2>/dev/null && echo "WROTE $p"
		done
		cat /etc/shadow >/dev/null 2>&1 && echo "READ /etc/shadow"
		echo tmp >/tmp/t && echo shm >/dev/shm/s && echo work >/golem/work/w && echo writable`))
	want := []string{"65534", "65534", DefaultHostname, DefaultHostname,
		"CapPrm:\t0000000000000000", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000",
		"CapAmb:\t0000000000000000", "NoNewPrivs:\t1", "writable"}
	if got := strings.Split(strings.TrimSpace(r.stdout), "\n"); !slices.Equal(got, want) || r.rc != 0 {
		t.Errorf("inside (rc %d):\n%s\nwant:\n%s\nstderr %q", r.rc, r.stdout, strings.Join(want, "\n"), r.stderr)
	}
	if hostHostname == DefaultHostname {
		t.Logf("the host is called %q too: the hostname check proves less", hostHostname)
	}
	for _, p := range []string{"/etc/gvt-sb-x", "/usr/gvt-sb-x", "/root/gvt-sb-x", "/gvt-sb-x"} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("host has %s", p)
			os.Remove(p)
		}
	}
	if h, _ := os.Hostname(); h != hostHostname {
		t.Errorf("host hostname changed to %q", h)
	}
}

func TestRootOnlyWhenAsked(t *testing.T) {
	privtest.RequireRoot(t)
	s := openTest(t, Config{Root: true})
	if r := run(t, s, sh("id -u")); r.stdout != "0\n" {
		t.Errorf("Root: id -u = %q", r.stdout)
	}
	s = openTest(t, Config{User: User{UID: 1234, GID: 4321}})
	if r := run(t, s, sh("id -u; id -g; id -G")); r.stdout != "1234\n4321\n4321\n" {
		t.Errorf("uid 1234: id = %q", r.stdout)
	}
	if !CanMapIDRanges() {
		if _, err := Open(Config{Workdir: t.TempDir(), NamePrefix: testPrefix, User: User{UID: 0, GID: 5}}); !errors.Is(err, ErrBadConfig) {
			t.Errorf("uid 0 without Root: %v, want ErrBadConfig", err)
		}
		return
	}
	// In a user namespace uid 0 is its root: the host's uid is the
	// activity's first, with no capability on the host.
	s = openTest(t, Config{User: User{UID: 0, GID: 5}})
	r := run(t, s, sh("id -u; id -g; echo $$; sleep 1000 </dev/null >/dev/null 2>&1 & echo $!"))
	f := strings.Fields(r.stdout)
	if len(f) != 4 || f[0] != "0" || f[1] != "5" {
		t.Fatalf("uid 0 in the user namespace: %q %q", r.stdout, r.stderr)
	}
	pid := hostPIDOf(t, s, f[3])
	assertHostIDs(t, pid, s.ids, s.ids+5)
	if _, err := Open(Config{Workdir: t.TempDir(), NamePrefix: testPrefix, User: User{UID: IDRangeSize, GID: 5}}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("uid %d: %v, want ErrBadConfig", IDRangeSize, err)
	}
}

// assertHostIDs checks what the host sees of process pid: uid and gid,
// and no capability in the host's user namespace (its capabilities, if
// any, are in a user namespace that is not the host's).
func assertHostIDs(t *testing.T, pid int, uid, gid uint32) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 5 && f[0] == "Uid:":
			for _, id := range f[1:] {
				if id != strconv.Itoa(int(uid)) {
					t.Errorf("host sees %s, want uid %d everywhere", line, uid)
				}
			}
		case len(f) == 5 && f[0] == "Gid:":
			for _, id := range f[1:] {
				if id != strconv.Itoa(int(gid)) {
					t.Errorf("host sees %s, want gid %d everywhere", line, gid)
				}
			}
		}
	}
	self, err := os.Readlink("/proc/self/ns/user")
	if err != nil {
		t.Fatal(err)
	}
	if theirs, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/user"); err != nil || theirs == self {
		t.Errorf("pid %d is in user namespace %s (err %v), the host's is %s", pid, theirs, err, self)
	}
}

func TestVolumesAreSharedWithTheWorkdir(t *testing.T) {
	vols := defaultVolumes(t)
	s := openTest(t, Config{Volumes: vols})
	hostDir := filepath.Join(s.workdir, vols[0].Name)
	if err := os.WriteFile(filepath.Join(hostDir, "in.txt"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, s, sh(`cat /golem/work/in.txt; mkdir /golem/work/sub && echo from the payload >/golem/work/sub/out.txt`))
	if r.stdout != "from the host\n" || r.rc != 0 {
		t.Errorf("inside: %q rc %d %q", r.stdout, r.rc, r.stderr)
	}
	b, err := os.ReadFile(filepath.Join(hostDir, "sub", "out.txt"))
	if err != nil || string(b) != "from the payload\n" {
		t.Errorf("workdir has %q, %v", b, err)
	}
}

func TestOnlyStdioAndTheRequestEnvironmentReachThePayload(t *testing.T) {
	// A descriptor the runtime inherited without close-on-exec, pointing
	// at a file only root may read.
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(secret, syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	t.Setenv("GVT_SB_RUNTIME_SECRET", "leak")
	s := openTest(t, Config{})
	r := run(t, s, sandbox.ProcessSpec{Bin: "ls", Args: []string{"ls", "/proc/self/fd"}})
	// ls itself opens the directory it lists (one more descriptor).
	if got := strings.Fields(r.stdout); len(got) != 4 || !slices.Equal(got[:3], []string{"0", "1", "2"}) {
		t.Errorf("payload descriptors %q, want 0 1 2 and ls's own", r.stdout)
	}
	r = run(t, s, sandbox.ProcessSpec{Bin: "env", Env: []string{"FOO=bar"}})
	if r.stdout != "FOO=bar\nPATH="+proc.DefaultPath+"\n" {
		t.Errorf("payload environment %q", r.stdout)
	}
}

func TestSecondOpenOnALiveSandboxTouchesNothing(t *testing.T) {
	workdir := t.TempDir()
	s := openTest(t, Config{Workdir: workdir})
	p, err := s.Start(sandbox.ProcessSpec{Bin: "sleep", Args: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(Config{Workdir: workdir, NamePrefix: testPrefix})
	if !errors.Is(err, owner.ErrBusy) {
		t.Fatalf("second Open: %v, want owner.ErrBusy", err)
	}
	if err := s.Kill(p.Pid(), 0); err != nil {
		t.Errorf("the first sandbox's process is gone after the refused Open: %v", err)
	}
}

func TestSweepRemovesOnlyDeadOwnersSandboxes(t *testing.T) {
	privtest.RequireRoot(t)
	live := openTest(t, Config{})
	workdir := t.TempDir()
	daemon, _ := crash(t, workdir)
	if !exitedFD(daemon, guard) {
		t.Error("the daemon survived its runtime")
	}
	removed, err := Sweep(testPrefix, privtest.Log(t))
	if err != nil {
		t.Fatal(err)
	}
	dead := NameFor(testPrefix, workdir)
	// Earlier runs' leftovers may go too; the live one must not.
	if !slices.Contains(removed, dead) || slices.Contains(removed, live.Name()) {
		t.Errorf("Sweep removed %v, want %s and not %s", removed, dead, live.Name())
	}
	assertGone(t, dead)
	if r := run(t, live, sh("echo alive")); r.stdout != "alive\n" {
		t.Errorf("the live sandbox after Sweep: %q", r.stdout)
	}
}

func TestRAMAndNestedVolumes(t *testing.T) {
	vols, err := volume.Plan(`{"/golem/input":{"host":{}},"/golem/input/sub":{"host":{}},"/scratch":{"ram":{"size":"8MiB"}}}`)
	if err != nil {
		t.Fatal(err)
	}
	s := openTest(t, Config{Volumes: vols})
	r := run(t, s, sh(`echo a >/golem/input/sub/f && echo b >/scratch/f && stat -c '%U %a' /scratch && df -k /scratch | tail -1 | awk '{print $2}'`))
	if r.stdout != "nobody 700\n8192\n" || r.rc != 0 {
		t.Errorf("inside: %q rc %d %q", r.stdout, r.rc, r.stderr)
	}
	for _, v := range vols {
		if v.Path == "/golem/input/sub" {
			if b, err := os.ReadFile(filepath.Join(s.workdir, v.Name, "f")); err != nil || string(b) != "a\n" {
				t.Errorf("nested volume on the host: %q %v", b, err)
			}
		}
	}
	// A mount point inside a read-only host directory cannot be made.
	vols, _ = volume.Plan(`["/usr/gvt-sb-no-such-dir"]`)
	wd := t.TempDir()
	_, err = Open(Config{Workdir: wd, NamePrefix: testPrefix, Volumes: vols})
	if err == nil || !strings.Contains(err.Error(), "/usr/gvt-sb-no-such-dir") || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("volume in /usr: %v", err)
	}
	assertGone(t, NameFor(testPrefix, wd))
}

func TestCheckVolumes(t *testing.T) {
	for override, ok := range map[string]bool{
		`["/golem/in","/golem/out"]`: true,
		`["/root/x"]`:                true, // hidden: the sandbox's own empty /root
		`["/usr/local"]`:             true, // exists on the host
		`["/usr/gvt-sb-no-such"]`:    false,
	} {
		vols, err := volume.Plan(override)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckVolumes(vols); (err == nil) != ok {
			t.Errorf("CheckVolumes(%s) = %v, want ok=%v", override, err, ok)
		}
	}
}

// TestActivitiesCannotReadEachOthersFiles is issue 20's attack: the
// provider's data directory is outside /home and /root (here /var/lib),
// so another agreement's workdir is visible, read-only, in the payload's
// view of the host; the ExeUnit uploaded a file (mode 0644, as the
// provider's user) into agreement A's volume; agreement B's payload tries
// to read it. Each activity is its own user on the host, and a volume
// directory (mode 2770) lets in only its owner and the runtime's group.
func TestActivitiesCannotReadEachOthersFiles(t *testing.T) {
	privtest.RequireRoot(t)
	data, err := os.MkdirTemp("/var/lib", "gvt-sb-provider-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	workdir := func(agreement string) string {
		wd := filepath.Join(data, "exe-unit/work", agreement, "activity")
		if err := os.MkdirAll(wd, 0o755); err != nil {
			t.Fatal(err)
		}
		return wd
	}
	vols := defaultVolumes(t)
	a := openTest(t, Config{Workdir: workdir("agreement-a"), Volumes: vols})
	b := openTest(t, Config{Workdir: workdir("agreement-b"), Volumes: vols})
	secret := filepath.Join(a.workdir, vols[0].Name, "uploaded.txt")
	if err := os.WriteFile(secret, []byte("agreement A's data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := run(t, a, sh("cat /golem/work/uploaded.txt")); r.stdout != "agreement A's data\n" {
		t.Fatalf("A cannot read its own upload: %q %q", r.stdout, r.stderr)
	}
	r := run(t, b, sh("cat "+secret+" || ls "+filepath.Dir(secret)))
	if strings.Contains(r.stdout, "agreement A") || strings.Contains(r.stdout, "uploaded") || r.rc == 0 {
		t.Errorf("B read A's upload (rc %d): %q", r.rc, r.stdout)
	}
	if !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("B's attempt failed, but not for want of permission: %q", r.stderr)
	}
	if CanMapIDRanges() && a.ids == b.ids {
		t.Errorf("both activities have the host ids from %d", a.ids)
	}
}

// TestPayloadCannotOpenUserNamespaces is issue 20's item 4: `unshare -Ur`
// gave the payload capabilities over namespaces of its own (veth,
// nftables, tmpfs mounts). It must fail for every payload user, also
// the root of the payload's own user namespace.
func TestPayloadCannotOpenUserNamespaces(t *testing.T) {
	privtest.RequireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	users := []User{Nobody}
	if CanMapIDRanges() {
		users = append(users, User{UID: 0, GID: 0})
	}
	for _, u := range users {
		s := openTest(t, Config{User: u})
		for _, cmd := range []string{"unshare -Ur id -u", "unshare -Urn ip link add gvt-sb-x type dummy", "unshare -Urm true"} {
			r := run(t, s, sh(cmd))
			if r.rc == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
				t.Errorf("user %d: %s: rc %d, stdout %q, stderr %q; want it refused", u.UID, cmd, r.rc, r.stdout, r.stderr)
			}
		}
		// Other namespaces need capabilities the payload does not
		// have, in the host's user namespace or its own.
		if r := run(t, s, sh("unshare -n true")); r.rc == 0 {
			t.Errorf("user %d: unshare -n worked", u.UID)
		}
	}
}
