package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/vsock"
)

// dialTimeout bounds one control dial: a vsock dial to a host that is not
// listening can hang (docs/bridge.md §1).
const dialTimeout = 10 * time.Second

// sender is the current control connection, for notices that are produced
// outside the request loop (process output and exits).
type sender struct {
	mu      sync.Mutex
	cur     *vsock.ControlConn
	changed chan struct{}
}

func newSender() *sender { return &sender{changed: make(chan struct{})} }

func (s *sender) set(c *vsock.ControlConn) {
	s.mu.Lock()
	s.cur = c
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// clear forgets c if it is still current.
func (s *sender) clear(c *vsock.ControlConn) {
	s.mu.Lock()
	if s.cur == c {
		s.cur = nil
		close(s.changed)
		s.changed = make(chan struct{})
	}
	s.mu.Unlock()
}

// notify implements notifier.
func (s *sender) notify(ctx context.Context, m vsock.Message, critical bool) {
	for {
		s.mu.Lock()
		c, ch := s.cur, s.changed
		s.mu.Unlock()
		if c == nil {
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return
			}
		}
		err := c.Send(m)
		if err == nil || errors.Is(err, vsock.ErrMessageTooLarge) {
			return
		}
		// The connection is broken: close it so that the request loop
		// notices at once, and forget it.
		c.Close()
		s.clear(c)
		if !critical {
			return
		}
	}
}

// controlLoop keeps the control connection: dial, hello, serve requests,
// and again after a failure, with backoff. It returns true after a
// shutdown request was served, false when ctx is done.
func (a *agent) controlLoop(ctx context.Context) bool {
	backoff := vsock.NewBackoff(a.backoffOpts)
	log := a.log.WithField("control", a.control.String())
	failures := 0
	for attempt := 0; ; attempt++ {
		if attempt > 0 && backoff.Wait(ctx) != nil {
			return false
		}
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		conn, err := vsock.Dial(dctx, a.control)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			failures++
			if failures == 1 {
				log.WithError(err).Warn("control dial failed; retrying with backoff")
			} else {
				log.WithError(err).Debugf("control dial failed (%d in a row)", failures)
			}
			continue
		}
		failures = 0
		c := vsock.NewControlConn(conn)
		up := time.Now()
		if err := c.Send(vsock.Hello{Version: vsock.ProtocolVersion, AgentID: a.agentID, VNetHdr: !a.noVNetHdr}); err != nil {
			log.WithError(err).Warn("control connection lost before hello")
			c.Close()
			continue
		}
		if a.controlUps > 0 {
			log.Info("control reconnected")
		} else {
			log.Info("control connected; hello sent")
		}
		a.controlUps++
		a.sender.set(c)
		done := a.serve(ctx, c, log)
		a.sender.clear(c)
		c.Close()
		// Superframes were agreed with the runtime behind this connection
		// only; the next one may be another (docs/bridge.md §2.4).
		a.setSuperframes(false, log)
		if done {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if time.Since(up) >= backoff.Options().Max {
			backoff.Reset()
		}
	}
}

// setSuperframes switches the bridge to superframes (docs/bridge.md §2.4)
// when the runtime asked for them, this agent may use them and its TAP
// has a virtio-net header, and back to plain frames otherwise; it reports
// which. The switch happens before the configured answer goes out: the
// runtime takes either kind of frame at any time.
func (a *agent) setSuperframes(asked bool, log *logrus.Entry) bool {
	was := a.gate.superframes.Load()
	on := a.gate.setSuperframes(asked && !a.noVNetHdr)
	switch {
	case on && !was:
		log.Info("bridge: superframes with virtio-net headers both ways (the runtime segments them)")
	case !on && was:
		log.Info("bridge: plain frames (segmented and coalesced at the TAP)")
	case asked && !on && !a.noVNetHdr:
		log.Info("bridge: the runtime asked for superframes, but the TAP has no virtio-net header; plain frames")
	}
	return on
}

// serve answers requests on c until it fails (false) or a shutdown was
// served (true). Closing c (ctx's end does) stops it.
func (a *agent) serve(ctx context.Context, c *vsock.ControlConn, log *logrus.Entry) bool {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var reports countersStream
	defer reports.stop()
	for {
		m, err := c.Receive()
		if err != nil {
			var pe *vsock.ProtocolError
			if errors.As(err, &pe) && !errors.Is(err, vsock.ErrMessageTooLarge) {
				log.WithError(err).Warn("control message refused")
				continue
			}
			if ctx.Err() == nil {
				log.WithError(err).Warn("control connection lost; re-dialling")
			}
			return false
		}
		var reply vsock.Message
		switch m := m.(type) {
		case vsock.Configure:
			err := a.configure(m)
			if err != nil {
				log.WithError(err).Error("configure refused")
			}
			r := vsock.ConfiguredFor(m.ID, err)
			if err == nil {
				r.VNetHdr = a.setSuperframes(m.VNetHdr, log)
				reports.start(c, time.Duration(m.CountersMS)*time.Millisecond, a.counters)
			}
			reply = r
		case vsock.Run:
			p, err := a.procs.start(m)
			if err != nil {
				log.WithError(err).WithField("bin", m.Bin).Warn("process did not start")
				f := vsock.Failed{ID: m.ID, Error: err.Error()}
				var re *runError
				if errors.As(err, &re) {
					f.Reason = re.reason
				}
				reply = f
				break
			}
			// started goes out before the first output notice.
			if err := c.Send(vsock.Started{ID: m.ID, PID: p.pid}); err != nil {
				log.WithError(err).Warn("started reply not delivered")
			}
			a.procs.stream(p)
			continue
		case vsock.Kill:
			r := vsock.Killed{ID: m.ID, OK: true}
			if err := a.procs.kill(m.PID, m.Signal); err != nil {
				r = vsock.Killed{ID: m.ID, Error: err.Error()}
				log.WithError(err).Warn("kill failed")
			} else {
				log.WithFields(logrus.Fields{"pid": m.PID, "signal": m.Signal}).Info("process signalled")
			}
			reply = r
		case vsock.Shutdown:
			log.Info("shutdown requested: stopping processes, removing the interface")
			a.teardown()
			if reports.stop() {
				// The final counts, after the pump stopped.
				_ = c.Send(a.counters())
			}
			if err := c.Send(vsock.ShutdownDone{ID: m.ID}); err != nil {
				log.WithError(err).Warn("shutdown_done not delivered")
			}
			return true
		default:
			// Messages only an agent sends, or a hello echoed back: not
			// requests. No reply (docs/bridge.md §3.1).
			log.WithField("type", m.Type()).Warn("unexpected control message ignored")
			continue
		}
		if err := c.Send(reply); err != nil {
			log.WithError(err).WithField("type", reply.Type()).Warn("reply not delivered")
			return false
		}
	}
}

// countersStream sends the agent's counters on one control connection
// every so often, as a configure asked (vsock.Configure.CountersMS). It
// belongs to the connection's serve loop.
type countersStream struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// start (re)starts the reports every interval on c; interval 0 stops them.
func (s *countersStream) start(c *vsock.ControlConn, every time.Duration, counters func() vsock.Counters) {
	s.stop()
	if every <= 0 {
		return
	}
	every = max(every, minCountersEvery)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if c.Send(counters()) != nil {
				return // the serve loop sees the broken connection
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}(s.done)
}

// stop ends the reports and waits for the sender; it reports whether they
// were on.
func (s *countersStream) stop() bool {
	if s.cancel == nil {
		return false
	}
	s.cancel()
	<-s.done
	s.cancel, s.done = nil, nil
	return true
}

// minCountersEvery bounds how often the agent reports, whatever a runtime
// asks: counters are for the provider's monitoring, not a data path.
const minCountersEvery = 100 * time.Millisecond
