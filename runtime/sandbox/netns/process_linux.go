//go:build linux

package netns

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/proc"
	"github.com/gvpn/gvpn/runtime/sandbox"
)

// Process is a process started by Sandbox.Start.
type Process struct {
	sb             *Sandbox
	pid            uint64
	proc           *os.Process
	stdout, stderr *os.File

	mu       sync.Mutex
	exited   bool // the leader has exited; once reaped its pid may be reused
	streamed bool
	released bool // Close took over: Stream is a no-op

	reaped chan struct{} // closed after the leader was reaped; rc is set
	rc     int32

	// emitMu serialises sink calls and guards exitSent: output read after
	// the Exited event (DrainTimeout expired) is discarded.
	emitMu    sync.Mutex
	sink      func(sandbox.Event)
	exitSent  bool
	discarded int64

	openPipes atomic.Int32  // readers still running
	drained   chan struct{} // closed when both readers finished
	done      chan struct{} // closed when Exited was delivered, or at Close for a never-streamed process
	doneOnce  sync.Once
}

// Pid is the process's OS pid (in the host's pid namespace), used as the
// RunProcess reply pid. It is unique among this sandbox's processes until
// the process has exited; after that Kill reports sandbox.ErrNoProcess for it.
func (p *Process) Pid() uint64 { return p.pid }

// Start runs spec in the sandbox: in its network namespace, in a private
// mount namespace where the sandbox's hosts file is /etc/hosts, in its own
// UTS namespace when the sandbox has a hostname, in a new process group,
// with stdin from /dev/null and stdout and stderr to pipes that Stream
// reads. The process (not the children it forks) gets SIGKILL if the
// runtime dies; whatever is left in the namespace then is killed by the
// next Open or Cleanup for the same workdir. Start returns once
// the payload binary is running, or sandbox.ErrNotFound, sandbox.ErrNotExecutable or
// sandbox.ErrSetup (wrapped, with the reason) when it could not be started, or
// sandbox.ErrClosed after Close. No output is read until Stream is called.
func (s *Sandbox) Start(spec sandbox.ProcessSpec) (sandbox.Process, error) {
	if spec.Bin == "" {
		return nil, fmt.Errorf("%w: empty binary name", sandbox.ErrNotFound)
	}
	argv := spec.Args
	if len(argv) == 0 {
		argv = []string{spec.Bin}
	}
	spec = spec.WithDefaults(s.env, s.dir)
	dir := spec.Dir
	env := payloadEnv(withoutCgroupEnv(spec.Env))
	mode := shimHost
	switch {
	case s.root:
		mode = shimRoot
	case s.userns:
		mode = shimUserns + strconv.FormatUint(uint64(s.ids), 10)
	}
	uid, gid := strconv.Itoa(int(s.user.UID)), strconv.Itoa(int(s.user.GID))

	s.life.RLock()
	defer s.life.RUnlock()
	if s.closed {
		return nil, sandbox.ErrClosed
	}

	var files []*os.File // every pipe end, closed on failure
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	outR, outW, err1 := pipe()
	errR, errW, err2 := pipe()
	repR, repW, err3 := pipe()
	cgFiles, cgEnv, err4 := s.cgroupFiles()
	files = append(files, cgFiles...)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		closeAll()
		return nil, fmt.Errorf("%w: pipes: %v", sandbox.ErrSetup, err)
	}
	if cgEnv != "" {
		env = append([]string{cgEnv}, env...)
	}

	// The starter's thread is in the sandbox's namespaces already; the
	// shim drops privileges, changes to dir and execs.
	// fd 3 is the report pipe, the cgroup.procs files follow (see
	// cgroupFiles), then the static shim where there is one.
	path, extra := "/proc/self/exe", append([]*os.File{repW}, cgFiles...)
	if s.shim != nil {
		// The image's root has no path to it but this descriptor.
		fd := shimReportFD + len(extra)
		path, extra = "/proc/self/fd/"+strconv.Itoa(fd), append(extra, s.shim)
	}
	cmd := &exec.Cmd{
		Path:       path,
		Args:       append([]string{shimArgv0, shimMarker, mode, uid, gid, dir, spec.Bin}, argv...),
		Env:        env,
		Stdout:     outW,
		Stderr:     errW,
		ExtraFiles: extra,
		// No Pdeathsig: in the holder's PID namespace the parent is not
		// visible, and os/exec would take that for the parent's death.
		// The process dies with the holder instead, which has one.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	err := s.starter.start(cmd)
	// The child has its copies of the write ends; ours must go so that the
	// readers see EOF when the process is done.
	outW.Close()
	errW.Close()
	repW.Close()
	for _, f := range cgFiles {
		f.Close()
	}
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("%w: start %s in %s: %v", sandbox.ErrSetup, spec.Bin, dir, err)
	}

	_ = repR.SetReadDeadline(time.Now().Add(shimReportTimeout))
	err = readShimReport(repR)
	repR.Close()
	if err != nil {
		// The shim exits by itself after a failure; a stuck one is killed.
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		closeAll()
		s.log.WithError(err).WithField("bin", spec.Bin).Debug("start failed")
		return nil, err
	}

	p := &Process{
		sb:      s,
		pid:     uint64(cmd.Process.Pid),
		proc:    cmd.Process,
		stdout:  outR,
		stderr:  errR,
		reaped:  make(chan struct{}),
		drained: make(chan struct{}),
		done:    make(chan struct{}),
	}
	s.mu.Lock()
	s.live[p.pid] = p
	s.tracked[p] = struct{}{}
	s.mu.Unlock()
	s.wg.Add(1)
	go p.wait()
	s.log.WithField("pid", p.pid).WithField("bin", spec.Bin).Debug("process started")
	return p, nil
}

// payloadEnv is the request's environment plus proc.DefaultPath when it has no
// PATH: nothing of the runtime's own environment reaches the payload.
func payloadEnv(env []string) []string {
	out := make([]string, 0, len(env)+1)
	hasPath := false
	for _, kv := range env {
		hasPath = hasPath || strings.HasPrefix(kv, "PATH=")
		out = append(out, kv)
	}
	if !hasPath {
		out = append(out, "PATH="+proc.DefaultPath)
	}
	return out
}

// wait marks the leader as exited before reaping it, so that Kill, which
// checks the mark under p.mu, never signals a group id the kernel may have
// handed to another process.
func (p *Process) wait() {
	defer p.sb.wg.Done()
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, int(p.pid), &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	p.mu.Lock()
	p.exited = true
	p.mu.Unlock()

	rc := int32(-1)
	state, err := p.proc.Wait()
	if err == nil {
		rc = proc.ReturnCode(state.Sys().(syscall.WaitStatus))
	} else {
		p.sb.log.WithError(err).WithField("pid", p.pid).Warn("wait for process")
	}
	p.rc = rc
	p.sb.mu.Lock()
	if p.sb.live[p.pid] == p {
		delete(p.sb.live, p.pid)
	}
	p.sb.mu.Unlock()
	p.sb.log.WithField("pid", p.pid).WithField("rc", rc).Debug("process exited")
	close(p.reaped)
}

func (p *Process) hasExited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

func (p *Process) signalGroup(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return fmt.Errorf("%w: pid %d has exited", sandbox.ErrNoProcess, p.pid)
	}
	// While the leader is not reaped its pid cannot be reused, so the group
	// id is still ours.
	err := unix.Kill(-int(p.pid), sig)
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("%w: pid %d", sandbox.ErrNoProcess, p.pid)
	}
	if err != nil {
		return fmt.Errorf("sandbox: kill pid %d with %v: %w", p.pid, sig, err)
	}
	return nil
}

// Stream starts delivering the process's events to sink: stdout chunks in
// order, stderr chunks in order (no order between the two streams), each at
// most sandbox.ChunkSize bytes, exactly the bytes written; then exactly one Exited
// event, after the process was reaped and both pipes reached EOF. Call it
// after the RunProcess reply was written (golem-protocol.md §1.8): nothing
// is read before, output waits in the pipes (a process that fills a pipe
// blocks until then).
//
// If the process has exited but a child it left behind (a background
// server) keeps a pipe open, Exited is delivered DrainTimeout after the
// exit; output read after that is discarded, so that such children neither
// block nor die of SIGPIPE.
//
// sink is called from the sandbox's goroutines, one call at a time per
// process (calls for different processes may run concurrently), and must
// not block long: it holds up the process's output. A nil sink discards
// events. Stream is a no-op when called again or after Close.
func (p *Process) Stream(sink func(sandbox.Event)) {
	if sink == nil {
		sink = func(sandbox.Event) {}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.streamed || p.released {
		return
	}
	p.streamed = true
	p.sink = sink
	p.openPipes.Store(2)
	p.sb.wg.Add(3)
	go p.pump(p.stdout, false)
	go p.pump(p.stderr, true)
	go p.finish()
}

func (p *Process) pump(f *os.File, isStderr bool) {
	defer p.sb.wg.Done()
	defer func() {
		f.Close()
		if p.openPipes.Add(-1) == 0 {
			close(p.drained)
		}
	}()
	buf := make([]byte, sandbox.ChunkSize)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			chunk := make([]byte, n)
			copy(chunk, buf[:n])
			ev := sandbox.Event{Pid: p.pid, Stdout: chunk}
			if isStderr {
				ev = sandbox.Event{Pid: p.pid, Stderr: chunk}
			}
			p.emit(ev)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				p.sb.log.WithError(err).WithField("pid", p.pid).Warn("read process output")
			}
			return
		}
	}
}

func (p *Process) emit(ev sandbox.Event) {
	p.emitMu.Lock()
	defer p.emitMu.Unlock()
	if p.exitSent {
		p.discarded += int64(len(ev.Stdout) + len(ev.Stderr))
		return
	}
	p.sink(ev)
}

func (p *Process) finish() {
	defer p.sb.wg.Done()
	<-p.reaped
	timer := time.NewTimer(p.sb.drainTimeout)
	select {
	case <-p.drained:
	case <-timer.C:
		p.sb.log.WithField("pid", p.pid).Info("process exited but its output pipes are still open (a background child?); reporting the exit, discarding later output")
	case <-p.sb.stopped:
		// Close killed everything in the namespace, so EOF is imminent
		// unless a process that left the namespace holds a pipe; do not
		// let that one hold up Close for the whole DrainTimeout.
		timer.Reset(min(p.sb.drainTimeout, closeDrainTimeout))
		select {
		case <-p.drained:
		case <-timer.C:
		}
	}
	timer.Stop()
	p.emitMu.Lock()
	p.exitSent = true
	p.sink(sandbox.Event{Pid: p.pid, Exited: true, ReturnCode: p.rc})
	p.emitMu.Unlock()
	p.markDone()

	// Untrack once the readers are finished too (at the latest when Close
	// closes the pipes).
	<-p.drained
	p.emitMu.Lock()
	if p.discarded > 0 {
		p.sb.log.WithField("pid", p.pid).WithField("bytes", p.discarded).Debug("discarded output after exit")
	}
	p.emitMu.Unlock()
	p.sb.mu.Lock()
	delete(p.sb.tracked, p)
	p.sb.mu.Unlock()
}

func (p *Process) markDone() { p.doneOnce.Do(func() { close(p.done) }) }

// release is Close's hand-over: no Stream after it. A process that was
// never streamed is done once reaped; its pipes are closed unread.
func (p *Process) release() {
	p.mu.Lock()
	p.released = true
	streamed := p.streamed
	p.mu.Unlock()
	if !streamed {
		p.sb.wg.Add(1)
		go func() {
			defer p.sb.wg.Done()
			<-p.reaped
			p.closePipes()
			p.markDone()
		}()
	}
}

func (p *Process) closePipes() {
	p.stdout.Close()
	p.stderr.Close()
}
