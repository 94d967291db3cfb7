package nsthread

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RunDir is where `ip netns` keeps named network namespaces, each one an
// nsfs bind mount on an empty file.
const RunDir = "/run/netns"

// ErrCreate wraps every failure to create a named namespace.
var ErrCreate = errors.New("create named network namespace")

// NewNamed creates a network namespace bound at RunDir/name, as
// `ip netns add name` does, and returns an open handle to it. The calling
// goroutine's thread is left in its own namespace. On error nothing is
// left behind.
func NewNamed(name string) (netns.NsHandle, error) { return newNamedIn(RunDir, name) }

// DeleteNamed undoes NewNamed (or `ip netns add`): it unmounts the name and
// removes the file. A name that does not exist, or a plain file left by a
// creation that failed half-way, is not an error, so teardown can run
// twice.
func DeleteNamed(name string) error { return deleteNamedIn(RunDir, name) }

// prepareMu serialises the set-up of the directory; mount(2) on the same
// point from two goroutines could otherwise stack two bind mounts.
var prepareMu sync.Mutex

// prepareRunDir makes dir a shared mount point of its own, exactly the way
// iproute2 does before its first `ip netns add`: try to mark it shared; if
// it is not a mount point (EINVAL), bind it onto itself and try again.
//
// Why it matters: when dir is not yet a mount point and a namespace is
// bound in it, the first `ip netns add` on the machine (from anyone: an
// operator, a test, another runtime) bind-mounts dir over itself. Our
// earlier nsfs mount then sits underneath that bind, where unmounting the
// path cannot reach it and unlink fails with EBUSY: the namespace can no
// longer be deleted. Preparing the directory first, as iproute2 would, makes
// its later `ip netns add` find a mount point and leave it alone.
func prepareRunDir(dir string) error {
	prepareMu.Lock()
	defer prepareMu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for bound := false; ; bound = true {
		err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) || bound {
			return fmt.Errorf("make %s a shared mount: %w", dir, err)
		}
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s onto itself: %w", dir, err)
		}
	}
}

func newNamedIn(dir, name string) (netns.NsHandle, error) {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return netns.None(), fmt.Errorf("%w: bad name %q", ErrCreate, name)
	}
	if err := prepareRunDir(dir); err != nil {
		return netns.None(), fmt.Errorf("%w: %v", ErrCreate, err)
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return netns.None(), fmt.Errorf("%w: %v", ErrCreate, err)
	}
	f.Close()
	// A new namespace exists only on the thread that unshared into it, so
	// the thread must stay locked from unshare until its namespace file is
	// bound; Do's thread discipline restores (or discards) it afterwards.
	var h netns.NsHandle = netns.None()
	err = onFreshNetnsThread(func(tid int) error {
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", tid)
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", path, err)
		}
		var err error
		h, err = netns.GetFromPath(path)
		return err
	})
	if err != nil {
		if h.IsOpen() {
			h.Close()
		}
		_ = deleteNamedIn(dir, name)
		return netns.None(), fmt.Errorf("%w: %s: %v", ErrCreate, name, err)
	}
	return h, nil
}

func deleteNamedIn(dir, name string) error {
	path := filepath.Join(dir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
