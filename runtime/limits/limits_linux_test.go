//go:build linux

package limits

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func needRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("privileged test (-short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups and mounts")
	}
}

// A process started, joined to the group through ProcsFiles and JoinSelf
// from the inside (as the netns shim does), is counted; Remove kills it
// and leaves no directory.
func TestGroupJoinUsageRemove(t *testing.T) {
	needRoot(t)
	name := "test-" + t.Name()
	g, un, err := New(name, Limits{CPUCores: 1, MemBytes: 64 << 20, Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	if g == nil {
		t.Skipf("no cgroup controllers here: %s", Describe(un))
	}
	t.Cleanup(func() { g.Remove() })
	if len(un) > 0 {
		t.Logf("unenforced here: %s", Describe(un))
	}
	fs, err := g.ProcsFiles()
	if err != nil {
		t.Fatal(err)
	}
	// sh joins by writing 0 to each inherited descriptor, then burns.
	script := ""
	for i := range fs {
		script += "echo 0 >&" + string(rune('3'+i)) + "; "
	}
	cmd := exec.Command("sh", "-c", script+"exec sleep 60")
	cmd.ExtraFiles = fs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		f.Close()
	}
	defer cmd.Wait()
	waitIn(t, g, cmd.Process.Pid)
	u, err := g.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Pids == 0 {
		t.Errorf("usage %+v: no process counted", u)
	}
	if u2, err := UsageOf(name); err != nil || u2.Pids != u.Pids {
		t.Errorf("UsageOf: %+v %v, Usage: %+v", u2, err, u)
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := g.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if Exists(name) {
		t.Fatal("group left after Remove")
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("the process in the group survived Remove")
	}
}

// On cgroup v1 a group joins the cpu hierarchy only with a CPU limit: a
// group there is one scheduling entity, which without a quota only slows
// the payload. Its other controllers and UsageOf work either way.
func TestGroupInCPUHierarchyOnlyWithACPULimit(t *testing.T) {
	needRoot(t)
	if Version() != 1 || missingV1()["cpu"] {
		t.Skip("needs the cgroup v1 cpu controller")
	}
	for _, c := range []struct {
		l     Limits
		inCPU bool
	}{{Limits{Pids: 16}, false}, {Limits{CPUCores: 1, Pids: 16}, true}} {
		name := "test-" + t.Name() + strconv.FormatBool(c.inCPU)
		g, _, err := New(name, c.l)
		if err != nil || g == nil {
			t.Fatalf("New(%+v): %v %v", c.l, g, err)
		}
		_, err = os.Stat(filepath.Join(cgroupRoot, "cpu", Parent, name))
		if inCPU := err == nil; inCPU != c.inCPU {
			t.Errorf("limits %+v: group in the cpu hierarchy: %v, want %v", c.l, inCPU, c.inCPU)
		}
		if _, err := os.Stat(filepath.Join(cgroupRoot, "pids", Parent, name)); err != nil {
			t.Errorf("limits %+v: no pids group: %v", c.l, err)
		}
		if _, err := UsageOf(name); err != nil {
			t.Errorf("limits %+v: UsageOf: %v", c.l, err)
		}
		if err := g.Remove(); err != nil || Exists(name) {
			t.Fatalf("Remove: %v, left: %v", err, Exists(name))
		}
	}
}

// waitIn waits until pid is listed in every cgroup.procs of g.
func waitIn(t *testing.T, g *Group, pid int) {
	t.Helper()
	for i := 0; ; i++ {
		all := true
		for _, p := range g.procs {
			b, _ := os.ReadFile(p)
			all = all && strings.Contains("\n"+string(b), "\n"+itoa(pid)+"\n")
		}
		if all {
			return
		}
		if i > 500 {
			t.Fatalf("pid %d never joined %v", pid, g.procs)
		}
		sleepTick()
	}
}

// The cgroup v2 code on the hybrid host's unified hierarchy, which has no
// controllers: the group is made, joined, read and removed, and every
// limit is reported unenforced.
func TestGroupV2OnUnified(t *testing.T) {
	needRoot(t)
	root := "/sys/fs/cgroup/unified"
	if Version() == 2 {
		root = v2Root
	} else if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err != nil {
		t.Skip("no cgroup v2 hierarchy here")
	}
	g := &Group{name: "test-v2", limits: Limits{CPUCores: 1, MemBytes: 64 << 20, Pids: 16}}
	un, err := g.create2(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("unenforced on %s: %s", root, Describe(un))
	dir := filepath.Join(root, Parent, "test-v2")
	defer os.Remove(filepath.Dir(dir))
	defer os.Remove(dir)
	if g.v2 == nil {
		t.Fatal("no v2 manager")
	}
	if err := g.Add(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Usage(); err != nil {
		t.Fatal(err)
	}
	// Back out before removing.
	if err := os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(itoa(os.Getpid())), 0); err != nil {
		t.Fatal(err)
	}
	if err := g.v2.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s left: %v", dir, err)
	}
}

// Writing past the disk's size fails with ENOSPC; the bind shows the
// disk's file at the workdir path; Close, and Sweep after a "crash",
// leave no mount, image or record.
func TestDisk(t *testing.T) {
	needRoot(t)
	if why := diskUnsupported(); why != "" {
		t.Skip(why)
	}
	for _, crash := range []bool{false, true} {
		workdir := t.TempDir()
		vol := filepath.Join(workdir, "vol-a")
		if err := os.Mkdir(vol, 0o751); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(vol, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		// What the directory held before is copied onto the disk.
		if err := os.MkdirAll(filepath.Join(vol, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vol, "sub", "input"), []byte("in"), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("sub/input", filepath.Join(vol, "link")); err != nil {
			t.Fatal(err)
		}
		d, err := OpenDisk("test-disk", workdir, 16<<20)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Bind("vol-a"); err != nil {
			d.Close()
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(vol, &st); err != nil || st.Uid != 65534 || st.Mode&0o7777 != 0o751 {
			t.Errorf("bound dir: uid %d mode %o err %v", st.Uid, st.Mode&0o7777, err)
		}
		if b, err := os.ReadFile(filepath.Join(vol, "link")); err != nil || string(b) != "in" {
			t.Errorf("the directory's content on the disk: %q %v", b, err)
		}
		f, err := os.Create(filepath.Join(vol, "big"))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		var werr error
		for i := 0; i < 64 && werr == nil; i++ {
			_, werr = f.Write(buf)
		}
		if werr == nil {
			werr = f.Sync()
		}
		f.Close()
		if !errors.Is(werr, syscall.ENOSPC) {
			t.Errorf("write past 16 MiB: %v, want ENOSPC", werr)
		}
		if used, err := d.Used(); err != nil || used < 8<<20 {
			t.Errorf("used %d, %v", used, err)
		}
		if crash {
			// The runtime died: only the record tells what to undo.
			err = Sweep("test-disk")
		} else {
			err = d.Close()
			if err == nil {
				err = d.Close()
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		if strings.Contains(string(mounts), workdir) {
			t.Errorf("crash=%v: mounts left under %s", crash, workdir)
		}
		for _, p := range []string{filepath.Join(workdir, DiskImageName), filepath.Join(workdir, DiskDirName), filepath.Join(registryDir, "test-disk")} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("crash=%v: %s left", crash, p)
			}
		}
		if _, err := os.Stat(filepath.Join(vol, "big")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("crash=%v: the disk's file still shows in the workdir", crash)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func sleepTick() { time.Sleep(10 * time.Millisecond) }
