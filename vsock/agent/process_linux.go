package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/image/passwd"
	"github.com/gvpn/gvpn/runtime/proc"
	"github.com/gvpn/gvpn/vsock"
)

// outputChunk is the most bytes one output notice carries (base64 makes it
// about 87 KiB of JSON, far below vsock.MaxControlMessage).
const outputChunk = 64 << 10

// runError is a run request that could not start a process; reason is a
// vsock.Failed reason.
type runError struct {
	reason string
	err    error
}

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// notifier sends process notices (output, exited) on the control
// connection, whichever one is current when they are ready.
type notifier interface {
	// notify sends m, waiting for a control connection if there is none.
	// critical notices (exited) are sent again on the next connection when
	// the write fails; others are lost with the connection. It gives up
	// when ctx is done.
	notify(ctx context.Context, m vsock.Message, critical bool)
}

// processes runs the payload's processes for run requests, with the same
// semantics as gvpn-runtime's netns sandbox: argv as given, a bare name
// looked up in PATH, stdin from /dev/null, output in chunks, the exit
// status (128+N for signal N) after the last output, each process in its
// own process group (kill signals the group), SIGKILL if the agent dies.
type processes struct {
	log          *logrus.Entry
	out          notifier
	drainTimeout time.Duration

	ctx    context.Context // cancelled when notices must stop waiting
	cancel context.CancelFunc

	mu       sync.Mutex
	stopping bool                  // stopAll has begun: no new process
	live     map[int]*process      // pid → process whose leader is not reaped
	active   map[int]*process      // pid → process whose exited notice is not sent
	open     map[*process]struct{} // processes whose output pipes are open
	idle     chan struct{}         // closed and replaced when active becomes empty
	wg       sync.WaitGroup
}

// process is one payload process: its supervision (output, exit, signals)
// is runtime/proc's Supervisor.
type process struct {
	pid int
	sup *proc.Supervisor
}

func newProcesses(log *logrus.Entry, out notifier, drainTimeout time.Duration) *processes {
	ctx, cancel := context.WithCancel(context.Background())
	return &processes{
		log: log, out: out, drainTimeout: drainTimeout,
		ctx: ctx, cancel: cancel,
		live: make(map[int]*process), active: make(map[int]*process), open: make(map[*process]struct{}),
		idle: make(chan struct{}),
	}
}

// start starts the process r asks for and returns its pid; its notices
// flow once stream is called (after the started reply is sent, so that the
// runtime knows the pid before the first output).
func (ps *processes) start(r vsock.Run) (*process, error) {
	if r.Bin == "" {
		return nil, &runError{vsock.FailedNotFound, errors.New("empty program name")}
	}
	argv := r.Args
	if len(argv) == 0 {
		argv = []string{r.Bin}
	}
	if r.Dir != "" {
		if fi, err := os.Stat(r.Dir); err != nil {
			return nil, &runError{"", fmt.Errorf("working directory: %w", err)}
		} else if !fi.IsDir() {
			return nil, &runError{"", fmt.Errorf("working directory %s is not a directory", r.Dir)}
		}
	}
	cred, err := credential(r.User)
	if err != nil {
		return nil, err
	}
	path, err := lookPath(r.Bin, r.Env, r.Dir)
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, &runError{"", fmt.Errorf("pipe: %w", err)}
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, &runError{"", fmt.Errorf("pipe: %w", err)}
	}
	cmd := &exec.Cmd{
		Path:   path,
		Args:   argv,
		Env:    r.Env, // nil: the agent's environment
		Dir:    r.Dir, // "": the agent's working directory
		Stdout: outW,
		Stderr: errW,
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:    true,
			Pdeathsig:  syscall.SIGKILL,
			Credential: cred,
		},
	}
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, classifyStart(r.Bin, err)
	}
	p := &process{pid: cmd.Process.Pid}
	p.sup = proc.NewSupervisor(cmd.Process, outR, errR, proc.SuperviseConfig{
		Log:          ps.log,
		ChunkSize:    outputChunk,
		DrainTimeout: ps.drainTimeout,
		Stop:         ps.ctx.Done(),
		WG:           &ps.wg,
		Reaped: func(int32) {
			ps.mu.Lock()
			delete(ps.live, p.pid)
			ps.mu.Unlock()
		},
		Drained: func() {
			ps.mu.Lock()
			delete(ps.open, p)
			ps.mu.Unlock()
		},
	})
	ps.mu.Lock()
	if ps.stopping {
		ps.mu.Unlock()
		_ = unix.Kill(-p.pid, syscall.SIGKILL)
		_, _ = cmd.Process.Wait() // SIGKILL cannot be ignored: this is short
		outR.Close()
		errR.Close()
		return nil, &runError{"", errors.New("the agent is shutting down")}
	}
	ps.live[p.pid] = p
	ps.active[p.pid] = p
	ps.open[p] = struct{}{}
	ps.mu.Unlock()
	p.sup.Watch()
	ps.log.WithFields(logrus.Fields{"pid": p.pid, "bin": r.Bin, "args": argv}).Info("process started")
	return p, nil
}

// credential resolves a run's user (the image's User setting) against
// this root's /etc/passwd and /etc/group, the image's own in a VM booted
// from it; "" keeps the agent's user (nil).
func credential(user string) (*syscall.Credential, error) {
	if user == "" {
		return nil, nil
	}
	u, err := passwd.Resolve(os.DirFS("/"), user)
	if err != nil {
		return nil, &runError{"", err}
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}, nil
}

// lookPath finds bin the way execvp does (proc.LookPath): in the PATH of
// env, or of the agent's own environment when env is nil, or DefaultPath
// when that has none; relative candidates relative to dir.
func lookPath(bin string, env []string, dir string) (string, error) {
	if env == nil {
		env = os.Environ()
	}
	path, err := proc.LookPath(bin, proc.PathOf(env), dir)
	switch {
	case err == nil:
		return path, nil
	case errors.Is(err, fs.ErrPermission):
		return "", &runError{vsock.FailedNotExecutable, fmt.Errorf("exec: %q: permission denied", bin)}
	default:
		return "", &runError{vsock.FailedNotFound, fmt.Errorf("exec: %q: executable file not found in $PATH", bin)}
	}
}

func classifyStart(bin string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, exec.ErrNotFound):
		return &runError{vsock.FailedNotFound, err}
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EISDIR):
		return &runError{vsock.FailedNotExecutable, err}
	}
	return &runError{"", fmt.Errorf("start %s: %w", bin, err)}
}

// stream starts reading p's output and sending the notices: the output
// while the control connection lasts, the exited notice (after the output,
// or drainTimeout after the exit when a background child keeps the pipes
// open) until it was delivered.
func (ps *processes) stream(p *process) {
	p.sup.Stream(func(chunk []byte, isStderr bool) {
		m := vsock.Output{PID: p.pid, Stdout: chunk}
		if isStderr {
			m = vsock.Output{PID: p.pid, Stderr: chunk}
		}
		ps.out.notify(ps.ctx, m, false)
	}, func(rc int32) {
		ps.log.WithFields(logrus.Fields{"pid": p.pid, "rc": rc}).Info("process exited")
		ps.out.notify(ps.ctx, vsock.Exited{PID: p.pid, ReturnCode: int(rc)}, true)
		ps.mu.Lock()
		delete(ps.active, p.pid)
		if len(ps.active) == 0 {
			close(ps.idle)
			ps.idle = make(chan struct{})
		}
		ps.mu.Unlock()
	})
}

// kill sends sig to the process group of pid. Signal 0 means SIGKILL, as
// on the ExeUnit's KillProcess.
func (ps *processes) kill(pid int, sig int) error {
	if sig == 0 {
		sig = int(syscall.SIGKILL)
	}
	if sig < 0 || sig > proc.MaxSignal {
		return fmt.Errorf("invalid signal %d", sig)
	}
	ps.mu.Lock()
	p := ps.live[pid]
	ps.mu.Unlock()
	if p == nil {
		return fmt.Errorf("pid %d: no such process (not started by this agent, or exited)", pid)
	}
	err := p.sup.Signal(syscall.Signal(sig))
	switch {
	case errors.Is(err, proc.ErrExited):
		return fmt.Errorf("pid %d has exited", pid)
	case err != nil:
		return fmt.Errorf("kill pid %d: %w", pid, err)
	}
	return nil
}

// stopAll ends every process: SIGTERM to each group, SIGKILL to what is
// left after timeout; then it waits (bounded by timeout again) until every
// exited notice went out.
func (ps *processes) stopAll(timeout time.Duration) {
	ps.mu.Lock()
	ps.stopping = true
	ps.mu.Unlock()
	ps.signalAll(syscall.SIGTERM)
	if !ps.waitIdle(timeout, true) {
		ps.log.Warn("processes ignored SIGTERM; sending SIGKILL")
		ps.signalAll(syscall.SIGKILL)
	}
	if !ps.waitIdle(timeout, false) {
		ps.log.Warn("exit notices not all delivered (no control connection?)")
	}
}

// signalAll signals the process group of every process that runs or whose
// output pipes are still open: a background child it left keeps them open,
// and usually stays in its group. The group id of an exited leader cannot
// be handed to another process while any member of the group lives, so
// signalling it reaches those children or nobody.
func (ps *processes) signalAll(sig syscall.Signal) {
	ps.mu.Lock()
	procs := make([]*process, 0, len(ps.open)+len(ps.live))
	for p := range ps.open {
		procs = append(procs, p)
	}
	for _, p := range ps.live {
		if _, ok := ps.open[p]; !ok {
			procs = append(procs, p)
		}
	}
	ps.mu.Unlock()
	for _, p := range procs {
		_ = unix.Kill(-p.pid, sig)
	}
}

// waitIdle waits until no process runs or holds open pipes (reapedOnly),
// or until every exited notice was sent.
func (ps *processes) waitIdle(timeout time.Duration, reapedOnly bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ps.mu.Lock()
		n, idle := len(ps.active), ps.idle
		if reapedOnly {
			n = len(ps.live) + len(ps.open)
		}
		ps.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-idle:
		case <-deadline.C:
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// close stops waiting for a control connection, closes every pipe and
// waits for every goroutine. Call it after stopAll.
func (ps *processes) close() {
	ps.cancel()
	ps.mu.Lock()
	for p := range ps.open {
		p.sup.ClosePipes()
	}
	ps.mu.Unlock()
	ps.wg.Wait()
}
