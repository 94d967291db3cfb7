package privtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// VMDirEnv names the directory that holds the payload VM's guest kernel
// (vmlinuz) and initramfs (initrd.img), when it is not where VMGuest
// looks by default.
const VMDirEnv = "GVPN_VM_DIR"

// VMGuest skips t unless this machine can boot the payload VM (root, QEMU,
// a guest image) and returns the guest's kernel and initramfs. The image is
// in $GVPN_VM_DIR, else in vm/ beside prebuilt binaries (BinDirEnv), else
// in the repository's bin/vm (make vm-image), seen from a test package two
// levels below the repository's root.
func VMGuest(t testing.TB) (kernel, initrd string) {
	t.Helper()
	RequireRoot(t)
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("skipped: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86, or make vm-deps)")
	}
	dir, _ := filepath.Abs(VMDir())
	kernel, initrd = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img")
	for _, f := range []string{kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("skipped: no guest image (%v): run make vm-image", err)
		}
	}
	return kernel, initrd
}

// VMDir returns the directory VMGuest takes the guest image from (and
// where a test may cache what it builds beside it).
func VMDir() string {
	if d := os.Getenv(VMDirEnv); d != "" {
		return d
	}
	if d := os.Getenv(BinDirEnv); d != "" {
		return filepath.Join(d, "vm")
	}
	return filepath.Join("..", "..", "bin", "vm")
}
