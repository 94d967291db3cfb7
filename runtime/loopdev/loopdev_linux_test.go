//go:build linux

package loopdev

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gvpn/gvpn/test/privtest"
)

func TestAttachIsReadOnlyBoundedAndClearsItself(t *testing.T) {
	privtest.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "image")
	data := append(bytes.Repeat([]byte("A"), 4096), bytes.Repeat([]byte("T"), 1000)...) // a trailer past the size
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := Attach(f, 4096)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(dev.Path)
	if got := readSys(name, "loop/backing_file"); got != path {
		t.Errorf("%s backs %q, want %q", dev.Path, got, path)
	}
	if got := readSys(name, "ro"); got != "1" {
		t.Errorf("%s ro = %q", dev.Path, got)
	}
	if got := readSys(name, "loop/autoclear"); got != "1" {
		t.Errorf("%s autoclear = %q", dev.Path, got)
	}
	b, err := os.ReadFile(dev.Path)
	if err != nil || !bytes.Equal(b, data[:4096]) {
		t.Errorf("the device reads %d bytes (%v), want the file's first 4096", len(b), err)
	}
	if w, err := os.OpenFile(dev.Path, os.O_WRONLY, 0); err == nil {
		if _, err := w.Write(make([]byte, 512)); err == nil {
			t.Error("the device takes writes")
		}
		w.Close()
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dev.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Autoclear: with no mount and no descriptor the device lets go.
	deadline := time.Now().Add(30 * time.Second)
	for readSys(name, "loop/backing_file") != "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := readSys(name, "loop/backing_file"); got != "" {
		t.Errorf("%s still backs %q after Close", dev.Path, got)
	}
}

func TestAttachRefusesBadInput(t *testing.T) {
	privtest.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(path, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, size := range []int64{-512, 4097, 8192, 100} {
		if dev, err := Attach(f, size); err == nil {
			dev.Close()
			t.Errorf("size %d accepted", size)
		} else if !strings.Contains(err.Error(), "size") {
			t.Errorf("size %d: %v does not name the size", size, err)
		}
	}
	d, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if dev, err := Attach(d, 0); err == nil {
		dev.Close()
		t.Error("a directory accepted")
	}
}

func readSys(dev, attr string) string {
	b, err := os.ReadFile(filepath.Join("/sys/block", dev, attr))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
