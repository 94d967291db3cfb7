package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// Format is the kind of a task package.
type Format string

const (
	FormatGVMI          Format = "gvmi"           // squashfs + container config trailer
	FormatSquashfs      Format = "squashfs"       // a bare squashfs, no settings
	FormatDockerArchive Format = "docker-archive" // `docker save` output
	FormatOCI           Format = "oci-archive"    // an OCI image layout in a tar
)

// Squashfs reports whether the format is a squashfs a sandbox mounts
// (Image.SquashfsSize bytes from the start of Image.Path).
func (f Format) Squashfs() bool { return f == FormatGVMI || f == FormatSquashfs }

// Config is the part of Docker's container config that gvpn honours. The
// JSON names are Docker's (and gvmkit-build's).
type Config struct {
	// Env is "KEY=value" entries every payload process starts with; a
	// RunProcess's own entries override the same keys.
	Env []string `json:"Env,omitempty"`
	// Entrypoint and Cmd are recorded for the logs; the ExeUnit's Run
	// commands say what to run.
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	// WorkingDir is the directory processes start in when a RunProcess
	// gives none; "" leaves the sandbox's default.
	WorkingDir string `json:"WorkingDir,omitempty"`
	// User is who processes run as inside the image: "name", "uid",
	// "uid:gid", "name:group"; "" means root (uid 0), as in Docker.
	User string `json:"User,omitempty"`
	// Volumes are the directories the image declares as volumes: deploy
	// lists them beside /golem/work.
	Volumes map[string]struct{} `json:"Volumes,omitempty"`
}

// VolumePaths returns the declared volumes, sorted.
func (c Config) VolumePaths() []string {
	out := make([]string, 0, len(c.Volumes))
	for p := range c.Volumes {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// maxConfig bounds a container config: real ones are a few KiB.
const maxConfig = 1 << 20

// parseConfig decodes and checks a container config; what names the source
// in errors ("GVMI config", "image config").
func parseConfig(what string, b []byte) (Config, error) {
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("%s is not valid JSON: %v", what, err)
	}
	if err := c.check(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", what, err)
	}
	return c, nil
}

// check applies the rules a sandbox relies on: env entries are KEY=value
// without NUL, paths absolute and clean.
func (c Config) check() error {
	for i, kv := range c.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsRune(kv, 0) {
			return fmt.Errorf("Env[%d] %q is not KEY=value", i, kv)
		}
	}
	if c.WorkingDir != "" && (!path.IsAbs(c.WorkingDir) || strings.ContainsRune(c.WorkingDir, 0)) {
		return fmt.Errorf("WorkingDir %q is not an absolute path", c.WorkingDir)
	}
	if strings.ContainsAny(c.User, "\x00\n") {
		return fmt.Errorf("User %q contains NUL or a newline", c.User)
	}
	for p := range c.Volumes {
		if !path.IsAbs(p) || strings.ContainsRune(p, 0) {
			return fmt.Errorf("Volumes: %q is not an absolute path", p)
		}
	}
	return nil
}

// Image is an opened, checked task package.
type Image struct {
	// Path is the package file.
	Path   string
	Format Format
	// SquashfsSize is, for FormatGVMI and FormatSquashfs, the length of
	// the squashfs at the start of Path (its superblock's bytes_used); a
	// loop device of that size over Path mounts it.
	SquashfsSize int64
	// Config holds the image's settings (zero for FormatSquashfs).
	Config Config

	archive archive // FormatDockerArchive and FormatOCI
}

// ErrUnknownFormat is wrapped by Open's error for a file that is none of
// the formats.
var ErrUnknownFormat = errors.New("not a GVMI, squashfs, OCI archive or docker save archive")

// Open detects the format of the task package at p and checks it. Errors
// start with "task package P:" and say what is wrong. An archive's layers
// are checked only by Extract.
func Open(p string) (*Image, error) {
	im, err := open(p)
	if err != nil {
		return nil, fmt.Errorf("task package %s: %w", p, err)
	}
	return im, nil
}

func open(p string) (*Image, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return nil, fmt.Errorf("%w (%d bytes)", ErrUnknownFormat, fi.Size())
	}
	if string(magic[:]) == squashfsMagic {
		return openSquashfs(p, f, fi.Size())
	}
	return openArchive(p)
}

// openSquashfs reads a bare squashfs or a GVMI.
func openSquashfs(p string, r io.ReaderAt, size int64) (*Image, error) {
	sb, err := ReadSuperblock(r, size)
	if err != nil {
		return nil, err
	}
	im := &Image{Path: p, Format: FormatSquashfs, SquashfsSize: sb.BytesUsed}
	plain, err := zeroTail(r, sb.BytesUsed, size)
	if err != nil {
		return nil, err
	}
	if plain {
		return im, nil
	}
	t, err := ReadTrailer(r, size)
	if err != nil {
		return nil, err
	}
	if t.SquashfsEnd < sb.BytesUsed {
		return nil, fmt.Errorf("GVMI config (at byte %d) overlaps the squashfs (%d bytes)", t.SquashfsEnd, sb.BytesUsed)
	}
	im.Format = FormatGVMI
	if im.Config, err = parseConfig("GVMI config", t.JSON); err != nil {
		return nil, err
	}
	return im, nil
}

// zeroTail reports whether [from, size) is all zeros: a squashfs's padding
// and nothing after it.
func zeroTail(r io.ReaderAt, from, size int64) (bool, error) {
	const maxPad = 64 << 10
	if size-from > maxPad {
		return false, nil
	}
	buf := make([]byte, size-from)
	if _, err := r.ReadAt(buf, from); err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	for _, b := range buf {
		if b != 0 {
			return false, nil
		}
	}
	return true, nil
}
