package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Mode bits of cpio "newc" entries (the kernel's initramfs format).
const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeChar    = 0o020000
)

// entry is one file of the initramfs.
type entry struct {
	path  string // without a leading slash
	mode  uint32 // type and permission bits
	data  []byte // file contents or symlink target
	major uint32 // character devices
	minor uint32
}

// archive is an initramfs under construction. Its bytes depend only on its
// entries: they are written sorted, with owner root and time zero, so the
// same inputs always give the same image.
type archive struct{ entries map[string]entry }

func newArchive() *archive { return &archive{entries: map[string]entry{}} }

func (a *archive) dir(path string) {
	path = strings.Trim(path, "/")
	for p := path; p != "" && p != "."; p = parent(p) {
		if _, ok := a.entries[p]; !ok {
			a.entries[p] = entry{path: p, mode: modeDir | 0o755}
		}
	}
}

func (a *archive) file(path string, perm uint32, data []byte) {
	path = strings.Trim(path, "/")
	a.dir(parent(path))
	a.entries[path] = entry{path: path, mode: modeFile | perm, data: data}
}

func (a *archive) symlink(path, target string) {
	path = strings.Trim(path, "/")
	a.dir(parent(path))
	a.entries[path] = entry{path: path, mode: modeSymlink | 0o777, data: []byte(target)}
}

func (a *archive) charDev(path string, perm, major, minor uint32) {
	path = strings.Trim(path, "/")
	a.dir(parent(path))
	a.entries[path] = entry{path: path, mode: modeChar | perm, major: major, minor: minor}
}

func parent(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

// writeTo writes the archive in the newc format, parents before children.
func (a *archive) writeTo(w io.Writer) error {
	paths := make([]string, 0, len(a.entries))
	for p := range a.entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	ino := uint32(1)
	for _, p := range paths {
		if err := writeEntry(w, a.entries[p], ino); err != nil {
			return err
		}
		ino++
	}
	return writeEntry(w, entry{path: "TRAILER!!!"}, 0)
}

func writeEntry(w io.Writer, e entry, ino uint32) error {
	nlink := uint32(1)
	if e.mode&0o170000 == modeDir {
		nlink = 2
	}
	name := e.path + "\x00"
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.major, e.minor, len(name), 0)
	buf := append([]byte(hdr), name...)
	buf = pad4(buf)
	buf = append(buf, e.data...)
	buf = pad4(buf)
	_, err := w.Write(buf)
	return err
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
