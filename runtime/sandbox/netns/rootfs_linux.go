//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/loopdev"
)

// usernsFD is the descriptor on which the holder finds the user namespace
// whose mapping it idmaps the image with (holderSpec.IDMap).
const usernsFD = 4

// The holder's scratch mount points in /run/gvpn/NAME (mounted on only in
// its own mount namespace).
const (
	imageMount = "image" // the squashfs
	lowerMount = "lower" // the image, idmapped: the overlay's lower layer
)

// mountImage mounts spec.RootFS at spec.Root: the image (a squashfs
// through a read-only autoclear loop device, or a directory) read-only,
// nosuid and nodev, shifted into the activity's id range when spec.IDMap,
// under an overlay whose upper and work directories are in the layer
// directory of the workdir. Nothing of it is visible outside the
// holder's mount namespace; the loop device goes when that namespace does.
//
// A kernel that cannot idmap the image's file system (before Linux 5.12,
// or a file system without the support) gets the image unshifted: its
// files then belong to ids the payload's namespace does not map (shown as
// nobody), so an image that expects root cannot change them. mountImage
// then reports shifted false, and the runtime logs it.
func mountImage(spec holderSpec) (shifted bool, err error) {
	src := spec.RootFS.Dir
	if spec.RootFS.Image != "" {
		src = filepath.Join(spec.Stage, imageMount)
		f, err := os.Open(spec.RootFS.Image)
		if err != nil {
			return false, fmt.Errorf("image: %w", err)
		}
		size := sectorEnd(spec.RootFS.Size)
		if size == 0 {
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return false, fmt.Errorf("image: %w", err)
			}
			size = fi.Size() &^ 511
		}
		dev, err := loopdev.Attach(f, size)
		f.Close()
		if err != nil {
			return false, fmt.Errorf("image: %w", err)
		}
		err = unix.Mount(dev.Path, src, "squashfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, "")
		dev.Close() // the mount holds the device now; autoclear frees it after
		if err != nil {
			return false, fmt.Errorf("image: mount the squashfs (is it one?): %w", err)
		}
	}
	tree, err := unix.OpenTree(-1, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return false, fmt.Errorf("image: clone %s: %w", src, err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if spec.IDMap {
		// The image's uid 0 becomes the range's first id, which is root
		// in the payload's user namespaces: the image's files belong to
		// its users, not to the overflow id, and its root may change
		// them (in the writable layer).
		attr.Attr_set |= unix.MOUNT_ATTR_IDMAP
		attr.Userns_fd = usernsFD
	}
	err = unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr)
	shifted = spec.IDMap && err == nil
	if err != nil && spec.IDMap {
		attr.Attr_set &^= unix.MOUNT_ATTR_IDMAP
		attr.Userns_fd = 0
		err = unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr)
	}
	if err != nil {
		return false, fmt.Errorf("image: read-only mount: %w", err)
	}
	lower := filepath.Join(spec.Stage, lowerMount)
	if err := unix.MoveMount(tree, "", -1, lower, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return false, fmt.Errorf("image: attach: %w", err)
	}
	upper, work := filepath.Join(spec.Layer, "upper"), filepath.Join(spec.Layer, "work")
	for _, p := range []string{lower, upper, work} {
		if strings.ContainsAny(p, `,:\`) {
			return false, fmt.Errorf("image: the path %q contains one of , : \\ (overlayfs cannot take it)", p)
		}
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", spec.Root, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return false, fmt.Errorf("image: overlay with the writable layer: %w", err)
	}
	// The directories the init mounts its own file systems on must be
	// plain directories of the root, never the image's links (which
	// would lead the init's host paths elsewhere).
	for _, name := range []string{"proc", "sys", "dev", "tmp", "run"} {
		if err := plainDir(spec, name); err != nil {
			return false, fmt.Errorf("image: /%s: %w", name, err)
		}
	}
	return shifted, nil
}

// plainDir makes root/name a directory: what the image has there that is
// not one (a link, a file) is replaced in the writable layer.
func plainDir(spec holderSpec, name string) error {
	p := filepath.Join(spec.Root, name)
	fi, err := os.Lstat(p)
	if err == nil && fi.IsDir() {
		return nil
	}
	if err == nil {
		if err := os.Remove(p); err != nil {
			return err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		return err
	}
	return os.Lchown(p, int(spec.RootUID), int(spec.RootGID))
}

// inRoot returns an O_PATH descriptor of root/rel with every symbolic
// link resolved inside root (an image's absolute links point into the
// image, never at the host), creating what is missing: directories, and,
// when file, an empty file as the last element; a link that leads nowhere
// is replaced by what is needed. What it creates (in the writable layer)
// belongs to uid:gid. The caller closes the descriptor.
func inRoot(root, rel string, file bool, uid, gid int) (int, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(rfd)
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	open := func(p string) (int, error) { return unix.Openat2(rfd, p, &how) }
	rel = strings.TrimPrefix(filepath.Clean("/"+rel), "/")
	if fd, err := open(rel); err == nil || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	parts := strings.Split(rel, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fd, err := open(p)
		if err == nil {
			unix.Close(fd)
			continue
		}
		if !errors.Is(err, unix.ENOENT) {
			return -1, err
		}
		parent := "."
		if i > 0 {
			parent = strings.Join(parts[:i], "/")
		}
		pfd, err := unix.Openat2(rfd, parent, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: how.Resolve})
		if err != nil {
			return -1, err
		}
		last := i == len(parts)-1
		if last && file {
			create := func() error {
				f, err := unix.Openat(pfd, parts[i], unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				if err == nil {
					unix.Close(f)
				}
				return err
			}
			// A link to nothing in the image (/etc/hosts ->
			// /run/...) gives way to a file in the writable layer.
			if err = create(); errors.Is(err, unix.EEXIST) {
				if err = unix.Unlinkat(pfd, parts[i], 0); err == nil {
					err = create()
				}
			}
		} else {
			// Likewise a link to nothing gives way to a directory.
			if err = unix.Mkdirat(pfd, parts[i], 0o755); errors.Is(err, unix.EEXIST) {
				var st unix.Stat_t
				if unix.Fstatat(pfd, parts[i], &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
					if err = unix.Unlinkat(pfd, parts[i], 0); err == nil {
						err = unix.Mkdirat(pfd, parts[i], 0o755)
					}
				}
			}
		}
		if err == nil {
			err = unix.Fchownat(pfd, parts[i], uid, gid, unix.AT_SYMLINK_NOFOLLOW)
		}
		unix.Close(pfd)
		if err != nil {
			return -1, err
		}
	}
	return open(rel)
}

// fdPath names an O_PATH descriptor for mount(2).
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// bindInRoot bind-mounts the host's src on root/rel (created when missing,
// resolved inside root), nosuid and nodev, read-only when asked.
func bindInRoot(src, root, rel string, file, ro bool, uid, gid int) error {
	target, err := inRoot(root, rel, file, uid, gid)
	if err != nil {
		return fmt.Errorf("mount point %s: %w", rel, err)
	}
	defer unix.Close(target)
	tree, err := unix.OpenTree(-1, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if ro {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	if err := unix.MoveMount(tree, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, rel, err)
	}
	return nil
}
