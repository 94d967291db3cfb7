package volume

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts in the host's mount namespace")
	}
}

func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(b, []byte(" "+dir+" "))
}

// TestMountHostRefusesLinks: through a host volume's mount, links do not
// resolve (ELOOP) while readlink works; plain files do; Unmount leaves
// nothing, twice.
func TestMountHostRefusesLinks(t *testing.T) {
	requireRoot(t)
	workdir, run := t.TempDir(), t.TempDir()
	l, err := Plan(`{"/golem/work":{"host":{}},"/scratch":{"ram":{}},"/s":{"storage":{}}}`)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Prepare(workdir, os.Geteuid()); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(run, MountsRecord)
	m, err := l.MountHost(workdir, record)
	if err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(workdir, NameFor("/golem/work"))
	if !mounted(t, vol) || mounted(t, filepath.Join(workdir, NameFor("/s"))) {
		t.Fatal("want the host volume mounted and only it")
	}
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("x"), 0o600)
	os.Symlink(secret, filepath.Join(vol, "link"))
	os.WriteFile(filepath.Join(vol, "plain"), []byte("ok"), 0o600)
	if _, err := os.ReadFile(filepath.Join(vol, "link")); !errors.Is(err, unix.ELOOP) {
		t.Errorf("open through a link: %v, want ELOOP", err)
	}
	if b, err := os.ReadFile(filepath.Join(vol, "plain")); err != nil || string(b) != "ok" {
		t.Errorf("plain file: %q %v", b, err)
	}
	if target, err := os.Readlink(filepath.Join(vol, "link")); err != nil || target != secret {
		t.Errorf("readlink: %q %v", target, err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
	if mounted(t, vol) {
		t.Fatal("still mounted after Unmount")
	}
	if _, err := os.Stat(record); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record left: %v", err)
	}
}

// TestUnmountRecorded: what a runtime that died mounted is unmounted from
// its record; a missing record is nothing to do.
func TestUnmountRecorded(t *testing.T) {
	requireRoot(t)
	workdir, run := t.TempDir(), t.TempDir()
	l, _ := Plan(`["/a","/b"]`)
	if err := l.Prepare(workdir, os.Geteuid()); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(run, MountsRecord)
	if _, err := l.MountHost(workdir, record); err != nil { // "crash": no Unmount
		t.Fatal(err)
	}
	if err := UnmountRecorded(record); err != nil {
		t.Fatal(err)
	}
	for _, v := range l {
		if mounted(t, filepath.Join(workdir, v.Name)) {
			t.Errorf("%s still mounted", v.Path)
		}
	}
	if err := UnmountRecorded(record); err != nil {
		t.Errorf("again: %v", err)
	}
}
