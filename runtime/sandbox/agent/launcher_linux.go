package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/proc"
	"github.com/gvpn/gvpn/vsock"
)

// Launch says how the payload is brought up: the command that starts it
// with gvpn-agent inside (a container's shell command, QEMU), which the Box
// runs in the activity's cgroup, supervises and runs again after it exits.
// A kind of agent sandbox is the Launch it builds (package vm: QEMU's).
type Launch struct {
	// Command is run with /bin/sh -c in its own process group, with
	// GVPN_BRIDGE and GVPN_CONTROL set to the listening addresses. It must
	// stay in the foreground for the payload's life: when it exits, the
	// payload is considered gone.
	Command string
	// Argv, when set instead of Command, is the program and its arguments,
	// run directly (no shell) in the same way.
	Argv []string
	// Name names the command in logs and errors ("QEMU"); empty means
	// "the agent command".
	Name string
	// Dir is the command's working directory; empty means the runtime's.
	Dir string
	// Env is added to the runtime's environment for the command.
	Env []string
	// Output receives the command's stdout and stderr (the agent's logs);
	// nil discards them. Never the runtime's stdout: that is the ExeUnit's.
	// The last of it is quoted in errors either way.
	Output io.Writer
	// Restart bounds the delays before the command is run again after it
	// exited; zero fields take vsock's defaults.
	Restart vsock.BackoffOptions

	// LimitsName, when set, names the activity's cgroup (and disk) that
	// the command runs in, with Limits (see package limits); a group or
	// disk left under that name by a runtime that died is removed first.
	LimitsName string
	Limits     limits.Limits
	// Granted is what the agreement said, for the usage logs, when the
	// group's Limits differ from it (a VM's QEMU gets room of its own);
	// zero means Limits.
	Granted limits.Limits
	// Workdir and DiskDirs: with a storage limit, the directories DiskDirs
	// (relative to Workdir, existing) are put on the activity's disk.
	Workdir  string
	DiskDirs []string
	// RequireLimits makes Open fail, before the command runs, when a limit
	// cannot be enforced.
	RequireLimits bool
}

// tailSize is how much of the command's latest output an error quotes.
const tailSize = 2048

// launcher runs a Launch: the command, in the activity's cgroup, and again
// after each exit, until close. It knows nothing of the agent: after each
// run it asks the function given to start whether to run again.
//
// The Box calls start once; running, quote and the limits' methods from
// any goroutine; close once it no longer wants the payload (more calls do
// nothing). close stops the command (SIGTERM to its process group, SIGKILL
// after stopTimeout), returns once the supervising goroutine has ended,
// and removes the cgroup and the disk; nothing runs after it.
type launcher struct {
	cfg         Launch
	env         []string // for the command, after the runtime's and cfg.Env
	stopTimeout time.Duration
	log         *logrus.Entry
	tail        tailBuffer
	limits      *limits.Set // empty without cfg.LimitsName
	stopping    chan struct{}

	mu      sync.Mutex
	closed  bool
	cmd     *exec.Cmd // the running command, nil between runs
	cmdDone chan struct{}

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// newLauncher checks cfg and opens its cgroup and disk; nothing runs yet.
func newLauncher(cfg Launch, env []string, stopTimeout time.Duration, log *logrus.Entry) (*launcher, error) {
	if strings.TrimSpace(cfg.Command) == "" && len(cfg.Argv) == 0 {
		return nil, errors.New("agent sandbox: no agent command")
	}
	if cfg.Name == "" {
		cfg.Name = "the agent command"
	}
	if cfg.Output == nil {
		cfg.Output = io.Discard
	}
	l := &launcher{cfg: cfg, env: env, stopTimeout: stopTimeout, log: log, limits: &limits.Set{}, stopping: make(chan struct{})}
	if err := l.openLimits(); err != nil {
		return nil, err
	}
	return l, nil
}

// name is the command's name for logs and errors.
func (l *launcher) name() string { return l.cfg.Name }

// quote returns the command's last output as a suffix for an error
// message.
func (l *launcher) quote() string { return l.tail.quote() }

// start runs the command, and again after each exit while exited, given
// how the run ended, says so and close has not been called.
func (l *launcher) start(exited func(err error) (again bool)) {
	l.wg.Add(1)
	go l.supervise(exited)
}

func (l *launcher) supervise(exited func(error) bool) {
	defer l.wg.Done()
	backoff := vsock.NewBackoff(l.cfg.Restart)
	for run := 0; ; run++ {
		if run > 0 {
			t := time.NewTimer(backoff.Next())
			select {
			case <-t.C:
			case <-l.stopping:
				t.Stop()
				return
			}
			l.log.Infof("running %s again", l.cfg.Name)
		}
		started := time.Now()
		if !exited(l.run()) || l.isClosed() {
			return
		}
		if time.Since(started) >= backoff.Options().Max {
			backoff.Reset()
		}
	}
}

func (l *launcher) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// running reports whether a run of the command is under way.
func (l *launcher) running() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cmd != nil
}

// run runs the command once and returns how it ended.
func (l *launcher) run() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	argv := []string{"/bin/sh", "-c", l.cfg.Command}
	if len(l.cfg.Argv) > 0 {
		argv = l.cfg.Argv
	}
	argv, cgFiles, err := l.limitArgv(argv)
	if err != nil {
		r.Close()
		w.Close()
		return err
	}
	defer func() {
		for _, f := range cgFiles {
			f.Close()
		}
	}()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.ExtraFiles = cgFiles
	cmd.Dir = l.cfg.Dir
	cmd.Env = append(os.Environ(), l.cfg.Env...)
	cmd.Env = append(cmd.Env, l.env...)
	cmd.Env = append(cmd.Env, limitEnv(l.cfg.Limits)...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		r.Close()
		w.Close()
		return errors.New("closing")
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		l.mu.Unlock()
		r.Close()
		return fmt.Errorf("start %s: %w", strings.Join(cmd.Args, " "), err)
	}
	// The launcher (QEMU, a container) holds the payload's memory: when
	// memory runs out, it goes first, not the runtime. Its children
	// inherit the value; the ones it forked in this instant keep the
	// runtime's.
	if err := proc.SetOOMScoreAdj(cmd.Process.Pid, proc.OOMPayload); err != nil {
		l.log.WithError(err).Warn("cannot make the payload's launcher the OOM killer's first choice")
	}
	done := make(chan struct{})
	l.cmd, l.cmdDone = cmd, done
	l.mu.Unlock()
	l.log.WithFields(logrus.Fields{"pid": cmd.Process.Pid, "command": strings.Join(cmd.Args, " ")}).Infof("%s started", l.cfg.Name)

	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(io.MultiWriter(l.cfg.Output, &l.tail), r)
	}()

	pid := cmd.Process.Pid
	var info unix.Siginfo
	for {
		// Wait without reaping: while the leader is a zombie its group id
		// cannot be reused, so the group can still be signalled safely.
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	// Whatever the command left in its group (an agent it forked) goes
	// with it: there must never be two agents for one payload.
	_ = unix.Kill(-pid, syscall.SIGKILL)
	l.mu.Lock()
	state, werr := cmd.Process.Wait()
	l.cmd, l.cmdDone = nil, nil
	l.mu.Unlock()
	close(done)
	select {
	case <-copied:
	case <-time.After(time.Second):
		// A process outside the group holds the pipe: stop reading.
		r.Close()
		<-copied
	}
	r.Close()
	if werr != nil {
		return werr
	}
	if state.Success() {
		return errors.New("exit status 0")
	}
	return errors.New(state.String())
}

// close stops the command and its supervision for good and removes the
// cgroup and the disk (killing what the command left in the group).
func (l *launcher) close() (err error) {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		close(l.stopping)
		l.stopCommand()
		l.wg.Wait()
		err = l.closeLimits()
	})
	return err
}

// stopCommand ends a running command: SIGTERM to its group, SIGKILL after
// stopTimeout.
func (l *launcher) stopCommand() {
	l.mu.Lock()
	cmd, done := l.cmd, l.cmdDone
	if cmd != nil {
		// The leader is not reaped before mu is released, so the group id
		// is still the command's.
		_ = unix.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
	l.mu.Unlock()
	if cmd == nil {
		return
	}
	t := time.NewTimer(l.stopTimeout)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	l.log.Warnf("%s ignored SIGTERM; sending SIGKILL", l.cfg.Name)
	l.mu.Lock()
	if l.cmd == cmd {
		_ = unix.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	l.mu.Unlock()
	<-done
}

// tailBuffer keeps the last tailSize bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailSize {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailSize:]...)
	}
	return len(p), nil
}

// quote returns the kept output as a suffix for an error message.
func (t *tailBuffer) quote() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.buf))
	if s == "" {
		return "; the command printed nothing"
	}
	return "; its last output:\n" + s
}
