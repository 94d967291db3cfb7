package owner

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLockRefusesSecondHolderAndNamesTheFirst(t *testing.T) {
	dir := t.TempDir()
	l, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to the open file description, so a second open
	// in this process conflicts like another process would.
	_, err = Lock(dir)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "pid ") {
		t.Fatalf("second Lock = %v, want ErrBusy naming the holder", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal("second Unlock:", err)
	}
	l2, err := Lock(dir)
	if err != nil {
		t.Fatal("Lock after Unlock:", err)
	}
	l2.Unlock()
}

func TestLockIsReleasedWhenTheHolderDies(t *testing.T) {
	dir := t.TempDir()
	// flock(1) holds the lock while sleep runs, then dies with it.
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("flock(1) not installed")
	}
	cmd := exec.Command("flock", "-n", filepath.Join(dir, LockFile), "sleep", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		l, err := Lock(dir)
		l.Unlock()
		return errors.Is(err, ErrBusy)
	})
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // flock and the sleep holding its descriptor
	cmd.Wait()
	// The sleep dies a moment after flock is reaped.
	waitFor(t, func() bool {
		l, err := Lock(dir)
		l.Unlock()
		return err == nil
	})
}

func TestClaimRecordsALiveOwner(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sb")
	if err := Claim(dir); err != nil {
		t.Fatal(err)
	}
	r, err := Read(dir)
	if err != nil || r.PID != os.Getpid() || !r.Alive() || Stale(dir) {
		t.Fatalf("record %+v, %v; alive %v", r, err, r.Alive())
	}
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v, want 0700", fi.Mode().Perm())
	}
	if err := Claim(dir); !errors.Is(err, ErrBusy) {
		t.Fatalf("claim of a live owner's dir = %v, want ErrBusy", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	if len(entries) != 1 {
		t.Fatalf("a refused claim left %d entries", len(entries))
	}
}

func TestStaleOwner(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "sb")
	os.Mkdir(dir, 0o755)
	// A dead pid, and this process's pid with another start time (reuse).
	for _, rec := range []string{
		"999999999 1\n",
		itoa(os.Getpid()) + " 1\n",
		"garbage",
	} {
		os.WriteFile(filepath.Join(dir, RecordFile), []byte(rec), 0o644)
		if !Stale(dir) {
			t.Errorf("record %q not stale", rec)
		}
		if err := Claim(dir); !errors.Is(err, os.ErrExist) {
			t.Errorf("claim over stale %q = %v, want ErrExist", rec, err)
		}
	}
	os.Remove(filepath.Join(dir, RecordFile))
	if !Stale(dir) {
		t.Error("dir without record not stale")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// waitFor polls cond until it holds, failing after a generous deadline.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
