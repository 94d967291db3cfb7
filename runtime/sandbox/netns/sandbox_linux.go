//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/netcfg/nsthread"
	"github.com/gvpn/gvpn/runtime/sandbox"
)

// Where named namespaces and hosts files live. Variables only so that the
// layout is stated once; nothing changes them.
var (
	netnsDir = nsthread.RunDir
	runDir   = "/run/gvpn"
)

// Defaults for the Config timeouts.
const (
	DefaultStopTimeout  = 2 * time.Second
	DefaultDrainTimeout = time.Second
)

// Deadlock guards (not behaviour): how long Start waits for the shim's
// report, how long teardown waits for SIGKILLed processes to vanish.
const (
	shimReportTimeout = 10 * time.Second
	killTimeout       = 2 * time.Second
	// closeDrainTimeout bounds how long Close waits for output pipes to
	// reach EOF once every process in the namespace is dead.
	closeDrainTimeout = 500 * time.Millisecond
)

// Config describes a sandbox.
type Config struct {
	// Workdir is the activity's working directory. The namespace name is
	// derived from its absolute path (see NameFor), and it is the working
	// directory of processes whose sandbox.ProcessSpec.Dir is empty. Required.
	Workdir string
	// Hostname, when set, gives every process its own UTS namespace with
	// this hostname and adds "127.0.1.1 Hostname" to the hosts file. It
	// must pass netcfg.CheckHostname.
	Hostname string
	// Log receives the sandbox's logs; nil means logrus.StandardLogger().
	Log *logrus.Entry
	// NamePrefix starts the namespace name; empty means DefaultPrefix. It
	// must not contain '/'. Tests use their own prefix.
	NamePrefix string
	// StopTimeout is how long Close waits after SIGTERM before it
	// SIGKILLs what is left; zero means DefaultStopTimeout.
	StopTimeout time.Duration
	// DrainTimeout is how long a reaped process's Exited event waits for
	// its output pipes to reach EOF; see Process.Stream. Zero means
	// DefaultDrainTimeout.
	DrainTimeout time.Duration
}

// Sandbox is one activity's network namespace, hosts file and processes.
// Its methods are safe for concurrent use.
type Sandbox struct {
	name         string
	workdir      string
	hostname     string
	hostsPath    string
	log          *logrus.Entry
	stopTimeout  time.Duration
	drainTimeout time.Duration

	ns      netns.NsHandle
	nsID    nsID
	starter *starter

	// life is held for reading by Start from its closed check until the
	// process is registered, and for writing by Close to set closed: no
	// process can appear after Close has begun.
	life   sync.RWMutex
	closed bool

	mu      sync.Mutex
	live    map[uint64]*Process   // pid → process whose leader is not reaped
	tracked map[*Process]struct{} // processes whose pipes or goroutines remain

	stopped   chan struct{}  // closed by Close once every process was killed
	wg        sync.WaitGroup // every goroutine of every process
	closeOnce sync.Once
	closeErr  error
}

// A Sandbox is both halves of the netns sandbox: the service's sandbox and
// the network manager's attacher (see Attach).
var _ sandbox.Sandbox = (*Sandbox)(nil)

// Open creates the sandbox for cfg.Workdir: a named network namespace
// (like `ip netns add NAME`) with lo up, and the hosts file
// /run/gvpn/NAME/hosts (mode 0644) holding the localhost lines. If a
// sandbox of that name already exists — a previous runtime for the same
// workdir crashed — every process still in its namespace is killed and it
// is removed first (logged at warn level). Two live sandboxes for one
// workdir are not supported.
func Open(cfg Config) (*Sandbox, error) {
	if cfg.Workdir == "" {
		return nil, fmt.Errorf("%w: empty workdir", ErrBadConfig)
	}
	if strings.ContainsAny(cfg.NamePrefix, "/\x00") {
		return nil, fmt.Errorf("%w: name prefix %q contains '/' or NUL", ErrBadConfig, cfg.NamePrefix)
	}
	if cfg.Hostname != "" {
		if err := netcfg.CheckHostname(cfg.Hostname); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
		}
	}
	workdir, err := filepath.Abs(cfg.Workdir)
	if err != nil {
		return nil, fmt.Errorf("%w: workdir: %v", ErrBadConfig, err)
	}
	log := cfg.Log
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	name := NameFor(cfg.NamePrefix, workdir)
	log = log.WithField("sandbox", name)
	s := &Sandbox{
		name:         name,
		workdir:      workdir,
		hostname:     cfg.Hostname,
		hostsPath:    filepath.Join(runDir, name, "hosts"),
		log:          log,
		stopTimeout:  orDefault(cfg.StopTimeout, DefaultStopTimeout),
		drainTimeout: orDefault(cfg.DrainTimeout, DefaultDrainTimeout),
		ns:           netns.None(),
		live:         make(map[uint64]*Process),
		tracked:      make(map[*Process]struct{}),
		stopped:      make(chan struct{}),
	}

	found, err := cleanupName(name, log)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: remove stale sandbox: %w", name, err)
	}
	if found {
		log.Warn("removed a stale sandbox left by a previous run (processes in it were killed)")
	}
	if err := s.create(); err != nil {
		s.destroy()
		return nil, fmt.Errorf("sandbox %s: %w", name, err)
	}
	log.WithField("workdir", workdir).Debug("sandbox open")
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// create makes the namespace, brings lo up, writes the hosts file and
// starts the thread that forks processes inside the namespace. On error the
// caller runs destroy.
func (s *Sandbox) create() error {
	ns, err := nsthread.NewNamed(s.name)
	if err != nil {
		return fmt.Errorf("create netns: %w", err)
	}
	s.ns = ns
	if s.nsID, err = nsIDOfFD(int(ns)); err != nil {
		return fmt.Errorf("stat netns: %w", err)
	}
	if err := linkUpLo(ns); err != nil {
		return err
	}
	if err := writeHostsFile(s.hostsPath, s.hostname); err != nil {
		return err
	}
	if s.starter, err = newStarter(ns); err != nil {
		return fmt.Errorf("enter netns: %w", err)
	}
	return nil
}

func linkUpLo(ns netns.NsHandle) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in netns: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// hostsContent is the initial hosts file: what a Debian host has for
// localhost, plus the sandbox's own hostname on 127.0.1.1.
func hostsContent(hostname string) []byte {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	if hostname != "" {
		b.WriteString("127.0.1.1\t" + hostname + "\n")
	}
	return []byte(b.String())
}

func writeHostsFile(path, hostname string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("hosts dir: %w", err)
	}
	if err := os.WriteFile(path, hostsContent(hostname), 0o644); err != nil {
		return fmt.Errorf("hosts file: %w", err)
	}
	// WriteFile's mode is subject to the umask; processes must be able to
	// read the file whatever user they switch to.
	if err := os.Chmod(path, 0o644); err != nil {
		return fmt.Errorf("hosts file: %w", err)
	}
	return nil
}

// Name is the network namespace name, as `ip netns list` shows it.
func (s *Sandbox) Name() string { return s.name }

// NetNS is a handle of the sandbox's network namespace (to create the TAP
// in it, configure addresses). It is owned by the sandbox and valid until
// Close; do not close it.
func (s *Sandbox) NetNS() netns.NsHandle { return s.ns }

// HostsPath is the sandbox's hosts file, bind-mounted over /etc/hosts in
// every process. Change it in place (open with O_TRUNC or O_APPEND and
// write, as os.WriteFile does), never by renaming another file over it:
// running processes see this inode through their bind mount. Processes
// started later see the change at once, running ones when they reread
// the file.
func (s *Sandbox) HostsPath() string { return s.hostsPath }

// Kill sends sig to the process group of the process pid (Start puts each
// process in its own group, so its children get the signal too). Signal 0
// means SIGKILL: the wire's KillProcess carries 0 when the requestor did
// not choose one. It returns sandbox.ErrNoProcess (wrapped) if pid was not started
// by this sandbox or its process has already exited, even if the Exited
// event is still on its way.
func (s *Sandbox) Kill(pid uint64, sig syscall.Signal) error {
	if sig == 0 {
		sig = syscall.SIGKILL
	}
	s.mu.Lock()
	p := s.live[pid]
	s.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%w: pid %d", sandbox.ErrNoProcess, pid)
	}
	return p.signalGroup(sig)
}

// Close tears the sandbox down: SIGTERM to every process group and every
// other process in the namespace; after StopTimeout (or as soon as all are
// gone) SIGKILL to whatever is left; then it waits until every streamed
// process's Exited event was delivered, so the caller may flush them when
// Close returns; then it removes the namespace and the hosts file
// directory. Processes never streamed get no events. With the default
// StopTimeout Close returns within about 2 s even if processes ignore
// SIGTERM. Close is idempotent: later calls return nil.
func (s *Sandbox) Close() error {
	first := false
	s.closeOnce.Do(func() {
		first = true
		s.closeErr = s.teardown()
	})
	if !first {
		return nil
	}
	return s.closeErr
}

func (s *Sandbox) teardown() error {
	s.life.Lock()
	s.closed = true
	s.life.Unlock()

	var errs []error
	if !s.stopProcesses() {
		errs = append(errs, fmt.Errorf("sandbox %s: processes survived SIGKILL", s.name))
	}
	close(s.stopped)
	if err := s.finishProcesses(); err != nil {
		errs = append(errs, err)
	}
	if s.starter != nil {
		s.starter.stop()
	}
	errs = append(errs, s.destroy())
	s.log.Debug("sandbox closed")
	return errors.Join(errs...)
}

// stopProcesses terminates every process: first politely, then not. It
// reports whether the namespace ended empty.
func (s *Sandbox) stopProcesses() bool {
	s.signalAll(syscall.SIGTERM)
	deadline := time.Now().Add(s.stopTimeout)
	for !s.empty() {
		if time.Now().After(deadline) {
			s.log.Warn("processes ignored SIGTERM; sending SIGKILL")
			s.signalAll(syscall.SIGKILL)
			_, empty := killAllIn(s.nsID, killTimeout)
			if !empty {
				s.log.Error("processes survived SIGKILL in the sandbox")
			}
			return empty
		}
		time.Sleep(pollInterval)
	}
	return true
}

// signalAll signals every group whose leader is alive, then every process
// in the namespace (daemons that left their group).
func (s *Sandbox) signalAll(sig syscall.Signal) {
	s.mu.Lock()
	procs := make([]*Process, 0, len(s.live))
	for _, p := range s.live {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	for _, p := range procs {
		_ = p.signalGroup(sig)
	}
	if _, err := signalIn(s.nsID, sig); err != nil {
		s.log.WithError(err).Warn("scan processes in sandbox")
	}
}

// empty reports whether no started process is unreaped and no process is
// left in the namespace.
func (s *Sandbox) empty() bool {
	s.mu.Lock()
	n := 0
	for _, p := range s.live {
		if !p.hasExited() {
			n++
		}
	}
	s.mu.Unlock()
	if n > 0 {
		return false
	}
	pids, err := pidsIn(s.nsID)
	return err == nil && len(pids) == 0
}

// finishProcesses waits, after all processes were killed, for them to be
// reaped and for streamed processes to deliver their Exited event, then
// closes every pipe and waits for every goroutine.
func (s *Sandbox) finishProcesses() error {
	s.mu.Lock()
	procs := make([]*Process, 0, len(s.tracked))
	for p := range s.tracked {
		procs = append(procs, p)
	}
	s.mu.Unlock()

	var errs []error
	for _, p := range procs {
		p.release()
	}
	guard := time.NewTimer(killTimeout + closeDrainTimeout)
	defer guard.Stop()
	expired := false
	for _, p := range procs {
		if !expired {
			select {
			case <-p.done:
			case <-guard.C:
				expired = true
			}
		}
		select {
		case <-p.done:
		default:
			errs = append(errs, fmt.Errorf("sandbox %s: pid %d: exit not delivered in time", s.name, p.pid))
		}
	}
	// Output pipes still held by processes that escaped the namespace must
	// not keep readers (and so Close) waiting.
	for _, p := range procs {
		p.closePipes()
	}
	// Only a process that survived SIGKILL (stuck in the kernel) keeps a
	// goroutine waiting now; Close must return anyway.
	waited := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-time.After(killTimeout):
		errs = append(errs, fmt.Errorf("sandbox %s: process goroutines did not finish", s.name))
	}
	return errors.Join(errs...)
}

// destroy removes the namespace and the hosts directory; used by Close and
// by a failed Open.
func (s *Sandbox) destroy() error {
	var errs []error
	if s.ns.IsOpen() {
		if err := s.ns.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close netns handle: %w", err))
		}
		if err := nsthread.DeleteNamed(s.name); err != nil {
			errs = append(errs, fmt.Errorf("sandbox %s: delete netns: %w", s.name, err))
		}
	}
	if err := os.RemoveAll(filepath.Dir(s.hostsPath)); err != nil {
		errs = append(errs, fmt.Errorf("sandbox %s: remove hosts dir: %w", s.name, err))
	}
	return errors.Join(errs...)
}

// Cleanup removes the sandbox for workdir left behind by a runtime that did
// not Close it (crash, SIGKILL): it kills every process in its namespace,
// deletes the namespace and the hosts directory. It is a no-op if there is
// none. Do not call it for a sandbox that is open in this process.
func Cleanup(prefix, workdir string) error {
	name := NameFor(prefix, workdir)
	log := logrus.WithField("sandbox", name)
	found, err := cleanupName(name, log)
	if found && err == nil {
		log.Warn("removed a stale sandbox")
	}
	return err
}

func cleanupName(name string, log *logrus.Entry) (found bool, err error) {
	nsPath := filepath.Join(netnsDir, name)
	if _, err := os.Lstat(nsPath); err == nil {
		found = true
		if id, err := nsIDOfPath(nsPath); err == nil {
			n, empty := killAllIn(id, killTimeout)
			if n > 0 {
				log.WithField("killed", n).Warn("killed processes left in a stale sandbox")
			}
			if !empty {
				return found, fmt.Errorf("processes in stale netns %s survived SIGKILL", name)
			}
		}
		if err := nsthread.DeleteNamed(name); err != nil {
			return found, fmt.Errorf("delete stale netns %s: %w", name, err)
		}
	}
	dir := filepath.Join(runDir, name)
	if _, err := os.Lstat(dir); err == nil {
		found = true
		if err := os.RemoveAll(dir); err != nil {
			return found, fmt.Errorf("remove stale hosts dir: %w", err)
		}
	}
	return found, nil
}

// List returns the names of existing sandboxes (a named namespace or a
// hosts directory) that start with prefix (DefaultPrefix when empty),
// sorted. Use it to find leaks.
func List(prefix string) ([]string, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	seen := map[string]bool{}
	for _, dir := range []string{netnsDir, runDir} {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				seen[e.Name()] = true
			}
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// starter owns one OS thread that lives in the sandbox's namespace for the
// sandbox's lifetime; every process is forked from it, so it starts in the
// namespace (a fork inherits the forking thread's namespaces).
//
// A dedicated thread rather than a switch in and out per Start because
// Pdeathsig is tied to the thread that forked the child, not to the
// process: a pooled thread may later be discarded by unrelated code (a
// goroutine that exits while locked), which would SIGKILL the payload.
// This thread is discarded deliberately at Close, after every process is
// gone; if the runtime dies, the kernel kills the direct children.
type starter struct {
	reqs chan startReq
	done chan struct{}
}

type startReq struct {
	cmd *exec.Cmd
	res chan error
}

func newStarter(ns netns.NsHandle) (*starter, error) {
	st := &starter{reqs: make(chan startReq), done: make(chan struct{})}
	ready := make(chan error, 1)
	go st.run(ns, ready)
	if err := <-ready; err != nil {
		<-st.done
		return nil, err
	}
	return st, nil
}

func (st *starter) run(ns netns.NsHandle, ready chan<- error) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// Not the main thread: the runtime cannot end it, and
		// /proc/PID/ns/net (what `ip netns identify` and others read)
		// shows the main thread's namespace. A goroutine started while
		// this one holds the main thread gets another thread.
		go st.run(ns, ready)
		runtime.UnlockOSThread()
		return
	}
	defer close(st.done)
	if err := netns.Set(ns); err != nil {
		// setns failed, so the thread is still where it was.
		runtime.UnlockOSThread()
		ready <- err
		return
	}
	ready <- nil
	for req := range st.reqs {
		req.res <- req.cmd.Start()
	}
	// Return while locked: the runtime ends this thread instead of
	// reusing it in the wrong namespace.
}

func (st *starter) start(cmd *exec.Cmd) error {
	res := make(chan error, 1)
	st.reqs <- startReq{cmd: cmd, res: res}
	return <-res
}

// stop ends the thread. Only after the last start returned.
func (st *starter) stop() {
	close(st.reqs)
	<-st.done
}
