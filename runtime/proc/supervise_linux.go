package proc

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ErrExited is Signal's error for a process whose leader has exited: its
// pid, and so its group id, may belong to another process by now.
var ErrExited = errors.New("process has exited")

// SuperviseConfig is what differs between the sandboxes that supervise
// payload processes (the netns sandbox, gvpn-agent).
type SuperviseConfig struct {
	// Log receives the supervisor's own messages (read errors, the drain
	// rule firing); a "pid" field is added.
	Log *logrus.Entry
	// ChunkSize is the most bytes one output call carries.
	ChunkSize int
	// DrainTimeout is how long after the leader's exit the exit is held
	// back for output still in the pipes (a background child may keep
	// them open for ever).
	DrainTimeout time.Duration
	// Stop, when closed, means the owner is shutting down and has killed
	// everything: the exit is then held back at most StopDrain (0: not at
	// all) for the rest of the output.
	Stop      <-chan struct{}
	StopDrain time.Duration
	// WG counts the supervisor's goroutines, so that the owner can wait
	// for them at its end.
	WG *sync.WaitGroup
	// Reaped, when set, is called once the leader was reaped, with its
	// return code (ReturnCode; -1 when the wait failed), before the exit is
	// reported. From then on the pid is no longer the process's.
	Reaped func(rc int32)
	// Drained, when set, is called once both output pipes are finished
	// (EOF, or closed by ClosePipes).
	Drained func()
	// Finished, when set, is called after the exit was reported and both
	// pipes are finished: the process needs nothing any more.
	Finished func()
}

// Supervisor watches one started payload process that runs in its own
// process group with stdout and stderr on pipes: it reaps the process,
// pumps its output in order per stream, and reports its end exactly once,
// after the last output it reported. Both sandboxes that run payload
// processes use it, so that they keep the same rules:
//
//   - Output is read only once Stream was called (after the sandbox told
//     its caller the pid): until then it waits in the pipes.
//   - The exit is reported once the leader was reaped and both pipes
//     reached EOF, or DrainTimeout after the exit when a child left behind
//     (a background server) keeps a pipe open; output read after the exit
//     was reported is discarded (counted and logged), so that such
//     children neither block nor die of SIGPIPE.
//   - Signal reaches the process group only while the leader is not
//     reaped: the leader is marked exited before it is reaped, so a group
//     id the kernel may have handed on is never signalled.
type Supervisor struct {
	pid            int
	proc           *os.Process
	stdout, stderr *os.File
	cfg            SuperviseConfig

	mu       sync.Mutex
	exited   bool // the leader has exited; once reaped its pid may be reused
	streamed bool
	released bool // Release was called: Stream is a no-op

	reaped chan struct{} // closed after the leader was reaped; rc is set
	rc     int32

	// emitMu serialises output calls and guards exitSent: output read
	// after the exit was reported is discarded.
	emitMu    sync.Mutex
	output    func(chunk []byte, stderr bool)
	exitSent  bool
	discarded int64

	openPipes atomic.Int32  // readers still running
	drained   chan struct{} // closed when both readers finished
	done      chan struct{} // closed when the exit was reported, or at Release for a never-streamed process
	doneOnce  sync.Once
}

// NewSupervisor takes over p, started in its own process group, and the
// read ends of its stdout and stderr pipes (the write ends must be closed
// in this process already). Nothing happens until Watch: register the
// supervisor where Reaped finds it first.
func NewSupervisor(p *os.Process, stdout, stderr *os.File, cfg SuperviseConfig) *Supervisor {
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 64 << 10
	}
	if cfg.WG == nil {
		cfg.WG = new(sync.WaitGroup)
	}
	cfg.Log = cfg.Log.WithField("pid", p.Pid)
	return &Supervisor{
		pid: p.Pid, proc: p, stdout: stdout, stderr: stderr, cfg: cfg,
		reaped:  make(chan struct{}),
		drained: make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// Pid is the process's pid (and process group id).
func (s *Supervisor) Pid() int { return s.pid }

// Watch starts waiting for the process's exit and reaping it.
func (s *Supervisor) Watch() {
	s.cfg.WG.Add(1)
	go s.wait()
}

func (s *Supervisor) wait() {
	defer s.cfg.WG.Done()
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, s.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	s.mu.Lock()
	s.exited = true
	s.mu.Unlock()

	rc := int32(-1)
	state, err := s.proc.Wait()
	if err == nil {
		rc = ReturnCode(state.Sys().(syscall.WaitStatus))
	} else {
		s.cfg.Log.WithError(err).Warn("wait for process")
	}
	s.rc = rc
	if s.cfg.Reaped != nil {
		s.cfg.Reaped(rc)
	}
	close(s.reaped)
}

// Exited reports whether the leader has exited (it may not be reaped yet).
func (s *Supervisor) Exited() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exited
}

// Reaped is closed once the leader was reaped (after the Reaped hook).
func (s *Supervisor) Reaped() <-chan struct{} { return s.reaped }

// Signal sends sig to the process group. It returns ErrExited once the
// leader has exited, and kill(2)'s error (unix.ESRCH, ...) as it is.
func (s *Supervisor) Signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exited {
		return ErrExited
	}
	// While the leader is not reaped its pid cannot be reused, so the group
	// id is still ours.
	return unix.Kill(-s.pid, sig)
}

// Stream starts reading the output: output gets the stdout chunks in order
// and the stderr chunks in order (no order between the two), each at most
// ChunkSize bytes, exactly the bytes written; then exit gets the return
// code once, by the rule in the type's comment. The calls come from the
// supervisor's goroutines, one at a time, and hold up the output while they
// run. Stream is a no-op when called again or after Release.
func (s *Supervisor) Stream(output func(chunk []byte, stderr bool), exit func(rc int32)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streamed || s.released {
		return
	}
	s.streamed = true
	s.output = output
	s.openPipes.Store(2)
	s.cfg.WG.Add(3)
	go s.pump(s.stdout, false)
	go s.pump(s.stderr, true)
	go s.finish(exit)
}

func (s *Supervisor) pump(f *os.File, isStderr bool) {
	defer s.cfg.WG.Done()
	defer func() {
		f.Close()
		if s.openPipes.Add(-1) == 0 {
			close(s.drained)
			if s.cfg.Drained != nil {
				s.cfg.Drained()
			}
		}
	}()
	buf := make([]byte, s.cfg.ChunkSize)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			s.emit(append([]byte(nil), buf[:n]...), isStderr)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				s.cfg.Log.WithError(err).Warn("read process output")
			}
			return
		}
	}
}

func (s *Supervisor) emit(chunk []byte, isStderr bool) {
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	if s.exitSent {
		s.discarded += int64(len(chunk))
		return
	}
	s.output(chunk, isStderr)
}

func (s *Supervisor) finish(exit func(rc int32)) {
	defer s.cfg.WG.Done()
	<-s.reaped
	timer := time.NewTimer(s.cfg.DrainTimeout)
	select {
	case <-s.drained:
	case <-timer.C:
		s.cfg.Log.Info("process exited but its output pipes are still open (a background child?); reporting the exit, discarding later output")
	case <-s.cfg.Stop:
		// The owner killed everything, so EOF is imminent unless a process
		// that escaped holds a pipe; that one must not hold up the owner's
		// end for the whole DrainTimeout.
		timer.Reset(min(s.cfg.DrainTimeout, s.cfg.StopDrain))
		select {
		case <-s.drained:
		case <-timer.C:
		}
	}
	timer.Stop()
	// Once exitSent is set no output call starts, and the one running
	// has returned: exit is called alone, after the last output.
	s.emitMu.Lock()
	s.exitSent = true
	s.emitMu.Unlock()
	exit(s.rc)
	s.markDone()

	// The readers finish at EOF, at the latest when the owner closes the
	// pipes.
	<-s.drained
	s.emitMu.Lock()
	if s.discarded > 0 {
		s.cfg.Log.WithField("bytes", s.discarded).Debug("discarded output after exit")
	}
	s.emitMu.Unlock()
	if s.cfg.Finished != nil {
		s.cfg.Finished()
	}
}

func (s *Supervisor) markDone() { s.doneOnce.Do(func() { close(s.done) }) }

// Done is closed once the exit was reported, or, for a process never
// streamed, once Release saw it reaped.
func (s *Supervisor) Done() <-chan struct{} { return s.done }

// Release is the owner's hand-over at its end: Stream is a no-op after
// it. A process that was never streamed is done once reaped; its pipes are
// closed unread.
func (s *Supervisor) Release() {
	s.mu.Lock()
	s.released = true
	streamed := s.streamed
	s.mu.Unlock()
	if !streamed {
		s.cfg.WG.Add(1)
		go func() {
			defer s.cfg.WG.Done()
			<-s.reaped
			s.ClosePipes()
			s.markDone()
		}()
	}
}

// ClosePipes closes both output pipes, so that readers blocked on a pipe
// a stray child holds open return.
func (s *Supervisor) ClosePipes() {
	s.stdout.Close()
	s.stderr.Close()
}
