package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/image"
	"github.com/gvpn/gvpn/runtime/image/passwd"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
)

// imageDirName is the workdir directory of an extracted archive
// (imageDirName/rootfs). It is mode 0700: an image's setuid files must not
// be reachable by the host's users. It goes with the workdir.
const imageDirName = "gvpn-image"

// imageState is what deploy learnt of the task package, recorded for start.
type imageState struct {
	Format  image.Format `json:"format"`
	Package string       `json:"package"`
	// Size is the squashfs's length for the loop device (squashfs
	// formats): its bytes_used rounded up to 512 bytes.
	Size int64 `json:"size,omitempty"`
	// RootDir is the extracted archive (archive formats).
	RootDir string       `json:"root_dir,omitempty"`
	Config  image.Config `json:"config"`
	// User is the image's User resolved in the image for the netns
	// sandbox; nil when it could not be (no user namespace: the
	// --payload-user then applies).
	User *netns.User `json:"user,omitempty"`
}

// taskPackage is the package the ExeUnit passed (the last one), or "".
func taskPackage(o *Options) string {
	if len(o.TaskPackages) == 0 {
		return ""
	}
	return o.TaskPackages[len(o.TaskPackages)-1]
}

// errPublic is an error whose message is fit for the requestor (no host
// paths); deploy prints it in its JSON.
type errPublic struct {
	public string
	err    error
}

func (e *errPublic) Error() string { return e.err.Error() }
func (e *errPublic) Unwrap() error { return e.err }

// public is err's message without the host paths in it.
func public(err error, paths ...string) string {
	var p *errPublic
	if errors.As(err, &p) {
		return p.public
	}
	msg := err.Error()
	for _, path := range paths {
		if path != "" {
			msg = strings.ReplaceAll(msg, " "+path, "")
			msg = strings.ReplaceAll(msg, path, "<workdir>")
		}
	}
	return msg
}

// deployImage opens and checks the task package for the sandbox kind,
// extracts an archive for the netns sandbox and resolves the image's user.
// Nothing is left in the workdir when it fails.
func deployImage(o *Options, log *logrus.Entry) (*imageState, error) {
	pkg := taskPackage(o)
	k := o.chosenKind()
	if pkg == "" || k.image == imageIgnored {
		if pkg != "" {
			log.WithField("task_package", pkg).Info(k.name + " sandbox: the task package is the agent command's business")
		}
		return nil, nil
	}
	im, err := image.Open(pkg)
	if err != nil {
		return nil, err
	}
	st := &imageState{Format: im.Format, Package: pkg, Config: im.Config}
	if im.Format.Squashfs() {
		st.Size = loopSize(im)
	}
	if k.image == imageBoot {
		if !im.Format.Squashfs() {
			return nil, &errPublic{fmt.Sprintf("task package: the VM sandbox boots a GVMI or squashfs image, not a %s", im.Format),
				fmt.Errorf("task package %s: a %s; the VM sandbox boots a GVMI or squashfs", pkg, im.Format)}
		}
		// The agent resolves the image's user in the booted guest.
		return st, nil
	}
	if !im.Format.Squashfs() {
		dir := filepath.Join(o.Workdir, imageDirName)
		// A second deploy starts from scratch: the package may differ.
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return nil, err
		}
		st.RootDir = filepath.Join(dir, "rootfs")
		if err := im.Extract(st.RootDir, storageLimit(o)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if netns.CanMapIDRanges() && !o.PayloadRoot {
		u, err := resolveImageUser(st)
		if err != nil {
			if st.RootDir != "" {
				os.RemoveAll(filepath.Dir(st.RootDir))
			}
			return nil, err
		}
		if u.UID >= netns.IDRangeSize || u.GID >= netns.IDRangeSize {
			return nil, fmt.Errorf("task package: the image's user %q is %d:%d, beyond the ids 0-%d a sandbox maps", im.Config.User, u.UID, u.GID, netns.IDRangeSize-1)
		}
		st.User = &netns.User{UID: u.UID, GID: u.GID}
	} else if im.Config.User != "" {
		log.WithField("image_user", im.Config.User).Warn("the image's User is not honoured: this runtime cannot give payloads a user namespace (not root), so they run as --payload-user")
	}
	return st, nil
}

// storageLimit is the most bytes an extracted image may take: the
// agreement's --storage-gib, or no limit without one.
func storageLimit(o *Options) int64 {
	f, err := strconv.ParseFloat(o.StorageGiB, 64)
	if err != nil || f <= 0 {
		return 0
	}
	return int64(f * (1 << 30))
}

// loopSize is the length of the loop device over the package: the
// squashfs rounded up to 4 KiB. The kernel's squashfs reads its device in
// 1 KiB blocks or more, and a read past the end of a loop device is an I/O
// error, so bytes_used itself is too short; mksquashfs pads to 4 KiB with
// zeros for that reason, and a GVMI's config comes after the padding. For
// an unpadded squashfs the device takes what the file has, in 512-byte
// units (the loop device's), a trailer's bytes included: squashfs never
// reads them.
func loopSize(im *image.Image) int64 {
	n := (im.SquashfsSize + 4095) &^ 4095
	if fi, err := os.Stat(im.Path); err == nil && n > fi.Size() {
		n = fi.Size() &^ 511
		if n < im.SquashfsSize {
			n = (im.SquashfsSize + 511) &^ 511
		}
	}
	return n
}

// resolveImageUser resolves the image's User in its own /etc/passwd and
// /etc/group: those of the extracted tree, or, for a squashfs, the two
// files unsquashfs copies out (a numeric user needs neither).
func resolveImageUser(st *imageState) (passwd.User, error) {
	spec := st.Config.User
	var root fs.FS
	switch {
	case st.RootDir != "":
		r, err := os.OpenRoot(st.RootDir)
		if err != nil {
			return passwd.User{}, err
		}
		defer r.Close()
		root = r.FS()
	case numericUser(spec):
		root = emptyFS{}
	default:
		dir, err := os.MkdirTemp("", "gvpn-passwd-")
		if err != nil {
			return passwd.User{}, err
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "root")
		cmd := exec.Command("unsquashfs", "-no-progress", "-no-xattrs", "-d", out, st.Package, "etc/passwd", "etc/group")
		if b, err := cmd.CombinedOutput(); err != nil {
			return passwd.User{}, &errPublic{fmt.Sprintf("task package: the image's user %q cannot be looked up in the image", spec),
				fmt.Errorf("task package %s: user %q: unsquashfs (squashfs-tools) reads the image's /etc/passwd: %v: %s", st.Package, spec, err, strings.TrimSpace(string(b)))}
		}
		r, err := os.OpenRoot(out)
		if err != nil {
			return passwd.User{}, err
		}
		defer r.Close()
		root = r.FS()
	}
	u, err := passwd.Resolve(root, spec)
	if err != nil {
		return passwd.User{}, fmt.Errorf("task package: %w", err)
	}
	return u, nil
}

// numericUser reports whether spec is "", "uid" or "uid:gid".
func numericUser(spec string) bool {
	for _, part := range strings.SplitN(spec, ":", 2) {
		for _, c := range part {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	return true
}

// emptyFS is an image without files, for a numeric user.
type emptyFS struct{}

func (emptyFS) Open(name string) (fs.File, error) {
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

// rootFS is the netns sandbox's root file system for the recorded image.
func (st *imageState) rootFS() *netns.RootFS {
	if st == nil {
		return nil
	}
	if st.RootDir != "" {
		return &netns.RootFS{Dir: st.RootDir}
	}
	return &netns.RootFS{Image: st.Package, Size: st.Size}
}
