// Package service is gvpn-runtime's service mode: the ya-runtime-api loop
// on stdin/stdout (docs/protocol.md §3). It answers every request with the
// matching reply or an error, streams process output as events, and tears
// everything down before it answers Shutdown, because the ExeUnit kills the
// runtime right after that reply.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/sandbox"
)

// Network is the activity's VPN.
type Network interface {
	Create(ctx context.Context, req *api.Request_CreateNetwork) (api.Endpoint, error)
	Stats() api.VPNStats
	Close() error
}

// Config wires a service.
type Config struct {
	In      io.Reader // the ExeUnit's requests (stdin)
	Out     io.Writer // replies and events (stdout); nothing else may go there
	Version string    // sent in the Hello reply
	Sandbox sandbox.Sandbox
	Network Network
	// StatsInterval is how often the VPN counters are logged when they
	// changed since the last time; zero or negative: only on SIGUSR1 and
	// at teardown.
	StatsInterval time.Duration
	// StateEvents also sends the counters, at StatsInterval, as a
	// RuntimeStatus state event named api.VPNStateName. Off by default: the
	// ExeUnit acts only on counter events and logs every state event as
	// unsupported; the lab asks for them.
	StateEvents bool
	// LogStats, when it delivers, makes the service log the VPN counters.
	// The binary connects it to SIGUSR1: only main-level code installs
	// signal handlers. Nil never delivers.
	LogStats <-chan os.Signal
	// Log receives what the service does; nil discards it.
	Log *logrus.Entry
}

// ErrProtocol wraps a broken request stream: a bad length prefix or a
// message that does not decode. The runtime cannot resynchronise and
// exits with an error.
var ErrProtocol = errors.New("broken request stream")

// Serve runs the service until Shutdown, the end of stdin, a broken stream
// or ctx's end, and always tears down the sandbox and network before it
// returns. It returns nil after Shutdown and at a clean end of stdin.
func Serve(ctx context.Context, cfg Config) error {
	s := &server{cfg: cfg, log: cfg.Log, w: api.NewWriter(cfg.Out)}
	if s.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		s.log = logrus.NewEntry(l)
	}
	defer s.teardown()

	reqs := make(chan request)
	stop := make(chan struct{})
	defer close(stop)
	go readRequests(api.NewReader(cfg.In, api.DefaultMaxSize), reqs, stop)

	var tick <-chan time.Time
	if interval := cfg.StatsInterval; interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}

	for {
		select {
		case r := <-reqs:
			if r.err != nil {
				if errors.Is(r.err, io.EOF) {
					s.log.Info("stdin closed: the ExeUnit is gone; tearing down")
					return nil
				}
				return fmt.Errorf("%w: %v", ErrProtocol, r.err)
			}
			if done, err := s.handle(ctx, r.req); done || err != nil {
				return err
			}
		case <-tick:
			s.periodicStats()
		case <-cfg.LogStats:
			s.logStats("counters (SIGUSR1)")
		case <-ctx.Done():
			s.log.Info("signalled: tearing down")
			return nil
		}
	}
}

type request struct {
	req *api.Request
	err error
}

// readRequests decodes requests until the stream ends or Serve returns. It
// runs on its own goroutine so that the loop can react to signals while
// stdin is quiet. After Serve returned it ends with the next read (in the
// runtime, the process exits first).
func readRequests(r *api.Reader, out chan<- request, stop <-chan struct{}) {
	for {
		req, err := r.ReadRequest()
		select {
		case out <- request{req, err}:
		case <-stop:
			return
		}
		if err != nil {
			return
		}
	}
}

type server struct {
	cfg       Config
	log       *logrus.Entry
	w         *api.Writer
	lastStats []byte
	tornDown  bool
}

// handle answers one request. done is true after Shutdown; err is set when
// the reply cannot be written (the ExeUnit is gone).
func (s *server) handle(ctx context.Context, req *api.Request) (done bool, err error) {
	id := req.GetId()
	log := s.log.WithFields(logrus.Fields{"id": id, "cmd": api.CommandName(req)})
	var resp *api.Response
	var after func()
	switch {
	case req.GetHello() != nil:
		log.WithField("exeunit_version", req.GetHello().GetVersion()).Info("hello")
		resp = api.ReplyHello(id, s.cfg.Version)
	case req.GetRun() != nil:
		resp, after = s.run(id, req.GetRun(), log)
	case req.GetKill() != nil:
		resp = s.kill(id, req.GetKill(), log)
	case req.GetNetwork() != nil:
		resp = s.createNetwork(ctx, id, req.GetNetwork(), log)
	case req.GetShutdown() != nil:
		log.Info("shutdown requested: tearing down before the reply")
		s.teardown()
		resp, done = api.ReplyShutdown(id), true
	default:
		log.Warn("request without a known command")
		resp = api.ReplyError(id, api.Response_BAD_REQUEST, "unknown or empty command", nil)
	}
	if err := s.w.WriteResponse(resp); err != nil {
		return true, fmt.Errorf("write reply to request %d: %w", id, err)
	}
	if after != nil {
		// Output events only after the reply: the ExeUnit binds the first
		// status of an unknown pid to the Run that is waiting for it.
		after()
	}
	return done, nil
}

func (s *server) run(id uint64, r *api.Request_RunProcess, log *logrus.Entry) (*api.Response, func()) {
	spec := sandbox.ProcessSpec{Bin: r.GetBin(), Args: r.GetArgs(), Dir: r.GetWorkDir()}
	log = log.WithFields(logrus.Fields{"bin": spec.Bin, "args": spec.Args})
	p, err := s.cfg.Sandbox.Start(spec)
	if err != nil {
		log.WithError(err).Warn("process did not start")
		code := api.Response_INTERNAL
		if errors.Is(err, sandbox.ErrNotFound) || errors.Is(err, sandbox.ErrNotExecutable) {
			code = api.Response_NOT_FOUND
		}
		return api.ReplyError(id, code, err.Error(), nil), nil
	}
	pid := p.Pid()
	log.WithField("pid", pid).Info("process started")
	return api.ReplyRun(id, pid), func() {
		p.Stream(func(ev sandbox.Event) { s.event(ev) })
	}
}

func (s *server) event(ev sandbox.Event) {
	var resp *api.Response
	if ev.Exited {
		s.log.WithFields(logrus.Fields{"pid": ev.Pid, "rc": ev.ReturnCode}).Info("process exited")
		resp = api.ProcessExited(ev.Pid, ev.ReturnCode)
	} else {
		resp = api.ProcessOutput(ev.Pid, ev.Stdout, ev.Stderr)
	}
	if err := s.w.WriteResponse(resp); err != nil {
		s.log.WithError(err).Debug("event not delivered")
	}
}

// maxSignal is Linux's highest signal number (SIGRTMAX, proc.MaxSignal,
// which this layer does not import): a KillProcess beyond it is the
// requestor's mistake, not the sandbox's failure.
const maxSignal = 64

func (s *server) kill(id uint64, k *api.Request_KillProcess, log *logrus.Entry) *api.Response {
	sig := syscall.Signal(k.GetSignal())
	if sig == 0 {
		sig = syscall.SIGKILL
	}
	log = log.WithFields(logrus.Fields{"pid": k.GetPid(), "signal": int(sig)})
	if sig < 1 || sig > maxSignal {
		log.Warn("kill refused: no such signal")
		return api.ReplyError(id, api.Response_BAD_REQUEST,
			fmt.Sprintf("signal %d is out of range 1..%d", int(k.GetSignal()), maxSignal), map[string]string{"field": "signal"})
	}
	if err := s.cfg.Sandbox.Kill(k.GetPid(), sig); err != nil {
		log.WithError(err).Warn("kill failed")
		code := api.Response_INTERNAL
		if errors.Is(err, sandbox.ErrNoProcess) {
			code = api.Response_NOT_FOUND
		}
		return api.ReplyError(id, code, err.Error(), nil)
	}
	log.Info("process signalled")
	return api.ReplyKill(id)
}

func (s *server) createNetwork(ctx context.Context, id uint64, n *api.Request_CreateNetwork, log *logrus.Entry) *api.Response {
	ep, err := s.cfg.Network.Create(ctx, n)
	if err != nil {
		log.WithError(err).Error("CreateNetwork failed")
		code, ectx := api.Response_INTERNAL, map[string]string(nil)
		var ne *api.Error
		if errors.As(err, &ne) {
			code = ne.Code
			if ne.Field != "" {
				ectx = map[string]string{"field": ne.Field}
			}
		}
		return api.ReplyError(id, code, err.Error(), ectx)
	}
	log.WithFields(logrus.Fields{"networks": len(n.GetNetworks()), "hosts": len(n.GetHosts()), "endpoint": ep.String()}).
		Info("CreateNetwork done")
	return api.ReplyNetwork(id, ep)
}

// periodicStats logs the VPN counters, and sends them as a state event if
// asked, when they changed since the last time.
func (s *server) periodicStats() {
	st := s.cfg.Network.Stats()
	b, err := json.Marshal(st)
	if err != nil || string(b) == string(s.lastStats) {
		return
	}
	s.lastStats = b
	if st.Address != "" {
		s.logCounters(st, "VPN counters")
	}
	if !s.cfg.StateEvents {
		return
	}
	if err := s.w.WriteResponse(api.RuntimeState(api.VPNStateName, b)); err != nil {
		s.log.WithError(err).Debug("stats event not delivered")
	}
}

func (s *server) logStats(msg string) {
	st := s.cfg.Network.Stats()
	if st.Address == "" {
		s.log.Info(msg + ": no VPN network")
		return
	}
	s.logCounters(st, msg)
}

// logCounters writes one line with every counter: frames and bytes each
// way, gvpn's own drops by reason (drop_*) and the kernel's drops on the
// TAP and the endpoint socket (kernel_*), and the links' other counts
// (link_*), so that a loss the payload sees as retransmits shows up
// somewhere.
func (s *server) logCounters(st api.VPNStats, msg string) {
	f := logrus.Fields{
		"networks":       strings.Join(st.Networks, ","),
		"up":             st.Up,
		"egress_frames":  st.Egress.Frames,
		"egress_bytes":   st.Egress.Bytes,
		"ingress_frames": st.Ingress.Frames,
		"ingress_bytes":  st.Ingress.Bytes,
	}
	for dir, d := range map[string]api.VPNDirStats{"egress": st.Egress, "ingress": st.Ingress} {
		for reason, n := range d.Drops {
			f[dir+"_drop_"+reason] = n
		}
		for reason, n := range d.KernelDrops {
			f[dir+"_kernel_"+reason] = n
		}
	}
	for name, n := range st.Links {
		f["link_"+name] = n
	}
	if st.KernelError != "" {
		f["kernel_error"] = st.KernelError
	}
	s.log.WithFields(f).Info(msg)
}

// teardown stops the VPN and the sandbox, once. Processes' last events are
// written before it returns.
func (s *server) teardown() {
	if s.tornDown {
		return
	}
	s.tornDown = true
	s.logStats("final VPN counters")
	if err := s.cfg.Network.Close(); err != nil {
		s.log.WithError(err).Warn("network teardown")
	}
	if err := s.cfg.Sandbox.Close(); err != nil {
		s.log.WithError(err).Warn("sandbox teardown")
	}
	s.log.Info("teardown complete")
}
