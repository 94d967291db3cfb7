//go:build linux

package netns

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gvpn/gvpn/test/privtest"
)

const imageMarker = "gvt-sb image marker"

// applets are the busybox commands the test images offer.
var applets = []string{"sh", "id", "cat", "echo", "ls", "stat", "mkdir", "touch", "sleep", "setsid",
	"unshare", "grep", "test", "hostname", "rm"}

// testImageDir builds a small root file system: busybox-static with its
// applets, a marker file, two users. Its files belong to root, as an
// image's do.
func testImageDir(t *testing.T) string {
	t.Helper()
	privtest.RequireRoot(t)
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox is not installed (make deps installs busybox-static)")
	}
	if f, err := elf.Open(bb); err == nil {
		static := true
		for _, p := range f.Progs {
			static = static && p.Type != elf.PT_INTERP
		}
		f.Close()
		if !static {
			t.Skip(bb + " is linked dynamically (make deps installs busybox-static)")
		}
	}
	useStaticShim(t)
	root := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{"bin", "etc", "home/user"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range applets {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"etc/marker": imageMarker + "\n",
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
		"etc/group":  "root:x:0:\nuser:x:1000:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(root, "home/user"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	return root
}

// testSquashfs packs testImageDir into a squashfs and returns the file and
// the file system's size; when trailer is set, bytes follow the file
// system, as a GVMI's config does.
func testSquashfs(t *testing.T, trailer bool) (string, int64) {
	t.Helper()
	root := testImageDir(t)
	mk, err := exec.LookPath("mksquashfs")
	if err != nil {
		t.Skip("mksquashfs is not installed (make vm-deps installs squashfs-tools)")
	}
	img := filepath.Join(t.TempDir(), "image.gvmi")
	if out, err := exec.Command(mk, root, img, "-noappend", "-quiet", "-no-progress").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v %s", err, out)
	}
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if trailer {
		f, err := os.OpenFile(img, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteString(`{"Cmd":["sh"]}` + "00000014")
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return img, fi.Size()
}

func TestImageIsTheRootAndItsRootIsUnprivileged(t *testing.T) {
	rootDir := testImageDir(t)
	if !CanMapIDRanges() {
		t.Skip("this runtime cannot map id ranges")
	}
	s := openTest(t, Config{RootFS: &RootFS{Dir: rootDir}, Volumes: defaultVolumes(t)})
	r := run(t, s, sh(`cat /etc/marker; id -u; id -g
		test -e /etc/shadow && echo HOST-SHADOW; test -e /usr && echo HOST-USR
		echo x >/etc/foo && cat /etc/foo; mkdir /opt && echo y >/opt/y && echo layer
		echo w >/golem/work/w && echo volume; hostname; cat /etc/hostname; grep -c golem /etc/hosts
		grep -E '^Cap(Eff|Bnd):' /proc/self/status; sleep 1000 </dev/null >/dev/null 2>&1 & echo $!`))
	got := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var caps uint64 // the image's root keeps rootCaps, in its own namespace only
	for _, c := range rootCaps {
		caps |= 1 << c
	}
	want := []string{imageMarker, "0", "0", "x", "layer", "volume", DefaultHostname, DefaultHostname, "1",
		fmt.Sprintf("CapEff:\t%016x", caps), fmt.Sprintf("CapBnd:\t%016x", caps)}
	if r.rc != 0 || len(got) != len(want)+1 || !slices.Equal(got[:len(want)], want) {
		t.Fatalf("inside (rc %d):\n%s\nwant:\n%s\nand a pid; stderr %q", r.rc, r.stdout, strings.Join(want, "\n"), r.stderr)
	}
	// The host sees the activity's first id, not root.
	assertHostIDs(t, hostPIDOf(t, s, got[len(want)]), s.ids, s.ids)
	for _, p := range []string{filepath.Join(s.layerDir, "upper/etc/foo"), filepath.Join(s.workdir, defaultVolumes(t)[0].Name, "w")} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatalf("the payload's file on the host: %v", err)
		}
		if uid := fileUID(fi); uid != s.ids {
			t.Errorf("%s belongs to uid %d on the host, want %d", p, uid, s.ids)
		}
	}
	if _, err := os.Lstat(filepath.Join(rootDir, "etc/foo")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the image directory was written: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(s.layerDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the writable layer is left after Close: %v", err)
	}
	vol := filepath.Join(s.workdir, defaultVolumes(t)[0].Name)
	if fi, err := os.Lstat(vol); err != nil || fileUID(fi) != uint32(os.Geteuid()) {
		t.Errorf("the volume directory after Close: %v (owner %d), want it the runtime's", err, fileUID(fi))
	}
}

func TestImageUserThatIsNotRoot(t *testing.T) {
	rootDir := testImageDir(t)
	if !CanMapIDRanges() {
		t.Skip("this runtime cannot map id ranges")
	}
	s := openTest(t, Config{RootFS: &RootFS{Dir: rootDir}, User: User{UID: 1000, GID: 1000}})
	r := run(t, s, sh(`id -u; id -g; stat -c '%u %U' /etc/marker /home/user
		echo x >/etc/foo 2>/dev/null && echo WROTE-ETC; echo y >/home/user/y && echo home
		grep -E '^Cap(Prm|Eff|Bnd):' /proc/self/status; grep -E '^(Uid|CapPrm):' /proc/$PPID/status
		sleep 1000 </dev/null >/dev/null 2>&1 & echo $!`))
	got := strings.Split(strings.TrimSpace(r.stdout), "\n")
	// The parent is the relay (see runRelay): the host's root, unmapped
	// here, with no capability left.
	want := []string{"1000", "1000", "0 root", "1000 user", "home",
		"CapPrm:\t0000000000000000", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000",
		"Uid:\t65534\t65534\t65534\t65534", "CapPrm:\t0000000000000000"}
	if len(got) != len(want)+1 || !slices.Equal(got[:len(want)], want) {
		t.Fatalf("inside (rc %d):\n%s\nwant:\n%s\nand a pid; stderr %q", r.rc, r.stdout, strings.Join(want, "\n"), r.stderr)
	}
	assertHostIDs(t, hostPIDOf(t, s, got[len(want)]), s.ids+1000, s.ids+1000)
}

func TestSquashfsImageWithATrailer(t *testing.T) {
	img, size := testSquashfs(t, true)
	wd := t.TempDir()
	s := openTest(t, Config{Workdir: wd, RootFS: &RootFS{Image: img, Size: size}})
	if r := run(t, s, sh(`cat /etc/marker; echo x >/etc/foo && cat /etc/foo`)); r.stdout != imageMarker+"\nx\n" {
		t.Errorf("inside: %q %q", r.stdout, r.stderr)
	}
	if dev := loopOf(img); dev == "" {
		t.Error("no loop device has the image while the sandbox runs")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	assertImageReleased(t, img, wd)
	// A Size that is not the file system's is refused before anything.
	for _, bad := range []int64{1 << 40, -512} {
		_, err := Open(Config{Workdir: t.TempDir(), NamePrefix: testPrefix, RootFS: &RootFS{Image: img, Size: bad}})
		if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), "RootFS.Size") {
			t.Errorf("Size %d: %v", bad, err)
		}
	}
	// Not a squashfs: Open fails naming it, leaving nothing.
	junk := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(junk, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	wd = t.TempDir()
	if _, err := Open(Config{Workdir: wd, NamePrefix: testPrefix, RootFS: &RootFS{Image: junk}}); err == nil || !strings.Contains(err.Error(), "squashfs") {
		t.Errorf("a file of zeros as the image: %v", err)
	}
	assertGone(t, NameFor(testPrefix, wd))
	assertImageReleased(t, junk, wd)
}

func TestCrashWithAnImageLeavesNothingAfterSweep(t *testing.T) {
	img, _ := testSquashfs(t, false)
	workdir := t.TempDir()
	daemon, child := crash(t, workdir, crashImageEnv+"="+img, shimEnv+"="+useStaticShim(t))
	if !exitedFD(daemon, guard) || !exitedFD(child, guard) {
		t.Error("payload processes survived the runtime")
	}
	if _, err := os.Lstat(filepath.Join(workdir, LayerDirName)); err != nil {
		t.Fatalf("the crashed sandbox had no layer to leave: %v", err)
	}
	base, err := readIDs(filepath.Join(runDir, NameFor(testPrefix, workdir)))
	if err != nil && CanMapIDRanges() {
		t.Fatalf("the crashed sandbox's id range: %v", err)
	}
	removed, err := Sweep(testPrefix, privtest.Log(t))
	if err != nil {
		t.Fatal(err)
	}
	// Its range is free again: no sandbox directory records it.
	entries, _ := os.ReadDir(runDir)
	for _, e := range entries {
		if b, err := readIDs(filepath.Join(runDir, e.Name())); err == nil && b == base {
			t.Errorf("%s still holds the crashed sandbox's range %d", e.Name(), base)
		}
	}
	if !slices.Contains(removed, NameFor(testPrefix, workdir)) {
		t.Errorf("Sweep removed %v", removed)
	}
	assertGone(t, NameFor(testPrefix, workdir))
	assertImageReleased(t, img, workdir)
}

// assertImageReleased checks that no loop device holds img, no mount of
// the host names it or the workdir, and no writable layer is left.
func assertImageReleased(t *testing.T, img, workdir string) {
	t.Helper()
	// The kernel frees the device once the namespace's last mount of
	// it is gone, which may trail the init's death.
	deadline := time.Now().Add(guard)
	for loopOf(img) != "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if dev := loopOf(img); dev != "" {
		t.Errorf("%s still holds %s", dev, img)
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), workdir) {
		t.Errorf("a mount of the host names %s:\n%s", workdir, b)
	}
	if _, err := os.Lstat(filepath.Join(workdir, LayerDirName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the writable layer is left: %v", err)
	}
}

// loopOf returns the loop device whose backing file is path, or "".
func loopOf(path string) string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSpace(string(b)) == path {
			return strings.Split(f, "/")[3]
		}
	}
	return ""
}

func fileUID(fi os.FileInfo) uint32 {
	if fi == nil {
		return 1<<32 - 1
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}

// TestImageLinksStayInTheImage gives the init an image whose links point
// at the host's files where it mounts things: they must resolve inside
// the image (or be replaced there), never on the host.
func TestImageLinksStayInTheImage(t *testing.T) {
	rootDir := testImageDir(t)
	hostile := map[string]string{
		"golem":        "/root",                    // the volume /golem/work
		"etc/hosts":    "/etc/shadow",              // a file the init binds over
		"etc/hostname": "../../../../etc/gvt-sb-x", // dangling, relative
		"tmp":          "/",
		"proc":         "/etc",
		"opt":          "/proc/self/root",
	}
	for name, target := range hostile {
		if err := os.Symlink(target, filepath.Join(rootDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	vols := defaultVolumes(t)
	s := openTest(t, Config{RootFS: &RootFS{Dir: rootDir}, Volumes: vols})
	r := run(t, s, sh(`echo w >/golem/work/w && cat /golem/work/w; grep -c golem /etc/hosts; cat /etc/hostname; echo t >/tmp/t && echo tmp`))
	if r.stdout != "w\n1\n"+DefaultHostname+"\ntmp\n" {
		t.Errorf("inside: %q %q", r.stdout, r.stderr)
	}
	for _, p := range []string{"/root/work", "/etc/gvt-sb-x", "/t"} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the host has %s", p)
		}
	}
	if b, err := os.ReadFile(filepath.Join(s.workdir, vols[0].Name, "w")); err != nil || string(b) != "w\n" {
		t.Errorf("the volume on the host: %q %v", b, err)
	}
}
