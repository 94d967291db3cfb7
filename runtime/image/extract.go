package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// ErrNotArchive is returned by Extract for a squashfs image, which a
// sandbox mounts instead.
var ErrNotArchive = errors.New("not an archive: a squashfs image is mounted, not extracted")

// Extract flattens the archive's layers (whiteouts applied) into dir, a
// new or empty directory, as the payload's root file system. It is safe
// on a hostile archive: every file is created through an os.Root of dir,
// so no name or symbolic link leads out of it; hard links must point
// inside the tree; device nodes, FIFOs and sockets are skipped. Modes are
// kept (setuid bits included: dir's parent must keep other users out), and
// so are owners when the runtime is root. A corrupt or truncated layer is
// an error, and so are files of more than maxBytes in all (0: no limit), so
// that a small archive cannot fill the provider's disk; dir is then left
// for the caller to remove.
func (im *Image) Extract(dir string, maxBytes int64) error {
	if im.archive == nil {
		return ErrNotArchive
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	rc := mutate.Extract(im.archive.image())
	defer rc.Close()
	err = untar(root, rc, os.Geteuid() == 0, maxBytes)
	if err == nil {
		// mutate.Extract ends its tar before it reports an error (a
		// corrupt or unsafe layer): the error comes after the end marker.
		_, err = io.Copy(io.Discard, rc)
	}
	if err != nil {
		return fmt.Errorf("task package %s: layers: %w", im.Path, err)
	}
	return nil
}

// untar writes the tar r into root. Directories are created writable and
// get their own mode (and owner) at the end, deepest first, so that a
// read-only directory can still be filled.
func untar(root *os.Root, r io.Reader, chown bool, maxBytes int64) error {
	type meta struct {
		name     string
		mode     fs.FileMode
		uid, gid int
	}
	var dirs []meta
	var links []*tar.Header
	var written int64
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		name, ok := cleanName(h.Name)
		if !ok {
			return fmt.Errorf("entry %q leaves the image's root", h.Name)
		}
		if name == "." {
			if h.Typeflag == tar.TypeDir {
				dirs = append(dirs, meta{".", fs.FileMode(h.Mode) & fs.ModePerm, h.Uid, h.Gid})
			}
			continue
		}
		if dir := path.Dir(name); dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if fi, err := root.Lstat(name); err == nil && !fi.IsDir() {
				if err := root.Remove(name); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			if err := root.Mkdir(name, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s: %w", name, err)
			}
			dirs = append(dirs, meta{name, tarMode(h), h.Uid, h.Gid})
			continue
		case tar.TypeReg:
			if written += h.Size; maxBytes > 0 && written > maxBytes {
				return fmt.Errorf("the image's files are over the %d-byte limit", maxBytes)
			}
			if err := replace(root, name); err != nil {
				return err
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			_, err = io.CopyN(f, tr, h.Size)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if chown {
				// Before the mode: chown clears setuid and setgid.
				if err := root.Lchown(name, h.Uid, h.Gid); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			if err := root.Chmod(name, tarMode(h)); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			continue
		case tar.TypeSymlink:
			if err := replace(root, name); err != nil {
				return err
			}
			if err := root.Symlink(h.Linkname, name); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		case tar.TypeLink:
			links = append(links, h)
			continue
		default:
			// Device nodes, FIFOs, sockets: a sandbox provides its own
			// /dev; nothing else of an image needs them.
			continue
		}
		if chown {
			if err := root.Lchown(name, h.Uid, h.Gid); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	for _, h := range links {
		name, _ := cleanName(h.Name)
		target, ok := cleanName(h.Linkname)
		if !ok || target == "." {
			return fmt.Errorf("hard link %q → %q leaves the image's root", h.Name, h.Linkname)
		}
		if fi, err := root.Lstat(target); err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("hard link %q → %q: the target is not a regular file of the image", h.Name, h.Linkname)
		}
		if err := replace(root, name); err != nil {
			return err
		}
		if err := root.Link(target, name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i].name, "/") > strings.Count(dirs[j].name, "/") })
	for _, d := range dirs {
		if chown {
			if err := root.Lchown(d.name, d.uid, d.gid); err != nil {
				return fmt.Errorf("%s: %w", d.name, err)
			}
		}
		if err := root.Chmod(d.name, d.mode); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
	}
	return nil
}

// tarMode is an entry's permission bits with setuid, setgid and sticky.
func tarMode(h *tar.Header) fs.FileMode {
	m := fs.FileMode(h.Mode) & fs.ModePerm
	if h.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if h.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if h.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// cleanName makes a tar name relative to the root ("./a/../b" → "b");
// false when it climbs out.
func cleanName(n string) (string, bool) {
	c := path.Clean("/" + n)
	if strings.Contains(n, "\x00") {
		return "", false
	}
	// Clean of a rooted path never keeps "..", so "../x" became "/x":
	// refuse names that try, rather than quietly moving them.
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return "", false
		}
	}
	if c == "/" {
		return ".", true
	}
	return c[1:], true
}

// replace removes what is at name unless it is a directory, so that a later
// entry for the same path wins.
func replace(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if err != nil {
		return nil
	}
	if fi.IsDir() {
		return fmt.Errorf("%s: a file over a directory", name)
	}
	if err := root.Remove(name); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
