package proc

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// guard bounds waits for events that must come; it is no timed assertion.
const guard = 30 * time.Second

type events struct {
	mu             sync.Mutex
	stdout, stderr bytes.Buffer
	afterExit      int // output calls after exit: must stay 0
	exits          []int32
	exited         chan struct{}
}

func (e *events) output(chunk []byte, isStderr bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.exits) > 0 {
		e.afterExit++
	}
	if isStderr {
		e.stderr.Write(chunk)
	} else {
		e.stdout.Write(chunk)
	}
}

func (e *events) exit(rc int32) {
	e.mu.Lock()
	e.exits = append(e.exits, rc)
	e.mu.Unlock()
	close(e.exited)
}

// start runs script under /bin/sh in its own process group, supervised.
func start(t *testing.T, script string, cfg SuperviseConfig, stdin ...*os.File) (*Supervisor, *sync.WaitGroup) {
	t.Helper()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Stdout, cmd.Stderr = outW, errW
	if len(stdin) > 0 {
		cmd.Stdin = stdin[0]
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		t.Fatal(err)
	}
	wg := new(sync.WaitGroup)
	cfg.WG = wg
	if cfg.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		cfg.Log = logrus.NewEntry(l)
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = guard
	}
	s := NewSupervisor(cmd.Process, outR, errR, cfg)
	s.Watch()
	t.Cleanup(func() {
		_ = syscall.Kill(-s.Pid(), syscall.SIGKILL)
		s.ClosePipes()
		wg.Wait()
	})
	return s, wg
}

func waitFor(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(guard):
		t.Fatalf("%s did not happen", what)
	}
}

func TestSupervisorOutputThenExit(t *testing.T) {
	reaped := make(chan int32, 1)
	finished := make(chan struct{})
	s, _ := start(t, `head -c 200000 /dev/zero; echo err >&2; exit 3`, SuperviseConfig{
		ChunkSize: 4096,
		Reaped:    func(rc int32) { reaped <- rc },
		Finished:  func() { close(finished) },
	})
	// Nothing is read before Stream: the output fills the pipe, so the
	// process cannot end.
	select {
	case <-s.Reaped():
		t.Fatal("reaped before Stream: its output was read or lost")
	case <-time.After(100 * time.Millisecond):
	}
	e := &events{exited: make(chan struct{})}
	s.Stream(e.output, e.exit)
	s.Stream(func([]byte, bool) { t.Error("second Stream delivered output") }, func(int32) { t.Error("second Stream delivered the exit") })
	waitFor(t, e.exited, "exit")
	waitFor(t, finished, "Finished")
	if rc := <-reaped; rc != 3 {
		t.Errorf("Reaped rc %d, want 3", rc)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stdout.Len() != 200000 || strings.Trim(e.stdout.String(), "\x00") != "" || e.stderr.String() != "err\n" {
		t.Errorf("output: %d stdout bytes, stderr %q", e.stdout.Len(), e.stderr.String())
	}
	if len(e.exits) != 1 || e.exits[0] != 3 || e.afterExit != 0 {
		t.Errorf("exits %v, %d output calls after the exit", e.exits, e.afterExit)
	}
	if !s.Exited() || !errors.Is(s.Signal(syscall.SIGTERM), ErrExited) {
		t.Error("Signal after the exit must be ErrExited")
	}
	waitFor(t, s.Done(), "Done")
}

func TestSupervisorDrainTimeoutWithBackgroundChild(t *testing.T) {
	// The child keeps stdout open and writes after its parent's exit was
	// reported (it waits for a line on fd 3): that output is discarded, the
	// exit is not held up.
	goR, goW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer goW.Close()
	s, wg := start(t, `exec 3<&0; (read x <&3; echo late) & echo early`, SuperviseConfig{DrainTimeout: 50 * time.Millisecond}, goR)
	goR.Close()
	finished := make(chan struct{})
	e := &events{exited: make(chan struct{})}
	s.Stream(e.output, e.exit)
	waitFor(t, e.exited, "exit despite the open pipe")
	e.mu.Lock()
	if e.exits[0] != 0 {
		t.Errorf("rc %d", e.exits[0])
	}
	e.mu.Unlock()
	if _, err := goW.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	// The child writes "late" and ends: the readers read it (and discard
	// it) before EOF.
	go func() { wg.Wait(); close(finished) }()
	waitFor(t, finished, "the readers' end")
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.afterExit != 0 || e.stdout.String() != "early\n" {
		t.Errorf("output after the exit was delivered: %q", e.stdout.String())
	}
}

func TestSupervisorSignal(t *testing.T) {
	s, _ := start(t, `exec sleep 60`, SuperviseConfig{})
	e := &events{exited: make(chan struct{})}
	s.Stream(e.output, e.exit)
	if err := s.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, e.exited, "exit after SIGKILL")
	if e.exits[0] != 137 {
		t.Errorf("rc %d, want 137", e.exits[0])
	}
}

func TestSupervisorStopEndsTheDrain(t *testing.T) {
	stop := make(chan struct{})
	// The child keeps the pipes open for longer than the test's guard.
	s, _ := start(t, `sleep 60 & exit 5`, SuperviseConfig{Stop: stop, DrainTimeout: time.Hour})
	e := &events{exited: make(chan struct{})}
	s.Stream(e.output, e.exit)
	waitFor(t, s.Reaped(), "reap")
	close(stop)
	waitFor(t, e.exited, "exit after Stop")
	if e.exits[0] != 5 {
		t.Errorf("rc %d, want 5", e.exits[0])
	}
}

func TestSupervisorReleaseNeverStreamed(t *testing.T) {
	s, _ := start(t, `echo never read`, SuperviseConfig{})
	s.Release()
	s.Stream(func([]byte, bool) { t.Error("Stream after Release delivered output") }, func(int32) { t.Error("Stream after Release delivered the exit") })
	waitFor(t, s.Done(), "Done after Release")
}
