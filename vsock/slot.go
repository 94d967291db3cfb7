package vsock

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/offload"
)

// streamBatchSize is the batch size of every bridge data link. BatchSize of
// link.Stream is a constant, so a zero Stream answers it.
var streamBatchSize = (&link.Stream{}).BatchSize()

// slot is the reconnecting stream link that the Acceptor and the Redialer
// are: a link.Link over whichever bridge connection is current, fed by an
// accept loop (Acceptor) or a dial loop (Redialer) through install. Its
// Read, Write and waiting are the behaviour both types document:
//
//   - Read blocks while there is no connection and resumes on the next one;
//     a connection that fails is retired (closed) and Read waits again.
//   - Write never waits: without a connection, or when the write fails, it
//     drops the frames and counts them (Dropped). It returns an error only
//     after shutdown.
type slot struct {
	log       logrus.FieldLogger
	errClosed error
	lost      string // what the log says follows a lost connection
	vnetHdr   bool   // WithVNetHdr: every connection carries virtio-net headers

	// mu serialises the changes of cur and closed with the waiters'
	// checks; the atomics let Read and Write look at them without it.
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change of cur or closed
	cur     atomic.Pointer[session]
	closed  atomic.Bool

	dropped atomic.Uint64
}

// session is one connection of a slot.
type session struct {
	link     *link.Stream
	failOnce sync.Once
	failed   chan struct{} // closed by fail
}

// newSession frames conn as the slot's connections are framed.
func (s *slot) newSession(conn net.Conn) *session {
	l := link.NewStream(conn, link.PrefixU32BE)
	if s.vnetHdr {
		_ = l.SetHeader(offload.VNetHdrLen) // a PrefixU32BE stream takes any header length of 1…255
	}
	return &session{link: l, failed: make(chan struct{})}
}

// Option changes how a bridge data link frames its frames.
type Option func(*slot)

// WithVNetHdr makes every frame in the link's buffers start with a
// virtio-net header (offload.VNetHdrLen bytes; offload.Link reads and
// writes such a link), carried on the bridge as docs/bridge.md §2.4 says:
// a frame behind an all-zero header travels as a plain frame, any other
// with its header and link.HeaderFlag; frames read are returned with the
// header they were sent with, or an all-zero one. Whether non-zero headers
// may be sent is the caller's to agree with the peer (§3): the link only
// carries what it is given.
func WithVNetHdr() Option { return func(s *slot) { s.vnetHdr = true } }

// init prepares the slot for the bridge link at addr; a nil log discards
// the logs.
func (s *slot) init(log logrus.FieldLogger, addr, lost string, opts []Option) {
	for _, o := range opts {
		o(s)
	}
	if log == nil {
		l := logrus.New()
		l.Out = io.Discard
		log = l
	}
	s.log = log.WithField("bridge", addr)
	s.errClosed = fmt.Errorf("vsock: bridge link %s: %w", addr, link.ErrClosed)
	s.lost = lost
	s.changed = make(chan struct{})
}

// Connected reports whether a connection is up right now.
func (s *slot) Connected() bool { return s.cur.Load() != nil }

// Names of the bridge links' counters (link.Counts).
const (
	CounterDropped    = "bridge_dropped"    // tx: written while there was no connection
	CounterAccepted   = "bridge_accepted"   // event: connections an Acceptor took
	CounterReconnects = "bridge_reconnects" // event: connections a Redialer made after the first
)

// counts are the link's counters (link.Counts): the frames dropped while
// there was no connection, once there are any, and event n.
func (s *slot) counts(event string, n uint64) link.Counts {
	c := link.Counts{Events: map[string]uint64{event: n}}
	if d := s.Dropped(); d > 0 {
		c.TxDrops = map[string]uint64{CounterDropped: d}
	}
	return c
}

// Dropped is the number of frames Write dropped because no connection was
// up or the write failed.
func (s *slot) Dropped() uint64 { return s.dropped.Load() }

// WaitConnected blocks until a connection is up, ctx is done (ctx.Err()) or
// the link is closed (an error wrapping link.ErrClosed).
func (s *slot) WaitConnected(ctx context.Context) error {
	for {
		s.mu.Lock()
		if s.closed.Load() {
			s.mu.Unlock()
			return s.errClosed
		}
		if s.cur.Load() != nil {
			s.mu.Unlock()
			return nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// BatchSize implements link.Link.
func (s *slot) BatchSize() int { return streamBatchSize }

// Read implements link.Link. It returns an error only after Close.
func (s *slot) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		cur, err := s.wait()
		if err != nil {
			return 0, err
		}
		n, err := cur.link.Read(bufs, sizes, offset)
		if err == nil {
			return n, nil
		}
		s.fail(cur, "read", err)
		if n > 0 {
			return n, nil // whole frames read before the failure
		}
	}
}

// Write implements link.Link. See the type's comment for what happens to
// frames without a connection.
func (s *slot) Write(bufs [][]byte, offset int) (int, error) {
	if s.closed.Load() {
		return 0, s.errClosed
	}
	cur := s.cur.Load()
	if cur == nil {
		if s.closed.Load() {
			return 0, s.errClosed
		}
		s.dropped.Add(countFrames(bufs, offset))
		return len(bufs), nil
	}
	if _, err := cur.link.Write(bufs, offset); err != nil {
		if s.closed.Load() {
			return 0, s.errClosed
		}
		s.fail(cur, "write", err)
		s.dropped.Add(countFrames(bufs, offset))
	}
	return len(bufs), nil
}

// countFrames counts the frames a Write would send (empty ones are skipped
// by every link, so they are not dropped either).
func countFrames(bufs [][]byte, offset int) uint64 {
	var n uint64
	for _, b := range bufs {
		if len(b) > offset {
			n++
		}
	}
	return n
}

// wait returns the current session, blocking while there is none.
func (s *slot) wait() (*session, error) {
	if s.closed.Load() {
		return nil, s.errClosed
	}
	if cur := s.cur.Load(); cur != nil {
		return cur, nil
	}
	s.mu.Lock()
	for {
		if s.closed.Load() {
			s.mu.Unlock()
			return nil, s.errClosed
		}
		if cur := s.cur.Load(); cur != nil {
			s.mu.Unlock()
			return cur, nil
		}
		ch := s.changed
		s.mu.Unlock()
		<-ch
		s.mu.Lock()
	}
}

// broadcastLocked wakes every waiter. s.mu must be held.
func (s *slot) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// install makes cur the current session and returns the one it replaces
// (nil if none), which the caller retires with fail. It reports false, and
// installs nothing, once the slot is closed.
func (s *slot) install(cur *session) (old *session, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, false
	}
	old = s.cur.Swap(cur)
	s.broadcastLocked()
	return old, true
}

// fail retires cur (once): it stops being current and its connection is
// closed, which unblocks a Read or Write still using it.
func (s *slot) fail(cur *session, op string, err error) {
	cur.failOnce.Do(func() {
		s.mu.Lock()
		if s.cur.Load() == cur {
			s.cur.Store(nil)
			s.broadcastLocked()
		}
		s.mu.Unlock()
		cur.link.Close()
		close(cur.failed)
		if !s.closed.Load() && op != "replaced" {
			s.log.WithError(err).Warnf("bridge connection lost (%s); %s", op, s.lost)
		}
	})
}

// shutdown marks the slot closed before closing the connection, so that a
// Read or Write failing because of it reports ErrClosed.
func (s *slot) shutdown() {
	s.mu.Lock()
	s.closed.Store(true)
	cur := s.cur.Swap(nil)
	s.broadcastLocked()
	s.mu.Unlock()
	if cur != nil {
		s.fail(cur, "close", link.ErrClosed)
	}
}
