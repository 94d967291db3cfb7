package proc

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

func TestPathOf(t *testing.T) {
	if got := PathOf(nil); got != DefaultPath {
		t.Errorf("PathOf(nil) = %q, want DefaultPath", got)
	}
	if got := PathOf([]string{"A=1", "PATH=/a", "PATH=/b:/c"}); got != "/b:/c" {
		t.Errorf("PathOf = %q, want the last PATH", got)
	}
	if got := PathOf([]string{"PATH="}); got != "" {
		t.Errorf("PathOf(PATH=) = %q, want empty (the working directory)", got)
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "run"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if p, err := LookPath("run", "/nonexistent:"+dir, ""); err != nil || p != filepath.Join(dir, "run") {
		t.Errorf("LookPath(run) = %q, %v", p, err)
	}
	if p, err := LookPath("./x/y", "", ""); err != nil || p != "./x/y" {
		t.Errorf("a name with a slash is used as it is: %q, %v", p, err)
	}
	if p, err := LookPath("run", "", dir); err != nil || p != "./run" {
		t.Errorf("an empty PATH entry is the working directory (dir): %q, %v", p, err)
	}
	if _, err := LookPath("sub", dir, ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a directory is no match: %v", err)
	}
	if _, err := LookPath("missing", dir, ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LookPath(missing) = %v, want ErrNotExist", err)
	}
	// access(2) wants an x bit even for root.
	if _, err := LookPath("data", dir, ""); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("LookPath(data) = %v, want ErrPermission", err)
	}
	if _, err := LookPath("", dir, ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LookPath(\"\") = %v", err)
	}
}

func TestReturnCode(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int32
	}{{"exit 3", 3}, {"kill -TERM $$", 143}, {"kill -KILL $$", 137}, {"true", 0}} {
		cmd := exec.Command("/bin/sh", "-c", tc.script)
		_ = cmd.Run()
		if got := ReturnCode(cmd.ProcessState.Sys().(syscall.WaitStatus)); got != tc.want {
			t.Errorf("%q: ReturnCode = %d, want %d", tc.script, got, tc.want)
		}
	}
}
