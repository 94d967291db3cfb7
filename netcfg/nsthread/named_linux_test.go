package nsthread_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/netcfg/nsthread"
	"github.com/gvpn/gvpn/test/privtest"
)

// iprouteAdd does to dir what iproute2's `ip netns add` does before it binds
// a namespace: mark dir shared, and if dir is not a mount point, bind it
// onto itself first. The real `ip` cannot be pointed at another directory.
func iprouteAdd(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err == nil {
		return
	} else if !errors.Is(err, unix.EINVAL) {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
}

// mountsUnder lists the mount points at or below dir, from our mountinfo.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// A namespace made while the directory was not yet a mount point must stay
// deletable after somebody's first `ip netns add` binds the directory onto
// itself. On a fresh machine this is the order of events when a gvpn
// runtime starts before anything else used `ip netns`; the namespace then
// used to be stuck (unlink: EBUSY).
func TestNamedStaysDeletableAfterIPNetnsAdd(t *testing.T) {
	privtest.RequireRoot(t)
	dir, err := os.MkdirTemp("", "gvt-nsdir-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 4 && len(mountsUnder(t, dir)) > 0; i++ {
			for _, m := range mountsUnder(t, dir) {
				unix.Unmount(m, unix.MNT_DETACH)
			}
		}
		os.RemoveAll(dir)
	})
	name := privtest.UniqueName("gvt-nsn-")
	h, err := nsthread.NewNamedIn(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	iprouteAdd(t, dir)
	if err := nsthread.DeleteNamedIn(dir, name); err != nil {
		t.Fatalf("delete after ip netns add: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("namespace file still there: %v", err)
	}
	if got := mountsUnder(t, dir); len(got) != 1 || got[0] != dir {
		t.Fatalf("mounts under the directory after delete: %v, want only its own bind", got)
	}
	if err := nsthread.DeleteNamedIn(dir, name); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}

func TestNamedIsANewNamespace(t *testing.T) {
	privtest.RequireRoot(t)
	name, h := privtest.NewNetns(t, "gvt-nsn-")
	own, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		t.Fatal(err)
	}
	var byName unix.Stat_t
	if err := unix.Stat(filepath.Join(nsthread.RunDir, name), &byName); err != nil {
		t.Fatal(err)
	}
	if st.Ino != byName.Ino {
		t.Fatalf("handle is namespace %d, the name is bound to %d", st.Ino, byName.Ino)
	}
	if strings.Contains(own, "["+strconv.FormatUint(st.Ino, 10)+"]") {
		t.Fatalf("the new namespace is the caller's own (%s)", own)
	}
}

func TestNamedRejectsPathNames(t *testing.T) {
	for _, bad := range []string{"", ".", "..", "a/b", "../x"} {
		if _, err := nsthread.NewNamed(bad); !errors.Is(err, nsthread.ErrCreate) {
			t.Errorf("NewNamed(%q): %v, want ErrCreate", bad, err)
		}
	}
}
