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
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/netcfg"
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
	// Launch is the command that starts the payload with gvpn-agent
	// inside; it gets GVPN_BRIDGE and GVPN_CONTROL.
	Launch Launch
	// Kind is the sandbox's name in logs; empty means "agent".
	Kind string
	// Lazy makes Open return once the command runs, without waiting for
	// the agent's hello: a payload that boots slowly (a VM) then boots
	// while the ExeUnit goes on, and the first request waits for the hello
	// up to Timeout. A request fails with ErrAgentTimeout, or at once with
	// ErrCommandExited when the command ended before the hello; either
	// error quotes the command's last output.
	Lazy bool
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
	// Log receives the Box's logs; nil discards them.
	Log *logrus.Entry

	// The image's settings for every payload process
	// (sandbox.ProcessSpec.WithDefaults): ProcessEnv under the request's
	// environment, ProcessDir when the request gives no directory, and
	// ProcessUser, the image's User, which the agent resolves in its root
	// (vsock.Run.User).
	ProcessEnv  []string
	ProcessDir  string
	ProcessUser string
}

// Box is a running agent sandbox: a launcher that runs the command
// bringing the payload up, the control session with the agent inside, and
// the table of the payload's processes, which the session fills; the Box
// joins them (when the command exits, the session's current connection is
// dropped and the table's processes are reported exited) and owns the
// bridge's data link. Its methods are safe for concurrent use.
type Box struct {
	cfg    Config
	log    *logrus.Entry
	launch *launcher
	ctl    *control
	procs  *processTable
	counts agentCounters   // the agent's reports (vsock.Counters)
	data   *vsock.Acceptor // frames behind virtio-net headers
	off    *offload.Link   // data as plain MTU-sized frames, under the link Attach returns
	ownDir bool            // SocketDir holds this Box's sockets: Close removes it

	closed    atomic.Bool // no new process, no new run of the command
	attached  atomic.Bool
	closeOnce sync.Once
}

var (
	_ sandbox.Sandbox = (*Box)(nil)
	_ interface {
		Attach(context.Context, netcfg.LinkConfig, map[string]string) (link.Link, error)
	} = (*Box)(nil)
)

// errHelloTimeout ends Open's wait for the hello after Config.Timeout.
var errHelloTimeout = errors.New("no hello in time")

// Open listens on the bridge, runs the agent command and waits until the
// agent has said hello on the control connection. It fails with
// ErrAgentTimeout when no hello comes within Timeout, and with
// ErrCommandExited when the command ends first; either error quotes the
// command's last output. On failure nothing is left behind.
func Open(ctx context.Context, cfg Config) (*Box, error) {
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
	cfg.Control = control
	b := &Box{cfg: cfg, log: log.WithField("sandbox", cfg.Kind)}
	b.procs = newProcessTable(b.log)
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
	env := []string{EnvBridge + "=" + cfg.Bridge.String(), EnvControl + "=" + control.String()}
	var err error
	if b.launch, err = newLauncher(cfg.Launch, env, cfg.StopTimeout, b.log); err != nil {
		return fail(err)
	}
	if b.data, err = vsock.ListenAcceptor(cfg.Bridge, b.log, vsock.WithVNetHdr()); err != nil {
		return fail(err)
	}
	// The agent's superframes are cut here, at the ExeUnit's boundary,
	// into the frames the pump filters and counts; frames for the agent
	// are glued only while it has agreed to take superframes.
	b.off = offload.NewLink(b.data)
	b.off.SetCoalescing(false)
	ctlL, err := vsock.Listen(control)
	if err != nil {
		return fail(err)
	}
	b.ctl = newControl(ctlL, controlConfig{log: b.log, timeout: cfg.Timeout, noVNetHdr: cfg.NoVNetHdr,
		procs: b.procs, counts: &b.counts, framing: b.setFraming, noHello: b.noHello})
	b.log.WithFields(logrus.Fields{"bridge": cfg.Bridge.String(), "control": control.String()}).Info("listening for gvpn-agent")
	b.launch.start(b.commandExited)
	if cfg.Lazy {
		return b, nil
	}

	wctx, cancel := context.WithTimeoutCause(ctx, cfg.Timeout, errHelloTimeout)
	defer cancel()
	switch err := b.ctl.waitHello(wctx); {
	case err == nil:
		return b, nil
	case context.Cause(wctx) == errHelloTimeout:
		return fail(fmt.Errorf("%w: no hello on %s within %v (does the command start gvpn-agent, and can it reach %s?)%s",
			ErrAgentTimeout, control, cfg.Timeout, "$"+EnvControl, b.launch.quote()))
	case wctx.Err() != nil:
		return fail(fmt.Errorf("agent sandbox: waiting for the agent's hello: %w", ctx.Err()))
	default:
		return fail(err)
	}
}

// commandExited is the launcher's report that a run of the command ended
// with err; it says whether to run the command again. Before the agent's
// first hello no agent will come: Open fails, and so does every request.
// After it, the payload is gone with the agent: its control connection is
// retired now rather than when its EOF is read, so that a request made
// after the processes are reported exited waits for the next agent
// instead of going to the dead one.
func (b *Box) commandExited(err error) bool {
	name := b.launch.name()
	if !b.ctl.helloSeen() {
		b.ctl.fail(fmt.Errorf("%w: %s ended before the agent said hello (%v)%s", ErrCommandExited, name, err, b.launch.quote()))
		return false
	}
	closing := b.closed.Load()
	if !closing {
		b.log.WithError(err).Warnf("%s exited: the payload is gone; its processes are reported exited (-1)%s", name, b.launch.quote())
	}
	b.ctl.dropCurrent(errAgentCommandExited)
	b.procs.finishAll(name + " exited")
	return !closing && !b.closed.Load()
}

// noHello is a request's timeout before the agent's first hello.
func (b *Box) noHello() error {
	return fmt.Errorf("%w: gvpn-agent never said hello since %s started%s", ErrAgentTimeout, b.launch.name(), b.launch.quote())
}

// setFraming makes the data link glue superframes for the agent, or not
// (the control session's agreement with it).
func (b *Box) setFraming(superframes bool) {
	b.off.SetCoalescing(superframes)
	if superframes {
		b.log.Info("bridge: superframes with virtio-net headers both ways (segmented here, at the ExeUnit's boundary)")
	} else {
		b.log.Info("bridge: plain frames to the agent")
	}
}

// Bridge returns the data address the Box listens on.
func (b *Box) Bridge() vsock.Addr { return b.cfg.Bridge }

// Control returns the control address the Box listens on.
func (b *Box) Control() vsock.Addr { return b.cfg.Control }

// Attach implements network.Attacher: it sends the configuration to the
// agent, waits until the agent confirms it and returns the bridge's data
// link (which then belongs to the caller). When the agent refuses the
// configuration because of an input of the ExeUnit's request (if_addr,
// mask, gateway, hosts), the error wraps a *netcfg.FieldError naming it, so
// the ExeUnit gets BAD_REQUEST; other refusals are plain errors carrying
// the agent's message.
func (b *Box) Attach(ctx context.Context, cfg netcfg.LinkConfig, hosts map[string]string) (link.Link, error) {
	switch {
	case b.closed.Load():
		return nil, sandbox.ErrClosed
	case b.attached.Load():
		return nil, errors.New("agent sandbox: the bridge is attached already")
	}
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
	cr, err := b.ctl.configure(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("configure the agent's interface: %w", err)
	}
	if !cr.OK {
		log.WithFields(logrus.Fields{"error": cr.Error, "field": cr.Field}).Error("the agent refused the configuration")
		return nil, refusal(c, cr)
	}
	if b.closed.Load() {
		return nil, sandbox.ErrClosed
	}
	b.attached.Store(true)
	log.Info("the agent's interface is configured")
	return &bridgeLink{Link: b.off, agent: &b.counts}, nil
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
func (b *Box) Close() (err error) {
	b.closeOnce.Do(func() { err = b.teardown() })
	return err
}

func (b *Box) teardown() error {
	b.closed.Store(true)
	var errs []error
	if b.ctl != nil {
		b.ctl.closing()
		if b.launch.running() {
			ctx, cancel := context.WithTimeout(context.Background(), b.cfg.StopTimeout)
			r, err := b.ctl.request(ctx, func(id uint64, _ *session) vsock.Message { return vsock.Shutdown{ID: id} })
			cancel()
			switch {
			case errors.Is(err, sandbox.ErrClosed):
				// No agent connected to ask.
			case err != nil:
				b.log.WithError(err).Warn("the agent did not confirm its shutdown; stopping the command")
			case r.m.Type() == vsock.TypeShutdownDone:
				b.log.Info("the agent shut down")
			}
		}
	}
	if b.launch != nil {
		if err := b.launch.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if b.ctl != nil {
		b.ctl.close()
	}
	if b.data != nil {
		st := b.off.Stats()
		b.log.WithFields(logrus.Fields{"dropped": b.data.Dropped(), "connections": b.data.Accepted(),
			"split_superframes": st.SplitSuperframes, "coalesced_superframes": st.CoalescedSuperframes,
			"malformed_superframes": st.Malformed}).Info("bridge data link closed")
		b.data.Close()
	}
	b.procs.finishAll("the sandbox closed")
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
	if b.closed.Load() {
		return nil, sandbox.ErrClosed
	}
	argv := spec.Args
	if len(argv) == 0 {
		argv = []string{spec.Bin}
	}
	spec = spec.WithDefaults(b.cfg.ProcessEnv, b.cfg.ProcessDir)
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	r, err := b.ctl.request(ctx, func(id uint64, _ *session) vsock.Message {
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
	if !b.procs.has(pid) {
		return fmt.Errorf("%w: pid %d", sandbox.ErrNoProcess, pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	r, err := b.ctl.request(ctx, func(id uint64, _ *session) vsock.Message {
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
