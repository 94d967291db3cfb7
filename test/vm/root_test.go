package vm

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// debianPackages are added to the minbase root: the payload's network tools.
const debianPackages = "iproute2,iputils-ping,curl"

// debianRoot returns a squashfs image of a Debian bookworm minbase root with
// debianPackages, built with debootstrap and mksquashfs on first use and
// cached as debian-root.squashfs beside the guest image.
func debianRoot(t *testing.T) string {
	t.Helper()
	for _, c := range []string{"debootstrap", "mksquashfs"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is not installed (make vm-deps installs debootstrap and squashfs-tools)", c)
		}
	}
	dir, _ := filepath.Abs(guestDir())
	img := filepath.Join(dir, "debian-root.squashfs")
	if _, err := os.Stat(img); err == nil {
		return img
	}
	tmp, err := os.MkdirTemp(dir, "debian-root-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	rootfs := filepath.Join(tmp, "root")
	t.Logf("building %s with debootstrap (once; cached)", img)
	run := func(name string, args ...string) {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, tail(out))
		}
	}
	run("debootstrap", "--variant=minbase", "--include="+debianPackages, "bookworm", rootfs, "http://deb.debian.org/debian")
	// Leave out what a payload root does not need, to keep the image small.
	for _, d := range []string{"var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"} {
		os.RemoveAll(filepath.Join(rootfs, d))
	}
	run("mksquashfs", rootfs, img+".tmp", "-noappend", "-comp", "xz", "-quiet")
	if err := os.Rename(img+".tmp", img); err != nil {
		t.Fatal(err)
	}
	return img
}

func tail(b []byte) []byte {
	if len(b) > 4000 {
		return b[len(b)-4000:]
	}
	return b
}
