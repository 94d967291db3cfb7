package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netns"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/pump"
	"github.com/gvpn/gvpn/vsock"
)

// Defaults of the Config timeouts.
const (
	DefaultStopTimeout  = 2 * time.Second
	DefaultDrainTimeout = time.Second
)

// Run runs the agent until ctx is done (SIGTERM, in gvpn-agent) or, in
// managed mode, until the runtime's shutdown request was served. Either
// way it stops its processes and removes its interface before it returns;
// the result is then nil. It fails when the interface cannot be set up in
// manual mode, or when the interface breaks while the agent runs (the TAP
// was deleted under it).
//
// The data connection is kept by a vsock.Redialer (or, with Config.Listen,
// a vsock.Acceptor): when the bridge drops, the interface stays up and
// configured, frames in the gap are dropped and counted, and the agent
// reconnects with backoff. In managed mode the control connection is kept
// the same way.
func Run(ctx context.Context, cfg Config) error {
	a, err := newAgent(cfg)
	if err != nil {
		return err
	}
	defer a.teardown()
	return a.run(ctx)
}

// agent is one running gvpn-agent.
type agent struct {
	log         *logrus.Entry
	bridge      vsock.Addr
	control     vsock.Addr
	manual      *vsock.Configure
	hostsFile   string
	agentID     string
	noVNetHdr   bool
	ns          netns.NsHandle
	backoffOpts vsock.BackoffOptions
	stopTimeout time.Duration

	data    link.Link
	gate    *gate
	egress  *egressFilter
	ingress *ingressFilter
	pump    *pump.Pump
	sender  *sender
	procs   *processes

	cfgMu sync.Mutex // serialises configure
	cur   *applied

	controlUps   int    // control connections made; only the control loop uses it
	instance     string // this agent process in its counters (vsock.Counters.Instance)
	teardownOnce sync.Once
}

func newAgent(cfg Config) (*agent, error) {
	log := cfg.Log
	if log == nil {
		l := logrus.New()
		l.Out = io.Discard
		log = logrus.NewEntry(l)
	}
	if err := cfg.Bridge.Validate(); err != nil {
		return nil, err
	}
	if cfg.Manual == nil && cfg.Listen {
		return nil, errors.New("agent: listening is for manual mode only (the runtime always listens)")
	}
	a := &agent{
		log:         log,
		bridge:      cfg.Bridge,
		control:     cfg.Control,
		manual:      cfg.Manual,
		hostsFile:   cfg.HostsFile,
		agentID:     cfg.AgentID,
		noVNetHdr:   cfg.NoVNetHdr,
		ns:          cfg.NS,
		backoffOpts: cfg.Backoff,
		stopTimeout: orDefault(cfg.StopTimeout, DefaultStopTimeout),
		gate:        newGate(),
		egress:      newEgressFilter(),
		ingress:     newIngressFilter(),
		sender:      newSender(),
		instance:    randomInstance(),
	}
	if a.ns == 0 {
		a.ns = netns.None()
	}
	if a.agentID == "" {
		a.agentID, _ = os.Hostname()
	}
	if a.manual == nil && a.control == (vsock.Addr{}) {
		c, err := cfg.Bridge.Control()
		if err != nil {
			return nil, err
		}
		a.control = c
	}
	a.procs = newProcesses(log, a.sender, orDefault(cfg.DrainTimeout, DefaultDrainTimeout))

	var err error
	if cfg.Listen {
		var acc *vsock.Acceptor
		acc, err = vsock.ListenAcceptor(cfg.Bridge, log, vsock.WithVNetHdr())
		a.data = acc
		if err == nil {
			log.WithField("bridge", cfg.Bridge.String()).Info("listening for the bridge peer")
		}
	} else {
		var r *vsock.Redialer
		r, err = vsock.NewRedialer(context.Background(), cfg.Bridge, cfg.Backoff, log, vsock.WithVNetHdr())
		a.data = r
		if err == nil {
			log.WithField("bridge", cfg.Bridge.String()).Info("dialling the bridge")
		}
	}
	if err != nil {
		a.procs.close()
		return nil, err
	}
	a.pump = pump.Start(pump.Config{
		Iface:   a.gate,
		Uplink:  a.data,
		Egress:  a.egress,
		Ingress: a.ingress,
		Log:     log,
	})
	return a, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (a *agent) run(ctx context.Context) error {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)

	if a.manual != nil {
		if err := a.configure(*a.manual); err != nil {
			return fmt.Errorf("configure %s: %w", a.manual.Name, err)
		}
		a.log.Info("pumping frames between the interface and the bridge")
		for {
			select {
			case <-ctx.Done():
				a.log.Info("signalled: removing the interface")
				return nil
			case <-a.pump.Done():
				return a.pumpFailure()
			case <-usr1:
				a.logCounters("counters (SIGUSR1)")
			}
		}
	}

	// The control loop outlives ctx a little: on SIGTERM the processes are
	// stopped first, so that their exited notices still reach the runtime.
	cctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shut := make(chan bool, 1)
	go func() { shut <- a.controlLoop(cctx) }()
	for {
		select {
		case <-ctx.Done():
			a.log.Info("signalled: stopping processes, removing the interface")
			a.teardown()
			cancel()
			<-shut
			return nil
		case done := <-shut:
			if done {
				a.log.Info("shutdown complete")
			}
			return nil
		case <-a.pump.Done():
			if a.pump.Err() == nil {
				// Stopped by teardown: a shutdown request is being served,
				// and its shutdown_done must still go out.
				<-shut
				return nil
			}
			a.teardown()
			cancel()
			<-shut
			return a.pumpFailure()
		case <-usr1:
			a.logCounters("counters (SIGUSR1)")
		}
	}
}

func (a *agent) pumpFailure() error {
	err := a.pump.Err()
	if err == nil {
		return nil // stopped by teardown
	}
	return fmt.Errorf("the interface failed: %w", err)
}

// teardown stops the processes, then the pump: closing the gate closes the
// TAP, and a non-persistent TAP disappears with its descriptor. Idempotent.
func (a *agent) teardown() {
	a.teardownOnce.Do(func() {
		a.procs.stopAll(a.stopTimeout)
		a.procs.close()
		a.pump.Close()
		a.logCounters("final counters")
		if a.gate.device() != nil {
			a.log.Info("interface removed")
		}
	})
}

func (a *agent) logCounters(msg string) {
	c := a.counters()
	f := logrus.Fields{
		"egress_frames":  c.Egress.Frames,
		"egress_drops":   c.Egress.Drops,
		"ingress_frames": c.Ingress.Frames,
		"ingress_drops":  c.Ingress.Drops,
		"superframes":    a.gate.superframes.Load(),
	}
	if len(c.Egress.KernelDrops) > 0 || len(c.Ingress.KernelDrops) > 0 {
		f["egress_kernel_drops"], f["ingress_kernel_drops"] = c.Egress.KernelDrops, c.Ingress.KernelDrops
	}
	// Events: bridge reconnections, and what the gate's offload link cut
	// for and glued from a plain bridge (superframes_split and
	// superframes_coalesced; the runtime shows them as agent_…).
	for name, n := range c.Events {
		f[name] = n
	}
	a.log.WithFields(f).Info(msg)
}

// counters are the agent's counters as the control connection reports them
// (vsock.Counters) and the logs show them: the pump's, with its links'
// (the gate and its TAP, the bridge) turned into the payload's directions
// by pump.Links.
func (a *agent) counters() vsock.Counters {
	st, ls := a.pump.Stats(), a.pump.Links()
	c := vsock.Counters{
		Instance: a.instance,
		Egress: vsock.CounterDir{Frames: st.Egress.Frames, Bytes: st.Egress.Bytes,
			Drops: link.AddCounts(st.Egress.DropMap(), ls.EgressDrops), KernelDrops: ls.EgressKernel},
		Ingress: vsock.CounterDir{Frames: st.Ingress.Frames, Bytes: st.Ingress.Bytes,
			Drops: link.AddCounts(st.Ingress.DropMap(), ls.IngressDrops), KernelDrops: ls.IngressKernel},
		Events: ls.Events,
	}
	if ls.KernelErr != nil {
		c.KernelError = ls.KernelErr.Error()
	}
	return c
}

// randomInstance names this agent process in its counters: 64 random bits.
func randomInstance() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}
