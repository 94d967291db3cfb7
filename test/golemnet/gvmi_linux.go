package golemnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/gvpn/gvpn/runtime/image"
)

// MakeGVMI writes to out what gvmkit-build makes of a Docker image, from
// the directory root instead: a squashfs of root (mksquashfs, from
// squashfs-tools) followed by the GVMI trailer holding cfg. The result is
// read back with image.Open, the runtime's own reader, so a package it
// would refuse is never left at out.
func MakeGVMI(root, out string, cfg image.Config) (*image.Image, error) {
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		return nil, errors.New("mksquashfs is not installed (apt-get install squashfs-tools, or make vm-deps)")
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	tmp := out + ".tmp"
	defer os.Remove(tmp)
	// Owners are kept as they are under root: they are the image's ids.
	if b, err := exec.Command("mksquashfs", root, tmp, "-noappend", "-quiet", "-no-progress").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mksquashfs %s: %v: %s", root, err, bytes.TrimSpace(b))
	}
	// The trailer goes after the squashfs in place: the image may be
	// large, and nothing of it needs reading back.
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.Write(image.AppendTrailer(nil, js))
	if err := errors.Join(err, f.Close()); err != nil {
		return nil, err
	}
	im, err := image.Open(tmp)
	if err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, out); err != nil {
		return nil, err
	}
	im.Path = out
	return im, nil
}

// BusyboxRoot fills dir with the smallest root a lab payload runs in:
// the host's static busybox as /bin/busybox with every applet linked
// beside it (sh, ip, wget, sha256sum, httpd ...), an /etc/passwd and
// /etc/group with root, and the directories a payload expects (/tmp
// sticky, /proc, /sys, /dev, /golem/work). It needs busybox-static.
func BusyboxRoot(dir string) error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return errors.New("busybox is not installed (apt-get install busybox-static)")
	}
	if out, _ := exec.Command("file", "-L", bb).Output(); len(out) > 0 && !bytes.Contains(out, []byte("statically linked")) {
		return fmt.Errorf("%s is not statically linked: an image has no libraries for it (apt-get install busybox-static)", bb)
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("%s --list: %w", bb, err)
	}
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "root", "golem/work"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), b, 0o755); err != nil {
		return err
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	for name, body := range map[string]string{"passwd": "root:x:0:0:root:/root:/bin/sh\n", "group": "root:x:0:\n"} {
		if err := os.WriteFile(filepath.Join(dir, "etc", name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}
