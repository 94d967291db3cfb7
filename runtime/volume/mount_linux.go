package volume

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The payload writes into its host volumes' directories, so it can plant
// symbolic links there (x -> /etc/shadow, d -> /etc). The ExeUnit opens
// <workdir>/<Name>/... by path, as the provider's user, for `container:`
// transfers: through such a link a download would read a host file and an
// upload would write one. MountHost therefore binds every host volume's
// directory onto itself, in the host's mount namespace, with nosymfollow:
// the kernel then refuses to follow any link on that mount (open fails
// with ELOOP), while readlink, lstat and unlink still work. The payload's
// own view of the volume is a bind mount that clears the flag again, so
// links work for the payload inside its sandbox.
//
// All host-side volume mounting is here, in one place: a size-limited
// backing file system for a volume (the resources issue) mounts in
// mountOne, with its flags and the record below.

// ErrNoSymfollow is returned when the kernel does not honour nosymfollow
// (it is new in Linux 5.10): the volumes could not be made safe for the
// ExeUnit's transfers.
var ErrNoSymfollow = errors.New("the kernel does not support nosymfollow mounts (Linux 5.10 or newer is needed)")

// stNoSymfollow is statfs's ST_NOSYMFOLLOW flag (not in x/sys/unix).
const stNoSymfollow = 0x2000

// MountsRecord is the file name, in a sandbox's run directory, that lists
// one mount point per line, so that a sweep after a crash (SIGKILL) can
// unmount what the dead runtime mounted (UnmountRecorded).
const MountsRecord = "volume-mounts"

// Mounts are the host-side mounts MountHost made for one activity.
type Mounts struct {
	record string
	paths  []string
}

// MountHost binds the directory of every host volume of l in workdir onto
// itself with nosymfollow, nosuid and nodev, appending each mount point to
// the file record before it mounts it. On error every mount it made is
// undone and the error names the volume; when the kernel ignores
// nosymfollow the error wraps ErrNoSymfollow. The directories must exist
// (List.Prepare).
func (l List) MountHost(workdir, record string) (*Mounts, error) {
	m := &Mounts{record: record}
	for _, v := range l {
		if v.Kind != Host {
			continue
		}
		dir := filepath.Join(workdir, v.Name)
		if err := m.add(dir); err != nil {
			return nil, errors.Join(fmt.Errorf("volume %s: %w", v.Path, err), m.Unmount())
		}
	}
	return m, nil
}

func (m *Mounts) add(dir string) error {
	f, err := os.OpenFile(m.record, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("record the mount: %w", err)
	}
	_, err = fmt.Fprintln(f, dir)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("record the mount: %w", err)
	}
	if err := mountOne(dir); err != nil {
		return err
	}
	m.paths = append(m.paths, dir)
	return nil
}

// mountOne binds dir onto itself and sets the flags on that mount only. A
// kernel older than 5.10 ignores the unknown MS_NOSYMFOLLOW bit silently,
// so the result is read back with statfs.
func mountOne(dir string) error {
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s onto itself: %w", dir, err)
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_NOSYMFOLLOW | unix.MS_NOSUID | unix.MS_NODEV)
	if err := unix.Mount("", dir, "", flags, ""); err != nil {
		unmountOne(dir)
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("%w: %v", ErrNoSymfollow, err)
		}
		return fmt.Errorf("nosymfollow on %s: %w", dir, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		unmountOne(dir)
		return err
	}
	if st.Flags&stNoSymfollow == 0 {
		unmountOne(dir)
		return ErrNoSymfollow
	}
	return nil
}

// unmountOne detaches the mount at dir (lazily: an ExeUnit transfer may
// still hold a file open in it), never following a link at dir itself.
// Nothing mounted there (EINVAL) or no such path is not an error.
func unmountOne(dir string) error {
	err := unix.Unmount(dir, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", dir, err)
}

// Unmount undoes every mount of m, last first, and removes the record.
// Calling it again, or on nil, does nothing.
func (m *Mounts) Unmount() error {
	if m == nil {
		return nil
	}
	var errs []error
	for i := len(m.paths) - 1; i >= 0; i-- {
		errs = append(errs, unmountOne(m.paths[i]))
	}
	m.paths = nil
	if err := os.Remove(m.record); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// UnmountRecorded unmounts every mount point listed in record (written by
// MountHost of a runtime that died) and removes it; a missing record is
// nothing to do. Each listed path is unmounted once per line, as it was
// mounted.
func UnmountRecorded(record string) error {
	f, err := os.Open(record)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var paths []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p := strings.TrimSpace(sc.Text()); filepath.IsAbs(p) {
			paths = append(paths, p)
		}
	}
	f.Close()
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", record, err)
	}
	m := &Mounts{record: record, paths: paths}
	return m.Unmount()
}

// CheckNoSymfollow tells whether this host can make volumes safe for the
// ExeUnit's transfers: it mounts dir (an empty directory) as MountHost
// would, and unmounts it. gvpn-runtime test runs it.
func CheckNoSymfollow(dir string) error {
	if err := mountOne(dir); err != nil {
		return err
	}
	return unmountOne(dir)
}
