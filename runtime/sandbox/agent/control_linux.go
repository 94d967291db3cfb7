package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/vsock"
)

// session is one control connection from the agent, after its hello.
type session struct {
	c       *vsock.ControlConn
	agentID string
	log     *logrus.Entry
	// offersVNetHdr: the agent's hello offered superframes on the data
	// connection; the Box asks for them in configure unless
	// Config.NoVNetHdr.
	offersVNetHdr bool
	// vnetHdr: a configure asked for superframes and the agent confirmed
	// (under Box.mu). The Box sends superframes only while its current
	// session has it.
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
func (b *Box) request(ctx context.Context, build func(id uint64, s *session) vsock.Message) (reply, error) {
	id := b.nextID.Add(1)
	ch := make(chan reply, 1)
	var s *session
	for {
		var err error
		if s, err = b.waitSession(ctx); err != nil {
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
		b.dropSession(s, err)
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
// none. A session that died but is still current (dropSession is about to
// retire it and signal b.changed) counts as none.
func (b *Box) waitSession(ctx context.Context) (*session, error) {
	for {
		b.mu.Lock()
		s, ch, closed, launchErr := b.sess, b.changed, b.closed, b.launchErr
		b.mu.Unlock()
		if s != nil && s.alive() {
			return s, nil
		}
		if closed {
			return nil, sandbox.ErrClosed
		}
		if launchErr != nil {
			return nil, launchErr
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				select {
				case <-b.hello:
				default:
					return nil, fmt.Errorf("%w: gvpn-agent never said hello since %s started%s", ErrAgentTimeout, b.cfg.Launcher, b.tail.quote())
				}
				return nil, fmt.Errorf("%w: the agent is not connected", ErrAgentTimeout)
			}
			return nil, ctx.Err()
		}
	}
}

// dropSession retires s: its connection is closed, its pending requests
// fail, and it stops being current.
func (b *Box) dropSession(s *session, cause error) {
	if !s.kill() {
		return
	}
	s.c.Close()
	b.mu.Lock()
	if b.sess == s {
		b.sess = nil
		close(b.changed)
		b.changed = make(chan struct{})
		b.bridgeFramingLocked()
	}
	closed := b.closed
	b.mu.Unlock()
	if !closed {
		s.log.WithError(cause).Warn("control connection to the agent lost; waiting for it to reconnect")
	}
}

// errAgentCommandExited is why the session of an agent whose command
// exited is dropped.
var errAgentCommandExited = errors.New("the agent command exited")

// dropCurrentSession retires the current control session, if any.
func (b *Box) dropCurrentSession(cause error) {
	b.mu.Lock()
	s := b.sess
	b.mu.Unlock()
	if s != nil {
		b.dropSession(s, cause)
	}
}

// acceptControl accepts the agent's control connections until the
// listener is closed.
func (b *Box) acceptControl() {
	defer b.wg.Done()
	for {
		conn, err := b.ctlL.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || b.isClosed() {
				return
			}
			b.log.WithError(err).Warn("control accept failed; retrying")
			select {
			case <-time.After(50 * time.Millisecond):
			case <-b.stopping:
				return
			}
			continue
		}
		b.wg.Add(1)
		go b.handshake(vsock.NewControlConn(conn))
	}
}

// handshake reads the hello of a new control connection, makes it the
// current session (the newest wins, as on the data connection) and serves
// it.
func (b *Box) handshake(c *vsock.ControlConn) {
	defer b.wg.Done()
	// Close unblocks this connection's reads, whatever state it is in.
	defer context.AfterFunc(b.stopCtx, func() { c.Close() })()
	_ = c.Conn().SetReadDeadline(time.Now().Add(b.cfg.Timeout))
	m, err := c.Receive()
	if err != nil {
		b.log.WithError(err).Warn("control connection without hello; closed")
		c.Close()
		return
	}
	h, ok := m.(vsock.Hello)
	if !ok {
		b.log.WithField("type", m.Type()).Warn("control connection did not start with hello; closed")
		c.Close()
		return
	}
	if h.Version != vsock.ProtocolVersion {
		b.log.WithFields(logrus.Fields{"version": h.Version, "supported": vsock.ProtocolVersion, "agent_id": h.AgentID}).
			Error("gvpn-agent speaks an unsupported control protocol version; closed")
		c.Close()
		return
	}
	_ = c.Conn().SetReadDeadline(time.Time{})
	s := &session{c: c, agentID: h.AgentID, pending: make(map[uint64]chan reply),
		log: b.log.WithField("agent_id", h.AgentID), offersVNetHdr: h.VNetHdr}

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		c.Close()
		return
	}
	old := b.sess
	b.sess = s
	close(b.changed)
	b.changed = make(chan struct{})
	b.bridgeFramingLocked() // plain until this agent confirms superframes
	resend := b.configured
	b.mu.Unlock()
	if old != nil {
		b.dropSession(old, errors.New("replaced by a new control connection"))
	}
	first := false
	b.helloOnce.Do(func() { first = true; close(b.hello) })
	if first {
		s.log.Info("gvpn-agent said hello")
	} else {
		s.log.Info("gvpn-agent reconnected")
	}
	if resend != nil {
		b.wg.Add(1)
		go b.reconfigure(*resend)
	}
	b.serve(s)
}

// reconfigure gives an agent that came back (over a new connection, or a
// new agent after the command was run again) the configuration it had.
func (b *Box) reconfigure(c vsock.Configure) {
	defer b.wg.Done()
	ctx, cancel := context.WithTimeout(b.stopCtx, b.cfg.Timeout)
	defer cancel()
	r, err := b.request(ctx, b.configureFor(c))
	switch {
	case err != nil:
		if !b.isClosed() {
			b.log.WithError(err).Warn("could not configure the reconnected agent (it will be tried again on its next connection)")
		}
	case r.m.Type() != vsock.TypeConfigured:
		b.log.WithField("type", r.m.Type()).Error("the agent answered configure with something else")
	case !r.m.(vsock.Configured).OK:
		b.log.WithField("error", r.m.(vsock.Configured).Error).Error("the reconnected agent refused its configuration")
	default:
		b.configuredBy(r)
		b.log.Info("the reconnected agent's interface is configured again")
	}
}

// serve reads the session's messages: answers go to their requests,
// process notices to their processes.
func (b *Box) serve(s *session) {
	for {
		m, err := s.c.Receive()
		if err != nil {
			var pe *vsock.ProtocolError
			if errors.As(err, &pe) && !errors.Is(err, vsock.ErrMessageTooLarge) {
				s.log.WithError(err).Warn("control message from the agent refused")
				continue
			}
			b.dropSession(s, err)
			return
		}
		switch m := m.(type) {
		case vsock.Configured:
			b.answer(s, m.ID, reply{m: m})
		case vsock.Failed:
			b.answer(s, m.ID, reply{m: m})
		case vsock.Killed:
			b.answer(s, m.ID, reply{m: m})
		case vsock.ShutdownDone:
			b.answer(s, m.ID, reply{m: m})
		case vsock.Started:
			b.started(s, m)
		case vsock.Output:
			b.output(s, m)
		case vsock.Exited:
			b.exited(m)
		case vsock.Counters:
			b.counts.report(m)
		case vsock.Hello:
			// An agent behind a virtio-serial port reopens the port on
			// the same host connection: its new hello arrives here.
			s.log.Info("gvpn-agent said hello again on its connection")
			b.mu.Lock()
			resend := b.configured
			b.mu.Unlock()
			if resend != nil {
				b.wg.Add(1)
				go b.reconfigure(*resend)
			}
		default:
			s.log.WithField("type", m.Type()).Warn("unexpected control message from the agent ignored")
		}
	}
}

func (b *Box) answer(s *session, id uint64, r reply) {
	if !s.answer(id, r) {
		s.log.WithFields(logrus.Fields{"id": id, "type": r.m.Type()}).Debug("answer to a request nobody waits for")
	}
}

// started registers the process before any of its notices is read, then
// hands it to the waiting Start. A process nobody waits for any more (Start
// timed out) is killed.
func (b *Box) started(s *session, m vsock.Started) {
	if m.PID <= 0 {
		s.log.WithField("pid", m.PID).Error("started with an invalid pid")
		b.answer(s, m.ID, reply{m: vsock.Failed{ID: m.ID, Error: fmt.Sprintf("agent reported invalid pid %d", m.PID)}})
		return
	}
	pid := uint64(m.PID)
	p := newProcess(pid)
	b.mu.Lock()
	old := b.procs[pid]
	b.procs[pid] = p
	b.mu.Unlock()
	if old != nil {
		// The agent reuses a pid whose exit we never heard of.
		old.finish(-1)
	}
	if !s.answer(m.ID, reply{m: m, p: p}) {
		s.log.WithField("pid", pid).Warn("process started for a request that gave up; killing it")
		b.mu.Lock()
		delete(b.procs, pid)
		b.mu.Unlock()
		_ = s.c.Send(vsock.Kill{ID: b.nextID.Add(1), PID: m.PID, Signal: int(9)})
	}
}

func (b *Box) output(s *session, m vsock.Output) {
	b.mu.Lock()
	p := b.procs[uint64(m.PID)]
	b.mu.Unlock()
	if p == nil {
		s.log.WithField("pid", m.PID).Debug("output of an unknown process dropped")
		return
	}
	if len(m.Stdout) > 0 {
		p.deliver(sandbox.Event{Pid: p.pid, Stdout: m.Stdout})
	}
	if len(m.Stderr) > 0 {
		p.deliver(sandbox.Event{Pid: p.pid, Stderr: m.Stderr})
	}
}

func (b *Box) exited(m vsock.Exited) {
	pid := uint64(m.PID)
	b.mu.Lock()
	p := b.procs[pid]
	if p != nil {
		delete(b.procs, pid)
	}
	b.mu.Unlock()
	if p != nil {
		p.finish(int32(m.ReturnCode))
	}
}

// finishAll reports every known process exited with -1: the agent that ran
// them is gone.
func (b *Box) finishAll(why string) {
	b.mu.Lock()
	procs := b.procs
	b.procs = make(map[uint64]*process)
	b.mu.Unlock()
	for _, p := range procs {
		b.log.WithField("pid", p.pid).Warn(why + ": process reported exited (-1)")
		p.finish(-1)
	}
}

// process is a payload process started through the agent. Its events wait
// in a queue until Stream: the service writes the RunProcess reply first.
type process struct {
	pid uint64

	mu       sync.Mutex
	sink     func(sandbox.Event)
	queue    []sandbox.Event
	streamed bool
	done     bool
}

var _ sandbox.Process = (*process)(nil)

func newProcess(pid uint64) *process { return &process{pid: pid} }

// Pid is the process's pid inside the payload, as the agent reported it.
func (p *process) Pid() uint64 { return p.pid }

// Stream delivers the queued events, then every later one, to sink, in the
// order the agent sent them; the exit event is the last. sink is called
// one event at a time. A second call does nothing.
func (p *process) Stream(sink func(sandbox.Event)) {
	if sink == nil {
		sink = func(sandbox.Event) {}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.streamed {
		return
	}
	p.streamed = true
	for _, ev := range p.queue {
		sink(ev)
	}
	p.queue = nil
	p.sink = sink
}

func (p *process) deliver(ev sandbox.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	if ev.Exited {
		p.done = true
	}
	if p.sink == nil {
		p.queue = append(p.queue, ev)
		return
	}
	p.sink(ev)
}

func (p *process) finish(rc int32) {
	p.deliver(sandbox.Event{Pid: p.pid, Exited: true, ReturnCode: rc})
}
