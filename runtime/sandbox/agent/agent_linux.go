// Package agent is gvpn-runtime's agent sandbox: the payload runs in a VM
// or container started by a configured command, with gvpn-agent inside,
// and the runtime reaches it over the bridge (package vsock,
// docs/bridge.md). A Box is both a sandbox.Sandbox (RunProcess and
// KillProcess go to the agent over the control connection) and the network
// manager's Attacher (CreateNetwork becomes a configure request, and the
// bridge's data connection is the payload's frame link).
//
// The runtime listens, the agent dials. The Box listens on the data and
// control addresses before it runs the command, and Open returns once the
// agent has said hello. If the agent's connections drop, the agent
// re-dials: a new data connection replaces the old one under the same
// link (vsock.Acceptor), and on a new control connection the Box sends the
// last configuration again. If the command exits, the payload is gone: its
// processes are reported exited (return code -1) and the command is run
// again with backoff, and the new agent is configured like the old one.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/offload"
	"github.com/gvpn/gvpn/runtime/owner"
	"github.com/gvpn/gvpn/runtime/proc"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/vsock"
)

// Defaults of the Config timeouts.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultStopTimeout = 5 * time.Second
)

// Environment variables the agent command gets.
const (
	EnvBridge   = "GVPN_BRIDGE"   // the data address the runtime listens on
	EnvControl  = "GVPN_CONTROL"  // the control address the runtime listens on
	EnvHostname = "GVPN_HOSTNAME" // the payload's hostname from deploy, when set
)

// tailSize is how much of the command's latest output an error quotes.
const tailSize = 2048

// Errors; returned errors wrap them.
var (
	// ErrAgentTimeout: the agent did not say hello, or did not answer a
	// request, in time.
	ErrAgentTimeout = errors.New("agent sandbox: no answer from gvpn-agent in time")
	// ErrAgentGone: the control connection failed before the answer.
	ErrAgentGone = errors.New("agent sandbox: the control connection to gvpn-agent was lost")
	// ErrCommandExited: the agent command ended before the agent said
	// hello.
	ErrCommandExited = errors.New("agent sandbox: the agent command exited")
)

// Config says how to start and reach the payload.
type Config struct {
	// Bridge is the data address the runtime listens on (unix:///path or
	// vsock://any:PORT).
	Bridge vsock.Addr
	// Control is the control address; the zero Addr means
	// Bridge.Control().
	Control vsock.Addr
	// SocketDir, when set, is a directory Open creates for the unix
	// sockets, mode 0700 whatever the umask, with an owner record (package
	// owner) so that a sweep removes it once this runtime is gone; Close
	// removes it. Open fails if a live runtime owns it, and replaces it if
	// its owner is dead.
	SocketDir string
	// Command starts the payload with gvpn-agent inside; it is run with
	// /bin/sh -c in its own process group, with GVPN_BRIDGE and
	// GVPN_CONTROL set to the listening addresses. It must stay in the
	// foreground for the payload's life: when it exits, the payload is
	// considered gone.
	Command string
	// Argv, when set instead of Command, is the launcher's program and
	// arguments, run directly (no shell) in the same way.
	Argv []string
	// Launcher names the command in logs and errors ("QEMU"); empty means
	// "the agent command".
	Launcher string
	// Kind is the sandbox's name in logs; empty means "agent".
	Kind string
	// Lazy makes Open return once the command runs, without waiting for
	// the agent's hello: a payload that boots slowly (a VM) then boots
	// while the ExeUnit goes on, and the first request waits for the hello
	// up to Timeout. A request fails with ErrAgentTimeout, or at once with
	// ErrCommandExited when the command ended before the hello; either
	// error quotes the command's last output.
	Lazy bool
	// Dir is the command's working directory; empty means the runtime's.
	Dir string
	// Env is added to the runtime's environment for the command.
	Env []string
	// Timeout bounds the wait for the agent's hello (in Open) and for each
	// answer to a request; zero means DefaultTimeout.
	Timeout time.Duration
	// StopTimeout bounds the wait for shutdown_done, and then how long the
	// command gets after SIGTERM before SIGKILL; zero means
	// DefaultStopTimeout.
	StopTimeout time.Duration
	// NoVNetHdr keeps the bridge's data connection to plain frames: the
	// Box never asks the agent for superframes (docs/bridge.md §2.4), as a
	// runtime older than them would not, and the agent then segments and
	// coalesces at its own TAP.
	NoVNetHdr bool
	// Restart bounds the delays before the command is run again after it
	// exited; zero fields take vsock's defaults.
	Restart vsock.BackoffOptions
	// Output receives the command's stdout and stderr (the agent's logs);
	// nil discards them. Never the runtime's stdout: that is the ExeUnit's.
	Output io.Writer
	// Log receives the Box's logs; nil discards them.
	Log *logrus.Entry

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
	// The image's settings for every payload process
	// (sandbox.ProcessSpec.WithDefaults): ProcessEnv under the request's
	// environment, ProcessDir when the request gives no directory, and
	// ProcessUser, the image's User, which the agent resolves in its root
	// (vsock.Run.User).
	ProcessEnv  []string
	ProcessDir  string
	ProcessUser string
}

// Box is a running agent sandbox. Its methods are safe for concurrent use.
type Box struct {
	cfg     Config
	log     *logrus.Entry
	control vsock.Addr
	data    *vsock.Acceptor // frames behind virtio-net headers
	off     *offload.Link   // data as plain MTU-sized frames, under the link Attach returns
	counts  agentCounters   // the agent's reports (vsock.Counters)
	ctlL    net.Listener
	tail    *tailBuffer
	ownDir  bool // SocketDir holds this Box's sockets: Close removes it

	nextID atomic.Uint64

	mu          sync.Mutex
	closed      bool
	attached    bool
	sess        *session
	changed     chan struct{} // closed and replaced when sess changes
	procs       map[uint64]*process
	configured  *vsock.Configure // last configuration the agent accepted
	superframes bool             // off glues superframes (bridgeFramingLocked)
	hello       chan struct{}    // closed at the first hello
	helloOnce   sync.Once

	stopCtx   context.Context // cancelled by Close once the agent was asked to shut down
	stop      context.CancelFunc
	stopping  <-chan struct{} // stopCtx.Done()
	cmdExited chan error      // the first run's exit, for Open
	launchErr error           // Lazy: why no agent will come (under mu)
	cmdMu     sync.Mutex
	cmd       *exec.Cmd // the running command, nil between runs
	cmdDone   chan struct{}

	limits *limits.Set // the command's cgroup and disk; empty without LimitsName

	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

var (
	_ sandbox.Sandbox = (*Box)(nil)
	_ interface {
		Attach(context.Context, netcfg.LinkConfig, map[string]string) (link.Link, error)
	} = (*Box)(nil)
)

// Open listens on the bridge, runs the agent command and waits until the
// agent has said hello on the control connection. It fails with
// ErrAgentTimeout when no hello comes within Timeout, and with
// ErrCommandExited when the command ends first; either error quotes the
// command's last output. On failure nothing is left behind.
func Open(ctx context.Context, cfg Config) (*Box, error) {
	if strings.TrimSpace(cfg.Command) == "" && len(cfg.Argv) == 0 {
		return nil, errors.New("agent sandbox: no agent command")
	}
	if cfg.Launcher == "" {
		cfg.Launcher = "the agent command"
	}
	if cfg.Kind == "" {
		cfg.Kind = "agent"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	log := cfg.Log
	if log == nil {
		l := logrus.New()
		l.Out = io.Discard
		log = logrus.NewEntry(l)
	}
	if cfg.Output == nil {
		cfg.Output = io.Discard
	}
	control := cfg.Control
	if control == (vsock.Addr{}) {
		c, err := cfg.Bridge.Control()
		if err != nil {
			return nil, err
		}
		control = c
	} else if err := control.Validate(); err != nil {
		return nil, err
	}
	b := &Box{
		cfg:       cfg,
		log:       log.WithField("sandbox", cfg.Kind),
		control:   control,
		tail:      &tailBuffer{},
		changed:   make(chan struct{}),
		procs:     make(map[uint64]*process),
		hello:     make(chan struct{}),
		cmdExited: make(chan error, 1),
		limits:    &limits.Set{},
	}
	b.stopCtx, b.stop = context.WithCancel(context.Background())
	b.stopping = b.stopCtx.Done()
	if cfg.SocketDir != "" {
		if err := claimSocketDir(cfg.SocketDir, b.log); err != nil {
			return nil, err
		}
		b.ownDir = true
	}
	fail := func(err error) (*Box, error) {
		b.Close()
		return nil, err
	}
	if err := b.openLimits(); err != nil {
		return fail(err)
	}
	var err error
	if b.data, err = vsock.ListenAcceptor(cfg.Bridge, b.log, vsock.WithVNetHdr()); err != nil {
		return fail(err)
	}
	// The agent's superframes are cut here, at the ExeUnit's boundary,
	// into the frames the pump filters and counts; frames for the agent
	// are glued only while it has agreed to take superframes.
	b.off = offload.NewLink(b.data)
	b.off.SetCoalescing(false)
	if b.ctlL, err = vsock.Listen(control); err != nil {
		return fail(err)
	}
	b.log.WithFields(logrus.Fields{"bridge": cfg.Bridge.String(), "control": control.String()}).Info("listening for gvpn-agent")
	b.wg.Add(2)
	go b.acceptControl()
	go b.supervise()
	if cfg.Lazy {
		return b, nil
	}

	t := time.NewTimer(cfg.Timeout)
	defer t.Stop()
	select {
	case <-b.hello:
		return b, nil
	case err := <-b.cmdExited:
		return fail(b.exitedEarly(err))
	case <-t.C:
		return fail(fmt.Errorf("%w: no hello on %s within %v (does the command start gvpn-agent, and can it reach %s?)%s",
			ErrAgentTimeout, control, cfg.Timeout, "$"+EnvControl, b.tail.quote()))
	case <-ctx.Done():
		return fail(fmt.Errorf("agent sandbox: waiting for the agent's hello: %w", ctx.Err()))
	}
}

// Bridge returns the data address the Box listens on.
func (b *Box) Bridge() vsock.Addr { return b.cfg.Bridge }

// Control returns the control address the Box listens on.
func (b *Box) Control() vsock.Addr { return b.control }

// Attach implements network.Attacher: it sends the configuration to the
// agent, waits until the agent confirms it and returns the bridge's data
// link (which then belongs to the caller). When the agent refuses the
// configuration because of an input of the ExeUnit's request (if_addr,
// mask, gateway, hosts), the error wraps a *netcfg.FieldError naming it, so
// the ExeUnit gets BAD_REQUEST; other refusals are plain errors carrying
// the agent's message.
func (b *Box) Attach(ctx context.Context, cfg netcfg.LinkConfig, hosts map[string]string) (link.Link, error) {
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return nil, sandbox.ErrClosed
	case b.attached:
		b.mu.Unlock()
		return nil, errors.New("agent sandbox: the bridge is attached already")
	}
	b.mu.Unlock()
	if len(cfg.More) > 0 {
		// The bridge's control protocol configures one address; the netns
		// sandbox takes any number.
		return nil, &netcfg.FieldError{Field: "networks", Value: fmt.Sprint(len(cfg.More) + 1),
			Reason: "the agent sandbox joins one VPN network per activity (use the netns sandbox for several)"}
	}

	mtu := cfg.MTU
	if mtu == 0 {
		mtu = netcfg.DefaultMTU
	}
	gw := ""
	if cfg.Net.Gateway.IsValid() {
		gw = cfg.Net.Gateway.String()
	}
	c := vsock.Configure{
		Name:    cfg.Name,
		IfAddr:  cfg.Net.IfAddr.String(),
		Mask:    net.IP(net.CIDRMask(cfg.Net.Prefix.Bits(), 32)).String(),
		Gateway: gw,
		MTU:     mtu,
	}
	if len(hosts) > 0 {
		c.Hosts = hosts
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	log := b.log.WithFields(logrus.Fields{"if": c.Name, "ip": c.IfAddr, "mask": c.Mask, "mtu": c.MTU})
	log.Info("configuring the agent's interface")
	for {
		r, err := b.request(ctx, b.configureFor(c))
		if errors.Is(err, ErrAgentGone) && ctx.Err() == nil {
			// Configuring twice is harmless (docs/bridge.md §5): try
			// again on the agent's next control connection.
			log.WithError(err).Warn("agent lost while configuring; retrying on its next connection")
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("configure the agent's interface: %w", err)
		}
		cr, ok := r.m.(vsock.Configured)
		if !ok {
			return nil, fmt.Errorf("agent sandbox: the agent answered configure with %q", r.m.Type())
		}
		if !cr.OK {
			log.WithFields(logrus.Fields{"error": cr.Error, "field": cr.Field}).Error("the agent refused the configuration")
			return nil, refusal(c, cr)
		}
		b.configuredBy(r)
		break
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, sandbox.ErrClosed
	}
	b.configured = &c
	b.attached = true
	log.Info("the agent's interface is configured")
	return &bridgeLink{Link: b.off, agent: &b.counts}, nil
}

// configureFor builds the configure request c for the session it goes to:
// superframes are asked for when the agent offered them (its hello) and
// the Box may use them.
func (b *Box) configureFor(c vsock.Configure) func(uint64, *session) vsock.Message {
	return func(id uint64, s *session) vsock.Message {
		c.ID = id
		c.VNetHdr = s.offersVNetHdr && !b.cfg.NoVNetHdr
		c.CountersMS = int(countersEvery / time.Millisecond)
		return c
	}
}

// configuredBy takes a successful configured answer: the bridge carries
// superframes when the configure asked for them and the agent confirmed.
func (b *Box) configuredBy(r reply) {
	cr, ok := r.m.(vsock.Configured)
	if !ok || r.s == nil {
		return
	}
	asked := r.s.offersVNetHdr && !b.cfg.NoVNetHdr
	if cr.VNetHdr && !asked {
		r.s.log.Warn("the agent confirmed superframes nobody asked for; the bridge stays with plain frames")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r.s.vnetHdr = asked && cr.VNetHdr
	if b.sess == r.s {
		b.bridgeFramingLocked()
	}
}

// bridgeFramingLocked makes the data link glue superframes for the agent
// while, and only while, the current control session agreed to them
// (docs/bridge.md §2.4); without a session, or before its configured,
// frames go plain. Frames from the agent are taken either way. b.mu must
// be held.
func (b *Box) bridgeFramingLocked() {
	on := b.sess != nil && b.sess.vnetHdr
	if b.off == nil || on == b.superframes {
		return
	}
	b.superframes = on
	b.off.SetCoalescing(on)
	if on {
		b.log.Info("bridge: superframes with virtio-net headers both ways (segmented here, at the ExeUnit's boundary)")
	} else {
		b.log.Info("bridge: plain frames to the agent")
	}
}

// claimSocketDir creates dir for this runtime (see Config.SocketDir).
func claimSocketDir(dir string, log *logrus.Entry) error {
	err := owner.Claim(dir)
	if errors.Is(err, os.ErrExist) {
		log.WithField("dir", dir).Warn("removing a socket directory left by a runtime that died")
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("agent sandbox: socket directory: %w", err)
		}
		err = owner.Claim(dir)
	}
	if err != nil {
		return fmt.Errorf("agent sandbox: socket directory: %w", err)
	}
	return nil
}

// refusal turns a negative configured answer into the error the network
// manager maps to the ExeUnit's error code.
func refusal(c vsock.Configure, cr vsock.Configured) error {
	msg := "refused by gvpn-agent: " + cr.Error
	switch cr.Field {
	case "if_addr":
		return &netcfg.FieldError{Field: "if_addr", Value: c.IfAddr, Reason: msg}
	case "mask":
		return &netcfg.FieldError{Field: "mask", Value: c.Mask, Reason: msg}
	case "gateway":
		return &netcfg.FieldError{Field: "gateway", Value: c.Gateway, Reason: msg}
	case "hosts":
		return &netcfg.FieldError{Field: "hosts", Value: hostsString(c.Hosts), Reason: msg}
	}
	// name and mtu come from the runtime's own flags, not from the
	// requestor: not a bad request.
	if cr.Field != "" {
		return fmt.Errorf("gvpn-agent could not configure %s (%s): %s", c.Name, cr.Field, cr.Error)
	}
	return fmt.Errorf("gvpn-agent could not configure %s: %s", c.Name, cr.Error)
}

func hostsString(h map[string]string) string {
	s := make([]string, 0, len(h))
	for k, v := range h {
		s = append(s, k+"="+v)
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

// Close shuts the payload down: it asks the agent to shut down (stop its
// processes, remove its interface) and waits for shutdown_done up to
// StopTimeout, then stops the command (SIGTERM to its process group, then
// SIGKILL after StopTimeout), closes the listeners (removing unix socket
// files and SocketDir), and delivers an exit event (return code -1) for
// every streamed process whose exit the agent did not report. No goroutine
// is left when it returns. Idempotent: later calls return nil.
func (b *Box) Close() error {
	first := false
	b.closeOnce.Do(func() {
		first = true
		b.closeErr = b.teardown()
	})
	if !first {
		return nil
	}
	return b.closeErr
}

func (b *Box) teardown() error {
	b.mu.Lock()
	b.closed = true // no new process, no restart of the command
	s := b.sess
	b.mu.Unlock()

	var errs []error
	if s != nil && b.commandRunning() {
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.StopTimeout)
		r, err := b.request(ctx, func(id uint64, _ *session) vsock.Message { return vsock.Shutdown{ID: id} })
		cancel()
		if err != nil {
			b.log.WithError(err).Warn("the agent did not confirm its shutdown; stopping the command")
		} else if _, ok := r.m.(vsock.ShutdownDone); ok {
			b.log.Info("the agent shut down")
		}
	}
	b.stop()
	b.stopCommand()
	if b.ctlL != nil {
		b.ctlL.Close()
	}
	b.mu.Lock()
	s = b.sess
	b.mu.Unlock()
	if s != nil {
		b.dropSession(s, errors.New("closing"))
	}
	if b.data != nil {
		st := b.off.Stats()
		b.log.WithFields(logrus.Fields{"dropped": b.data.Dropped(), "connections": b.data.Accepted(),
			"split_superframes": st.SplitSuperframes, "coalesced_superframes": st.CoalescedSuperframes,
			"malformed_superframes": st.Malformed}).Info("bridge data link closed")
		b.data.Close()
	}
	b.wg.Wait()
	b.finishAll("the sandbox closed")
	if err := b.closeLimits(); err != nil {
		errs = append(errs, fmt.Errorf("agent sandbox: %w", err))
	}
	if b.ownDir {
		if err := os.RemoveAll(b.cfg.SocketDir); err != nil {
			errs = append(errs, fmt.Errorf("agent sandbox: remove %s: %w", b.cfg.SocketDir, err))
		}
	}
	b.log.Debug("agent sandbox closed")
	return errors.Join(errs...)
}

// Start implements sandbox.Sandbox: a run request to the agent. The
// process's events are queued until Stream.
func (b *Box) Start(spec sandbox.ProcessSpec) (sandbox.Process, error) {
	if spec.Bin == "" {
		return nil, fmt.Errorf("%w: empty binary name", sandbox.ErrNotFound)
	}
	if b.isClosed() {
		return nil, sandbox.ErrClosed
	}
	argv := spec.Args
	if len(argv) == 0 {
		argv = []string{spec.Bin}
	}
	spec = spec.WithDefaults(b.cfg.ProcessEnv, b.cfg.ProcessDir)
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	r, err := b.request(ctx, func(id uint64, _ *session) vsock.Message {
		return vsock.Run{ID: id, Bin: spec.Bin, Args: argv, Dir: spec.Dir, Env: spec.Env, User: b.cfg.ProcessUser}
	})
	if err != nil {
		return nil, fmt.Errorf("run %s through gvpn-agent: %w", spec.Bin, err)
	}
	switch m := r.m.(type) {
	case vsock.Started:
		return r.p, nil
	case vsock.Failed:
		switch m.Reason {
		case vsock.FailedNotFound:
			return nil, fmt.Errorf("%w: %s", sandbox.ErrNotFound, m.Error)
		case vsock.FailedNotExecutable:
			return nil, fmt.Errorf("%w: %s", sandbox.ErrNotExecutable, m.Error)
		}
		return nil, fmt.Errorf("%w: %s", sandbox.ErrSetup, m.Error)
	}
	return nil, fmt.Errorf("agent sandbox: the agent answered run with %q", r.m.Type())
}

// Kill implements sandbox.Sandbox: a kill request to the agent. Signal 0
// means SIGKILL. A pid the agent did not start, or whose exit was
// reported, gives sandbox.ErrNoProcess.
func (b *Box) Kill(pid uint64, sig syscall.Signal) error {
	if sig == 0 {
		sig = syscall.SIGKILL
	}
	if sig < 1 || sig > proc.MaxSignal {
		return fmt.Errorf("agent sandbox: invalid signal %d", int(sig))
	}
	b.mu.Lock()
	p := b.procs[pid]
	b.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%w: pid %d", sandbox.ErrNoProcess, pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	r, err := b.request(ctx, func(id uint64, _ *session) vsock.Message {
		return vsock.Kill{ID: id, PID: int(pid), Signal: int(sig)}
	})
	if err != nil {
		return fmt.Errorf("kill pid %d through gvpn-agent: %w", pid, err)
	}
	k, ok := r.m.(vsock.Killed)
	if !ok {
		return fmt.Errorf("agent sandbox: the agent answered kill with %q", r.m.Type())
	}
	if !k.OK {
		// The agent refuses a kill only for a process it does not know
		// or that has exited (the signal was checked above).
		return fmt.Errorf("%w: %s", sandbox.ErrNoProcess, k.Error)
	}
	return nil
}

func (b *Box) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
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

// exitedEarly is the error for a command that ended (with err) before the
// agent said hello.
func (b *Box) exitedEarly(err error) error {
	return fmt.Errorf("%w: %s ended before the agent said hello (%v)%s", ErrCommandExited, b.cfg.Launcher, err, b.tail.quote())
}

// commandRunning reports whether a run of the command is under way.
func (b *Box) commandRunning() bool {
	b.cmdMu.Lock()
	defer b.cmdMu.Unlock()
	return b.cmd != nil
}

// supervise runs the command, and again after it exits, until Close.
func (b *Box) supervise() {
	defer b.wg.Done()
	backoff := vsock.NewBackoff(b.cfg.Restart)
	for run := 0; ; run++ {
		if run > 0 {
			t := time.NewTimer(backoff.Next())
			select {
			case <-t.C:
			case <-b.stopping:
				t.Stop()
				return
			}
			b.log.Infof("running %s again", b.cfg.Launcher)
		}
		started := time.Now()
		err := b.runCommand()
		helloSeen := false
		select {
		case <-b.hello:
			helloSeen = true
		default:
		}
		if !helloSeen {
			b.cmdExited <- err
			b.mu.Lock()
			b.launchErr = b.exitedEarly(err)
			close(b.changed)
			b.changed = make(chan struct{})
			b.mu.Unlock()
			return
		}
		// The agent went with its command. Retire its control session now
		// rather than when its connection's EOF is read, so that a request
		// made after the processes are reported gone waits for the next
		// agent instead of going to the dead one.
		closing := b.isClosed()
		if !closing {
			b.log.WithError(err).Warnf("%s exited: the payload is gone; its processes are reported exited (-1)%s", b.cfg.Launcher, b.tail.quote())
		}
		b.dropCurrentSession(errAgentCommandExited)
		b.finishAll(b.cfg.Launcher + " exited")
		if closing || b.isClosed() {
			return
		}
		if time.Since(started) >= backoff.Options().Max {
			backoff.Reset()
		}
	}
}

// runCommand runs the command once and returns how it ended.
func (b *Box) runCommand() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	argv := []string{"/bin/sh", "-c", b.cfg.Command}
	if len(b.cfg.Argv) > 0 {
		argv = b.cfg.Argv
	}
	argv, cgFiles, err := b.limitArgv(argv)
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
	cmd.Dir = b.cfg.Dir
	cmd.Env = append(os.Environ(), b.cfg.Env...)
	cmd.Env = append(cmd.Env, EnvBridge+"="+b.cfg.Bridge.String(), EnvControl+"="+b.control.String())
	cmd.Env = append(cmd.Env, limitEnv(b.cfg.Limits)...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	b.cmdMu.Lock()
	if b.isClosed() {
		b.cmdMu.Unlock()
		r.Close()
		w.Close()
		return errors.New("closing")
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		b.cmdMu.Unlock()
		r.Close()
		return fmt.Errorf("start %s: %w", strings.Join(cmd.Args, " "), err)
	}
	// The launcher (QEMU, a container) holds the payload's memory: when
	// memory runs out, it goes first, not the runtime. Its children
	// inherit the value; the ones it forked in this instant keep the
	// runtime's.
	if err := proc.SetOOMScoreAdj(cmd.Process.Pid, proc.OOMPayload); err != nil {
		b.log.WithError(err).Warn("cannot make the payload's launcher the OOM killer's first choice")
	}
	done := make(chan struct{})
	b.cmd, b.cmdDone = cmd, done
	b.cmdMu.Unlock()
	b.log.WithFields(logrus.Fields{"pid": cmd.Process.Pid, "command": strings.Join(cmd.Args, " ")}).Infof("%s started", b.cfg.Launcher)

	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(io.MultiWriter(b.cfg.Output, b.tail), r)
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
	b.cmdMu.Lock()
	state, werr := cmd.Process.Wait()
	b.cmd, b.cmdDone = nil, nil
	b.cmdMu.Unlock()
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

// stopCommand ends a running command: SIGTERM to its group, SIGKILL after
// StopTimeout.
func (b *Box) stopCommand() {
	b.cmdMu.Lock()
	cmd, done := b.cmd, b.cmdDone
	if cmd != nil {
		// The leader is not reaped before cmdMu is released, so the group
		// id is still the command's.
		_ = unix.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
	b.cmdMu.Unlock()
	if cmd == nil {
		return
	}
	t := time.NewTimer(b.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	b.log.Warnf("%s ignored SIGTERM; sending SIGKILL", b.cfg.Launcher)
	b.cmdMu.Lock()
	if b.cmd == cmd {
		_ = unix.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	b.cmdMu.Unlock()
	<-done
}
