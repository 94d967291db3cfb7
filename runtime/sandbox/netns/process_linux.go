//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/proc"
	"github.com/gvpn/gvpn/runtime/sandbox"
)

// Process is a process started by Sandbox.Start: its supervision (output,
// exit, signals) is runtime/proc's Supervisor.
type Process struct {
	sb  *Sandbox
	pid uint64
	sup *proc.Supervisor
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

	p := &Process{sb: s, pid: uint64(cmd.Process.Pid)}
	p.sup = proc.NewSupervisor(cmd.Process, outR, errR, proc.SuperviseConfig{
		Log:          s.log,
		ChunkSize:    sandbox.ChunkSize,
		DrainTimeout: s.drainTimeout,
		Stop:         s.stopped,
		StopDrain:    closeDrainTimeout,
		WG:           &s.wg,
		Reaped:       p.untrack,
		Finished: func() {
			s.mu.Lock()
			delete(s.tracked, p)
			s.mu.Unlock()
		},
	})
	s.mu.Lock()
	s.live[p.pid] = p
	s.tracked[p] = struct{}{}
	s.mu.Unlock()
	p.sup.Watch()
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

// untrack forgets p's pid, which may be reused from now on.
func (p *Process) untrack(rc int32) {
	p.sb.mu.Lock()
	if p.sb.live[p.pid] == p {
		delete(p.sb.live, p.pid)
	}
	p.sb.mu.Unlock()
	p.sb.log.WithField("pid", p.pid).WithField("rc", rc).Debug("process exited")
}

func (p *Process) hasExited() bool { return p.sup.Exited() }

func (p *Process) signalGroup(sig syscall.Signal) error {
	err := p.sup.Signal(sig)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, proc.ErrExited):
		return fmt.Errorf("%w: pid %d has exited", sandbox.ErrNoProcess, p.pid)
	case errors.Is(err, unix.ESRCH):
		return fmt.Errorf("%w: pid %d", sandbox.ErrNoProcess, p.pid)
	}
	return fmt.Errorf("sandbox: kill pid %d with %v: %w", p.pid, sig, err)
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
	p.sup.Stream(func(chunk []byte, isStderr bool) {
		if isStderr {
			sink(sandbox.Event{Pid: p.pid, Stderr: chunk})
		} else {
			sink(sandbox.Event{Pid: p.pid, Stdout: chunk})
		}
	}, func(rc int32) {
		sink(sandbox.Event{Pid: p.pid, Exited: true, ReturnCode: rc})
	})
}

// release is Close's hand-over: no Stream after it. A process that was
// never streamed is done once reaped; its pipes are closed unread.
func (p *Process) release() { p.sup.Release() }

// done is closed when Exited was delivered, or at Close for a never-streamed
// process.
func (p *Process) done() <-chan struct{} { return p.sup.Done() }

func (p *Process) closePipes() { p.sup.ClosePipes() }
