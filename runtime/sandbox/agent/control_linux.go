package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/vsock"
)

// controlConfig is what a control session is given.
type controlConfig struct {
	log *logrus.Entry
	// timeout bounds the wait for a new connection's hello and for the
	// answer to a configure resent to a reconnected agent.
	timeout time.Duration
	// noVNetHdr: never ask the agent for superframes (Config.NoVNetHdr).
	noVNetHdr bool
	// procs and counts receive the agent's notices and counter reports.
	procs  *processTable
	counts *agentCounters
	// framing is told, under the session's lock (it must not call back),
	// whether the data link is to glue superframes for the agent: while
	// the current connection agreed to them, and only then.
	framing func(superframes bool)
	// noHello is the error of a request whose wait ended before the
	// agent's first hello.
	noHello func() error
}

// control is the control session with gvpn-agent, across its connections:
// it accepts the agent's control connections, makes the newest that said
// hello the current one, sends requests on it under fresh ids and hands
// each request its answer, gives a reconnected agent the configuration it
// last accepted again, and delivers the agent's process notices to the
// process table and its counter reports to the counters. It knows nothing
// of the launcher: fail tells it that no agent will come.
//
// The Box calls request, configure, waitHello and fail from any goroutine,
// then closing and close from Close. closing refuses new connections and
// makes a request that finds no live connection fail with
// sandbox.ErrClosed, while the current connection still answers (Close's
// shutdown request). close also closes the listener and the connections,
// fails the pending requests with ErrAgentGone, and returns once every
// goroutine of the session has ended. Both may be called more than once.
type control struct {
	cfg    controlConfig
	l      net.Listener
	nextID atomic.Uint64
	ctx    context.Context // cancelled by close: ends the goroutines' waits
	cancel context.CancelFunc
	hello  chan struct{} // closed at the first hello

	mu          sync.Mutex
	closed      bool
	sess        *session         // the current connection, nil while the agent is away
	changed     chan struct{}    // closed and replaced when sess or failure changes
	configured  *vsock.Configure // the last configuration the agent accepted
	superframes bool             // what framing was last told
	failure     error            // why no agent will come (fail)

	helloOnce sync.Once
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// newControl accepts the agent's control connections on l until close.
func newControl(l net.Listener, cfg controlConfig) *control {
	c := &control{cfg: cfg, l: l, hello: make(chan struct{}), changed: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.accept()
	return c
}

// session is one control connection from the agent, after its hello.
type session struct {
	c       *vsock.ControlConn
	agentID string
	log     *logrus.Entry
	// offersVNetHdr: the agent's hello offered superframes on the data
	// connection; configure asks for them unless controlConfig.noVNetHdr.
	offersVNetHdr bool
	// vnetHdr: a configure asked for superframes and the agent confirmed
	// (under control.mu). The data link glues superframes only while the
	// current session has it.
	vnetHdr bool

	mu      sync.Mutex
	dead    bool
	pending map[uint64]chan reply
}

// reply is the answer to a request; p is the registered process of a
// started answer, s the session that answered.
type reply struct {
	m vsock.Message
	p *process
	s *session
}

// register reserves id for an answer; false when the session is dead.
func (s *session) register(id uint64, ch chan reply) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return false
	}
	s.pending[id] = ch
	return true
}

func (s *session) alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.dead
}

func (s *session) unregister(id uint64) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
}

// answer hands r to the request waiting for id; false when none waits.
func (s *session) answer(id uint64, r reply) bool {
	s.mu.Lock()
	ch := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	if ch == nil {
		return false
	}
	ch <- r // buffered, one answer per id
	return true
}

// kill marks the session dead and fails its pending requests.
func (s *session) kill() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return false
	}
	s.dead = true
	for id, ch := range s.pending {
		close(ch)
		delete(s.pending, id)
	}
	return true
}

// request sends the message build returns for a fresh id and the session
// it goes to on the current control connection, waiting for one if the
// agent is reconnecting, and waits for the answer. Errors wrap
// ErrAgentGone when the connection failed first, ErrAgentTimeout when ctx
// expired.
func (c *control) request(ctx context.Context, build func(id uint64, s *session) vsock.Message) (reply, error) {
	id := c.nextID.Add(1)
	ch := make(chan reply, 1)
	var s *session
	for {
		var err error
		if s, err = c.waitSession(ctx); err != nil {
			return reply{}, err
		}
		if s.register(id, ch) {
			break
		}
		// The session died after waitSession returned it (the agent was
		// killed and is being restarted, say). Nothing was sent, so the
		// request waits for the next connection like one that came a
		// moment later would.
	}
	m := build(id, s)
	if err := s.c.Send(m); err != nil {
		s.unregister(id)
		c.drop(s, err)
		return reply{}, fmt.Errorf("%w: send %s: %v", ErrAgentGone, m.Type(), err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return reply{}, fmt.Errorf("%w (waiting for the answer to %s)", ErrAgentGone, m.Type())
		}
		r.s = s
		return r, nil
	case <-ctx.Done():
		s.unregister(id)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return reply{}, fmt.Errorf("%w: no answer to %s", ErrAgentTimeout, m.Type())
		}
		return reply{}, ctx.Err()
	}
}

// waitSession returns the current control session, waiting while there is
// none. A session that died but is still current (drop is about to retire
// it and signal c.changed) counts as none.
func (c *control) waitSession(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		s, ch, closed, failure := c.sess, c.changed, c.closed, c.failure
		c.mu.Unlock()
		if s != nil && s.alive() {
			return s, nil
		}
		if closed {
			return nil, sandbox.ErrClosed
		}
		if failure != nil {
			return nil, failure
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				if !c.helloSeen() {
					return nil, c.cfg.noHello()
				}
				return nil, fmt.Errorf("%w: the agent is not connected", ErrAgentTimeout)
			}
			return nil, ctx.Err()
		}
	}
}

// waitHello returns once the agent has said hello; it fails with ctx's
// error, or with fail's once no agent will come.
func (c *control) waitHello(ctx context.Context) error {
	for {
		c.mu.Lock()
		ch, failure := c.changed, c.failure
		c.mu.Unlock()
		if c.helloSeen() {
			return nil
		}
		if failure != nil {
			return failure
		}
		select {
		case <-c.hello:
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// helloSeen reports whether an agent has said hello since the session
// began.
func (c *control) helloSeen() bool {
	select {
	case <-c.hello:
		return true
	default:
		return false
	}
}

// fail makes waitHello, and every request while no agent is connected,
// fail with err from now on: no agent will come.
func (c *control) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failure = err
	c.changedLocked()
}

// changedLocked wakes the waits on c.changed. c.mu must be held.
func (c *control) changedLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// configure asks the agent to apply cfg and returns its answer, again on
// its next connection when it goes away meanwhile (configuring twice is
// harmless, docs/bridge.md §5). An accepted configuration is what a
// reconnected agent gets again.
func (c *control) configure(ctx context.Context, cfg vsock.Configure) (vsock.Configured, error) {
	for {
		r, err := c.request(ctx, c.configureFor(cfg))
		if errors.Is(err, ErrAgentGone) && ctx.Err() == nil {
			c.cfg.log.WithError(err).Warn("agent lost while configuring; retrying on its next connection")
			continue
		}
		if err != nil {
			return vsock.Configured{}, err
		}
		cr, ok := r.m.(vsock.Configured)
		if !ok {
			return vsock.Configured{}, fmt.Errorf("agent sandbox: the agent answered configure with %q", r.m.Type())
		}
		if cr.OK {
			c.configuredBy(r)
			c.mu.Lock()
			c.configured = &cfg
			c.mu.Unlock()
		}
		return cr, nil
	}
}

// configureFor builds the configure request cfg for the session it goes
// to: superframes are asked for when the agent offered them (its hello)
// and the runtime may use them.
func (c *control) configureFor(cfg vsock.Configure) func(uint64, *session) vsock.Message {
	return func(id uint64, s *session) vsock.Message {
		cfg.ID = id
		cfg.VNetHdr = s.offersVNetHdr && !c.cfg.noVNetHdr
		cfg.CountersMS = int(countersEvery / time.Millisecond)
		return cfg
	}
}

// configuredBy takes a successful configured answer: the bridge carries
// superframes when the configure asked for them and the agent confirmed.
func (c *control) configuredBy(r reply) {
	cr, ok := r.m.(vsock.Configured)
	if !ok || r.s == nil {
		return
	}
	asked := r.s.offersVNetHdr && !c.cfg.noVNetHdr
	if cr.VNetHdr && !asked {
		r.s.log.Warn("the agent confirmed superframes nobody asked for; the bridge stays with plain frames")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r.s.vnetHdr = asked && cr.VNetHdr
	if c.sess == r.s {
		c.framingLocked()
	}
}

// framingLocked tells framing whether the data link is to glue
// superframes for the agent: while, and only while, the current session
// agreed to them (docs/bridge.md §2.4); without a session, or before its
// configured, frames go plain. c.mu must be held.
func (c *control) framingLocked() {
	on := c.sess != nil && c.sess.vnetHdr
	if on == c.superframes {
		return
	}
	c.superframes = on
	c.cfg.framing(on)
}

// drop retires s: its connection is closed, its pending requests fail,
// and it stops being current.
func (c *control) drop(s *session, cause error) {
	if !s.kill() {
		return
	}
	s.c.Close()
	c.mu.Lock()
	if c.sess == s {
		c.sess = nil
		c.changedLocked()
		c.framingLocked()
	}
	closed := c.closed
	c.mu.Unlock()
	if !closed {
		s.log.WithError(cause).Warn("control connection to the agent lost; waiting for it to reconnect")
	}
}

// errAgentCommandExited is why the session of an agent whose command
// exited is dropped.
var errAgentCommandExited = errors.New("the agent command exited")

// dropCurrent retires the current connection, if any: its agent is gone.
func (c *control) dropCurrent(cause error) {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s != nil {
		c.drop(s, cause)
	}
}

func (c *control) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// closing refuses new connections; the current one still serves.
func (c *control) closing() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
}

// close ends the session: the listener, the connections and every
// goroutine.
func (c *control) close() {
	c.closeOnce.Do(func() {
		c.closing()
		c.cancel()
		c.l.Close()
		c.dropCurrent(errors.New("closing"))
		c.wg.Wait()
	})
}

// accept accepts the agent's control connections until the listener is
// closed.
func (c *control) accept() {
	defer c.wg.Done()
	for {
		conn, err := c.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || c.isClosed() {
				return
			}
			c.cfg.log.WithError(err).Warn("control accept failed; retrying")
			select {
			case <-time.After(50 * time.Millisecond):
			case <-c.ctx.Done():
				return
			}
			continue
		}
		c.wg.Add(1)
		go c.handshake(vsock.NewControlConn(conn))
	}
}

// handshake reads the hello of a new control connection, makes it the
// current session (the newest wins, as on the data connection) and serves
// it.
func (c *control) handshake(cc *vsock.ControlConn) {
	defer c.wg.Done()
	// close unblocks this connection's reads, whatever state it is in.
	defer context.AfterFunc(c.ctx, func() { cc.Close() })()
	log := c.cfg.log
	_ = cc.Conn().SetReadDeadline(time.Now().Add(c.cfg.timeout))
	m, err := cc.Receive()
	if err != nil {
		log.WithError(err).Warn("control connection without hello; closed")
		cc.Close()
		return
	}
	h, ok := m.(vsock.Hello)
	if !ok {
		log.WithField("type", m.Type()).Warn("control connection did not start with hello; closed")
		cc.Close()
		return
	}
	if h.Version != vsock.ProtocolVersion {
		log.WithFields(logrus.Fields{"version": h.Version, "supported": vsock.ProtocolVersion, "agent_id": h.AgentID}).
			Error("gvpn-agent speaks an unsupported control protocol version; closed")
		cc.Close()
		return
	}
	_ = cc.Conn().SetReadDeadline(time.Time{})
	s := &session{c: cc, agentID: h.AgentID, pending: make(map[uint64]chan reply),
		log: log.WithField("agent_id", h.AgentID), offersVNetHdr: h.VNetHdr}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cc.Close()
		return
	}
	old := c.sess
	c.sess = s
	c.changedLocked()
	c.framingLocked() // plain until this agent confirms superframes
	c.mu.Unlock()
	if old != nil {
		c.drop(old, errors.New("replaced by a new control connection"))
	}
	first := false
	c.helloOnce.Do(func() { first = true; close(c.hello) })
	if first {
		s.log.Info("gvpn-agent said hello")
	} else {
		s.log.Info("gvpn-agent reconnected")
	}
	c.reconfigure()
	c.serve(s)
}

// reconfigure gives an agent that came back (over a new connection, or a
// new agent after the command was run again) the configuration it had, in
// a goroutine of its own: its answer comes through serve.
func (c *control) reconfigure() {
	c.mu.Lock()
	resend := c.configured
	c.mu.Unlock()
	if resend == nil {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.timeout)
		defer cancel()
		log := c.cfg.log
		r, err := c.request(ctx, c.configureFor(*resend))
		switch {
		case err != nil:
			if !c.isClosed() {
				log.WithError(err).Warn("could not configure the reconnected agent (it will be tried again on its next connection)")
			}
		case r.m.Type() != vsock.TypeConfigured:
			log.WithField("type", r.m.Type()).Error("the agent answered configure with something else")
		case !r.m.(vsock.Configured).OK:
			log.WithField("error", r.m.(vsock.Configured).Error).Error("the reconnected agent refused its configuration")
		default:
			c.configuredBy(r)
			log.Info("the reconnected agent's interface is configured again")
		}
	}()
}

// serve reads the session's messages: answers go to their requests,
// process notices to the process table, counter reports to the counters.
func (c *control) serve(s *session) {
	for {
		m, err := s.c.Receive()
		if err != nil {
			var pe *vsock.ProtocolError
			if errors.As(err, &pe) && !errors.Is(err, vsock.ErrMessageTooLarge) {
				s.log.WithError(err).Warn("control message from the agent refused")
				continue
			}
			c.drop(s, err)
			return
		}
		switch m := m.(type) {
		case vsock.Configured:
			answer(s, m.ID, reply{m: m})
		case vsock.Failed:
			answer(s, m.ID, reply{m: m})
		case vsock.Killed:
			answer(s, m.ID, reply{m: m})
		case vsock.ShutdownDone:
			answer(s, m.ID, reply{m: m})
		case vsock.Started:
			c.started(s, m)
		case vsock.Output:
			if !c.cfg.procs.output(uint64(m.PID), m.Stdout, m.Stderr) {
				s.log.WithField("pid", m.PID).Debug("output of an unknown process dropped")
			}
		case vsock.Exited:
			c.cfg.procs.exited(uint64(m.PID), int32(m.ReturnCode))
		case vsock.Counters:
			c.cfg.counts.report(m)
		case vsock.Hello:
			// An agent behind a virtio-serial port reopens the port on
			// the same host connection: its new hello arrives here.
			s.log.Info("gvpn-agent said hello again on its connection")
			c.reconfigure()
		default:
			s.log.WithField("type", m.Type()).Warn("unexpected control message from the agent ignored")
		}
	}
}

func answer(s *session, id uint64, r reply) {
	if !s.answer(id, r) {
		s.log.WithFields(logrus.Fields{"id": id, "type": r.m.Type()}).Debug("answer to a request nobody waits for")
	}
}

// started registers the process before any of its notices is read, then
// hands it to the waiting request. A process nobody waits for any more
// (Start timed out) is killed.
func (c *control) started(s *session, m vsock.Started) {
	if m.PID <= 0 {
		s.log.WithField("pid", m.PID).Error("started with an invalid pid")
		answer(s, m.ID, reply{m: vsock.Failed{ID: m.ID, Error: fmt.Sprintf("agent reported invalid pid %d", m.PID)}})
		return
	}
	p := c.cfg.procs.add(uint64(m.PID))
	if !s.answer(m.ID, reply{m: m, p: p}) {
		s.log.WithField("pid", m.PID).Warn("process started for a request that gave up; killing it")
		c.cfg.procs.forget(p)
		_ = s.c.Send(vsock.Kill{ID: c.nextID.Add(1), PID: m.PID, Signal: int(9)})
	}
}
