package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gvpn/gvpn/test/privtest"
	"github.com/gvpn/gvpn/vsock"
)

// TestLauncherRunsAgainUntilTold: after each run the launcher asks whether
// to run again, with how the run ended; the output is quoted; the Box's
// environment reaches the command.
func TestLauncherRunsAgainUntilTold(t *testing.T) {
	l, err := newLauncher(Launch{Command: `echo "run $GVPN_X"; exit 3`, Output: privtest.Writer(t),
		Restart: vsock.BackoffOptions{Initial: time.Millisecond, Max: 5 * time.Millisecond}},
		[]string{"GVPN_X=x"}, time.Second, privtest.Log(t))
	if err != nil {
		t.Fatal(err)
	}
	var errs []string
	done := make(chan struct{})
	l.start(func(err error) bool {
		errs = append(errs, err.Error())
		if len(errs) < 3 {
			return true
		}
		close(done)
		return false
	})
	select {
	case <-done:
	case <-time.After(guard):
		t.Fatal("the command was not run three times")
	}
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(errs, ",") != "exit status 3,exit status 3,exit status 3" {
		t.Fatalf("runs ended with %v", errs)
	}
	if q := l.quote(); !strings.Contains(q, "run x") {
		t.Fatalf("quote %q lacks the command's output", q)
	}
}

// TestLauncherCloseStopsTheRun: close ends a running command (its whole
// process group) and nothing runs after it, whatever exited says; close
// again does nothing.
func TestLauncherCloseStopsTheRun(t *testing.T) {
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	l, err := newLauncher(Launch{Command: "echo run >> " + runs + "; sleep 60 & echo $! > " + filepath.Join(dir, "child") + "; wait"},
		nil, 5*time.Second, privtest.Log(t))
	if err != nil {
		t.Fatal(err)
	}
	exits := make(chan error, 4)
	l.start(func(err error) bool { exits <- err; return true })
	for deadline := time.Now().Add(guard); !l.running() || !fileHasLine(filepath.Join(dir, "child")); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the command did not start")
		}
	}
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	if l.running() {
		t.Fatal("a run is under way after close")
	}
	if len(exits) != 1 {
		t.Fatalf("%d runs reported ended, want 1", len(exits))
	}
	if b, _ := os.ReadFile(runs); string(b) != "run\n" {
		t.Fatalf("runs %q, want one", b)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "child"))
	if child := strings.TrimSpace(string(b)); !gone(child) {
		t.Fatalf("the command's child %s survived close", child)
	}
	if err := l.close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

// gone reports whether process pid has ended: no such process, or a
// zombie its new parent has not reaped yet.
func gone(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

func fileHasLine(path string) bool {
	b, _ := os.ReadFile(path)
	return strings.HasSuffix(string(b), "\n")
}
