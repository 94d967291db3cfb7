package vsock

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVirtioSerialPortLookup: without udev's links, a port is found by its
// name in sysfs; a missing port is an error that says what to check. (The
// port itself exists only inside a QEMU guest: test/vm dials real ones.)
func TestVirtioSerialPortLookup(t *testing.T) {
	dir := t.TempDir()
	oldLink, oldClass, oldDev := portLinkDir, portClassDir, portDevDir
	t.Cleanup(func() { portLinkDir, portClassDir, portDevDir = oldLink, oldClass, oldDev })
	portLinkDir = filepath.Join(dir, "links")
	portClassDir = filepath.Join(dir, "class")
	portDevDir = filepath.Join(dir, "dev")

	if _, err := findPort("gvpn.bridge"); err == nil || !strings.Contains(err.Error(), "no virtio-serial ports") {
		t.Fatalf("no ports at all: %v", err)
	}
	for name, port := range map[string]string{"vport0p1": "gvpn.bridge", "vport0p2": "gvpn.bridge.ctl"} {
		if err := os.MkdirAll(filepath.Join(portClassDir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(portClassDir, name, "name"), []byte(port+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := findPort("gvpn.bridge.ctl")
	if err != nil || got != filepath.Join(portDevDir, "vport0p2") {
		t.Fatalf("findPort(gvpn.bridge.ctl) = %q, %v", got, err)
	}
	if _, err := findPort("other"); err == nil || !strings.Contains(err.Error(), "among the 2 ports") {
		t.Fatalf("unknown port: %v", err)
	}
	// udev's link wins.
	if err := os.MkdirAll(portLinkDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(portLinkDir, "gvpn.bridge"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := findPort("gvpn.bridge"); err != nil || got != filepath.Join(portLinkDir, "gvpn.bridge") {
		t.Fatalf("findPort with a udev link = %q, %v", got, err)
	}
	// A virtio-serial address is dialled, never listened on.
	a, _ := ParseAddr("virtio-serial://gvpn.bridge")
	if _, err := Listen(a); err == nil || !strings.Contains(err.Error(), "QEMU's chardev") {
		t.Fatalf("Listen(virtio-serial): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := Dial(ctx, Addr{Scheme: SchemeVirtioSerial, Name: "absent"}); err == nil {
		t.Fatal("Dial of an absent port succeeded")
	}
}
