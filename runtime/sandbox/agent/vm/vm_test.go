package vm

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestCheckRoot(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sb := make([]byte, 96)
	binary.LittleEndian.PutUint32(sb[0:], squashfsMagic)
	binary.LittleEndian.PutUint16(sb[28:], 4)
	if err := CheckRoot(write("good.squashfs", sb)); err != nil {
		t.Fatalf("a squashfs 4 superblock: %v", err)
	}
	v3 := slices.Clone(sb)
	binary.LittleEndian.PutUint16(v3[28:], 3)
	for _, tc := range []struct{ path, want string }{
		{write("pkg.tar.gz", []byte("\x1f\x8b\x08\x00 not a squashfs image, but long enough to have a superblock")), "is not a squashfs image (it starts with 1f 8b 08 00"},
		{write("short", []byte("hsqs")), "only 4 bytes"},
		{write("v3.squashfs", v3), "squashfs version 3"},
		{dir, "not a regular file"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		if err := CheckRoot(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckRoot(%s) = %v, want an error with %q", filepath.Base(tc.path), err, tc.want)
		}
	}
}

func TestQEMUArgs(t *testing.T) {
	cfg := Config{Name: "gv-1", Kernel: "/k", Initrd: "/i", MemoryMiB: 256, CPUs: 2, Root: "/pkgs/a,b.squashfs",
		Hostname: "node-a", Volumes: []Volume{{Host: "/w/vol-1", Guest: "/golem/work"}}}
	b, err := serialBridge("/run/gvpn/gv-1")
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(qemuArgs(cfg, b, "tcg"), " ")
	for _, want := range []string{
		"-accel tcg", "-m 256", "-smp 2", "-no-reboot", "-kernel /k", "-initrd /i",
		"socket,id=gvpndata,reconnect=1,path=/run/gvpn/gv-1/bridge.sock ",
		"socket,id=gvpnctl,reconnect=1,path=/run/gvpn/gv-1/bridge.sock.ctl ",
		"name=gvpn.bridge ", "name=gvpn.bridge.ctl",
		"file=/pkgs/a,,b.squashfs", // commas doubled
		"-fsdev local,id=gvpnvol0,security_model=passthrough,path=/w/vol-1",
		"gvpn.bridge=virtio-serial://gvpn.bridge gvpn.hostname=node-a gvpn.root=/dev/vda gvpn.vol=gvpnvol0:/golem/work",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("QEMU arguments lack %q:\n%s", want, args)
		}
	}
	vs := strings.Join(qemuArgs(cfg, vsockBridge("gv-1"), "kvm"), " ")
	if !strings.Contains(vs, "vhost-vsock-pci,guest-cid=") || strings.Contains(vs, "virtserialport") || !strings.Contains(vs, "gvpn.bridge=vsock://host:") || !strings.Contains(vs, "-cpu host") {
		t.Errorf("vsock bridge arguments:\n%s", vs)
	}
	for _, p := range []string{"relative", "/", "/a b", "/a/../b", "/x\"y"} {
		if checkGuestPath(p) == nil {
			t.Errorf("guest path %q accepted", p)
		}
	}
}
