//go:build linux

package limits

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/proc"
)

// The activity's disk, in its workdir: an ext4 image the size of the
// agreement's storage, loop-mounted at DiskDirName. The payload's writable
// directories (volumes, /tmp, an image's writable layer) are directories on
// it, bind-mounted onto their usual places in the workdir, so the ExeUnit
// and the sandbox find them where they always were, and writing past the
// size fails with ENOSPC.
//
// Why a file system and not project quotas: quotas need the workdir's file
// system to be XFS, or ext4 mounted with prjquota, which a provider's host
// rarely is; a loop-mounted image needs only e2fsprogs and the loop driver,
// counts every byte the payload writes (files, directories, xattrs) and
// goes away whole at teardown.
const (
	DiskDirName   = "gvpn-disk"
	DiskImageName = "gvpn-disk.img"
)

// registryDir records each open disk (its workdir and bind mounts) under
// the group's name, so that Sweep can undo the mounts of a runtime that
// died. Variable for tests only.
var registryDir = "/run/gvpn-limits"

// minDiskBytes is the smallest disk: below it mkfs.ext4 leaves the payload
// next to nothing.
const minDiskBytes = 8 << 20

// Disk is one activity's size-limited file system. Its methods are safe
// for concurrent use; Close is idempotent.
type Disk struct {
	name    string
	workdir string
	dir     string // the mount point, workdir/DiskDirName
	image   string

	mu     sync.Mutex
	binds  []string // workdir-relative directories bind-mounted from the disk
	closed bool
}

// diskRecord is what the registry holds for a disk.
type diskRecord struct {
	Workdir string   `json:"workdir"`
	Binds   []string `json:"binds"`
}

// diskUnsupported says why this host cannot make disks, or "".
func diskUnsupported() string {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		return "mkfs.ext4 not found (install e2fsprogs)"
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return "no loop devices (/dev/loop-control: " + err.Error() + ")"
	}
	if !canMount() {
		return "the runtime has no CAP_SYS_ADMIN: it cannot mount a file system"
	}
	return ""
}

// canMount reports whether the process holds CAP_SYS_ADMIN (root, or a
// runtime with file capabilities).
func canMount() bool {
	eff, err := proc.EffectiveCaps()
	if err != nil {
		return os.Geteuid() == 0
	}
	return proc.HasCaps(eff, unix.CAP_SYS_ADMIN)
}

// ErrNoDisk wraps the reason OpenDisk cannot make a disk on this host (no
// e2fsprogs, no loop device, not root): the storage limit is then
// unenforced, which the caller may accept.
var ErrNoDisk = errors.New("limits: storage cannot be limited on this host")

// OpenDisk makes workdir's disk of size bytes (at least 8 MiB) and mounts
// it; what a runtime that died left under name is removed first. name is
// the activity's key for Sweep (the sandbox's name). An error wrapping
// ErrNoDisk means the host cannot do it at all.
func OpenDisk(name, workdir string, size int64) (*Disk, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, fmt.Errorf("limits: bad disk name %q", name)
	}
	if why := diskUnsupported(); why != "" {
		return nil, fmt.Errorf("%w: %s", ErrNoDisk, why)
	}
	workdir, err := filepath.Abs(workdir)
	if err != nil {
		return nil, fmt.Errorf("limits: workdir: %w", err)
	}
	if err := SweepDisk(name); err != nil {
		return nil, err
	}
	d := &Disk{name: name, workdir: workdir, dir: filepath.Join(workdir, DiskDirName), image: filepath.Join(workdir, DiskImageName)}
	if err := d.record(); err != nil {
		return nil, err
	}
	if err := d.create(max(size, minDiskBytes)); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Disk) create(size int64) error {
	_ = os.Remove(d.image)
	f, err := os.OpenFile(d.image, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("limits: disk image: %w", err)
	}
	defer f.Close()
	// Sparse: the workdir's file system holds only what is written.
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("limits: disk image: %w", err)
	}
	// No journal (the disk does not outlive a crash) and no blocks
	// reserved for root: the payload gets the whole size.
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
		"-E", "root_owner=0:0,nodiscard", d.image).CombinedOutput()
	if err != nil {
		return fmt.Errorf("limits: mkfs.ext4: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if err := os.Mkdir(d.dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("limits: disk mount point: %w", err)
	}
	dev, loop, err := attachLoop(f)
	if err != nil {
		return err
	}
	// The mount holds the loop device; with autoclear the kernel detaches
	// it once the file system is unmounted everywhere.
	defer loop.Close()
	if err := unix.Mount(dev, d.dir, "ext4", unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("limits: mount %s on %s: %w", dev, d.dir, err)
	}
	return nil
}

// attachLoop binds a free loop device to f, detached automatically at its
// last close, and returns its path and an open descriptor.
func attachLoop(f *os.File) (string, *os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", nil, fmt.Errorf("limits: %w", err)
	}
	defer ctl.Close()
	for try := 0; ; try++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("limits: no free loop device: %w", err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		if _, err := os.Stat(dev); errors.Is(err, os.ErrNotExist) {
			// A container's /dev may lack the node the kernel made.
			_ = unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n))))
		}
		loop, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return "", nil, fmt.Errorf("limits: %w", err)
		}
		cfg := unix.LoopConfig{Fd: uint32(f.Fd()), Info: unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}}
		err = unix.IoctlLoopConfigure(int(loop.Fd()), &cfg)
		if err == nil {
			return dev, loop, nil
		}
		loop.Close()
		// Another process took the device between GET_FREE and
		// CONFIGURE: ask again.
		if !errors.Is(err, unix.EBUSY) || try == 10 {
			return "", nil, fmt.Errorf("limits: configure %s: %w", dev, err)
		}
	}
}

func (d *Disk) record() error {
	if err := os.MkdirAll(registryDir, 0o700); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	b, _ := json.Marshal(diskRecord{Workdir: d.workdir, Binds: d.binds})
	p := filepath.Join(registryDir, d.name)
	if err := os.WriteFile(p+".tmp", b, 0o600); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	return os.Rename(p+".tmp", p)
}

// Dir is where the disk is mounted.
func (d *Disk) Dir() string { return d.dir }

// Bind puts the workdir's directory rel (which must exist) on the disk: a
// directory of the same owner and mode is made there, what the workdir's
// directory holds is copied into it (counted against the size: it is the
// payload's, e.g. files the ExeUnit put there before start), and it is
// bind-mounted over the workdir's directory, whose own content stays
// underneath, out of sight, until Close.
func (d *Disk) Bind(rel string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("limits: disk closed")
	}
	if !filepath.IsLocal(rel) {
		return fmt.Errorf("limits: %q is not a directory inside the workdir", rel)
	}
	host := filepath.Join(d.workdir, rel)
	var st unix.Stat_t
	if err := unix.Lstat(host, &st); err != nil {
		return fmt.Errorf("limits: %s: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("limits: %s is not a directory", rel)
	}
	on := filepath.Join(d.dir, rel)
	if err := os.MkdirAll(filepath.Dir(on), 0o755); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	if err := os.Mkdir(on, 0o700); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	if err := os.Chown(on, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	if err := unix.Chmod(on, st.Mode&0o7777); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	if err := copyTree(host, on); err != nil {
		return fmt.Errorf("limits: copy %s onto the disk: %w", rel, err)
	}
	// Recorded before it is mounted: a crash in between leaves a record
	// of a mount that is not there, which Sweep skips.
	d.binds = append(d.binds, rel)
	if err := d.record(); err != nil {
		return err
	}
	return bindHost(on, host)
}

// bindHost bind-mounts src onto dst in the runtime's mount namespace (the
// host's), nosuid and nodev. The host volumes' nosymfollow mounts
// (volume.List.MountHost) are stacked on these binds by the sandboxes, and
// taken off first.
func bindHost(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("limits: bind %s on %s: %w", src, dst, err)
	}
	if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		_ = unix.Unmount(dst, unix.MNT_DETACH)
		return fmt.Errorf("limits: remount %s nosuid,nodev: %w", dst, err)
	}
	return nil
}

// Used is how many bytes the disk's files take.
func (d *Disk) Used() (uint64, error) {
	var s unix.Statfs_t
	if err := unix.Statfs(d.dir, &s); err != nil {
		return 0, fmt.Errorf("limits: %w", err)
	}
	return (s.Blocks - s.Bfree) * uint64(s.Bsize), nil
}

// Close unmounts the binds and the disk (lazily: a process still holding
// a file keeps it alive until it lets go) and removes the image and its
// record. The payload's files on it are gone.
func (d *Disk) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return undo(d.name, diskRecord{Workdir: d.workdir, Binds: d.binds})
}

// undo unmounts what rec names, removes the image and the record.
func undo(name string, rec diskRecord) error {
	var errs []error
	for i := len(rec.Binds) - 1; i >= 0; i-- {
		errs = append(errs, unmount(filepath.Join(rec.Workdir, rec.Binds[i])))
	}
	dir := filepath.Join(rec.Workdir, DiskDirName)
	errs = append(errs, unmount(dir))
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("limits: %w", err))
	}
	if err := os.Remove(filepath.Join(rec.Workdir, DiskImageName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("limits: %w", err))
	}
	if err := os.Remove(filepath.Join(registryDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("limits: %w", err))
	}
	return errors.Join(errs...)
}

// unmount detaches every mount stacked at p (a volume's nosymfollow
// mount sits on the disk's bind); p not being a mount point (EINVAL) or
// not existing is fine.
func unmount(p string) error {
	for range maxStacked {
		err := unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("limits: unmount %s: %w", p, err)
		}
	}
	return fmt.Errorf("limits: unmount %s: still a mount point after %d unmounts", p, maxStacked)
}

// maxStacked bounds the mounts unmount takes off one path: gvpn stacks
// two at most (the disk's bind, the volume's nosymfollow mount).
const maxStacked = 8

// SweepDisk undoes the disk of a runtime that died, recorded under name: it
// unmounts its binds and the disk and removes the image. No record, no-op.
func SweepDisk(name string) error {
	b, err := os.ReadFile(filepath.Join(registryDir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	rec, err := parseRecord(b)
	if err != nil {
		// Not ours to interpret: drop the record, touch nothing.
		_ = os.Remove(filepath.Join(registryDir, name))
		return fmt.Errorf("limits: disk record %s: %w", name, err)
	}
	return undo(name, rec)
}

// parseRecord decodes a disk record: an absolute workdir and binds inside
// it, or an error. Sweep unmounts what it names, so nothing else passes.
func parseRecord(b []byte) (diskRecord, error) {
	var rec diskRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return diskRecord{}, err
	}
	if !filepath.IsAbs(rec.Workdir) || filepath.Clean(rec.Workdir) != rec.Workdir {
		return diskRecord{}, fmt.Errorf("workdir %q is not a clean absolute path", rec.Workdir)
	}
	for _, r := range rec.Binds {
		if !filepath.IsLocal(r) {
			return diskRecord{}, fmt.Errorf("bind %q is not inside the workdir", r)
		}
	}
	return rec, nil
}

// Sweep removes the group and the disk a runtime that died left under
// name. Call it only for a name whose runtime is gone.
func Sweep(name string) error {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return fmt.Errorf("limits: bad name %q", name)
	}
	return errors.Join(removeGroup(name), SweepDisk(name))
}

// copyTree copies what directory src holds into directory dst: files,
// directories and symbolic links with their owners and modes (symbolic
// links are copied, never followed); other kinds are skipped.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, e os.DirEntry, err error) error {
		if err != nil || p == src {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if err := os.Mkdir(to, 0o700); err != nil {
				return err
			}
		case unix.S_IFREG:
			if err := copyFile(p, to); err != nil {
				return err
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, to); err != nil {
				return err
			}
			return os.Lchown(to, int(st.Uid), int(st.Gid))
		default:
			return nil
		}
		if err := os.Lchown(to, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		return unix.Chmod(to, st.Mode&0o7777)
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

// DiskUsed is how many bytes are in use on workdir's disk, and whether it
// has one mounted: for the lab's status, from outside the runtime.
func DiskUsed(workdir string) (uint64, bool) {
	dir := filepath.Join(workdir, DiskDirName)
	var s, parent unix.Statfs_t
	if unix.Statfs(dir, &s) != nil || unix.Statfs(workdir, &parent) != nil || s.Fsid == parent.Fsid {
		return 0, false
	}
	return (s.Blocks - s.Bfree) * uint64(s.Bsize), true
}
