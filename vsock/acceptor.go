package vsock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/link"
)

// acceptRetryDelay is how long the accept loop pauses after an Accept error
// that does not close the listener (EMFILE, ENFILE, ECONNABORTED), so that
// a lack of descriptors does not become a busy loop.
const acceptRetryDelay = 50 * time.Millisecond

// Acceptor is the listening end of a bridge data connection (the runtime's
// end, or an agent started with --listen): a link.Link that outlives the
// connections under it, the counterpart of the Redialer.
//
// It accepts connections in the background. The newest connection wins: a
// new one replaces the current one, which is closed. So an agent that
// re-dials after a network hiccup, or a payload VM that rebooted, takes
// over the link at once, even if the old connection was never seen to
// fail.
//
//   - Read blocks while there is no connection and resumes on the next one;
//     a frame cut short by the loss of a connection is lost with it. A
//     connection that fails (error, end of stream, lost framing) is closed,
//     and the link waits for the next one.
//   - Write never waits for a connection: while there is none it drops the
//     frames and counts them (Dropped). When a write fails, the whole batch
//     is counted as dropped. Every frame is either written on the current
//     connection, in order, or dropped; frames are never reordered or
//     replayed. Write returns an error only after Close.
//   - Close stops accepting, closes the listener (for a unix address the
//     socket file goes with it) and the connection, and makes Read and
//     Write return an error wrapping link.ErrClosed. No goroutine outlives
//     Close.
type Acceptor struct {
	l         net.Listener
	log       logrus.FieldLogger
	errClosed error

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the accept loop has returned

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change of cur or closed
	cur     atomic.Pointer[session]
	closed  atomic.Bool

	dropped  atomic.Uint64
	accepted atomic.Uint64
}

var _ link.Link = (*Acceptor)(nil)

// ListenAcceptor listens on a (see Listen) and returns an Acceptor over the
// listener. log may be nil.
func ListenAcceptor(a Addr, log logrus.FieldLogger) (*Acceptor, error) {
	l, err := Listen(a)
	if err != nil {
		return nil, err
	}
	return NewAcceptor(l, log), nil
}

// NewAcceptor starts accepting bridge data connections on l and returns at
// once. The Acceptor owns l and closes it on Close. log may be nil.
func NewAcceptor(l net.Listener, log logrus.FieldLogger) *Acceptor {
	if log == nil {
		lg := logrus.New()
		lg.Out = io.Discard
		log = lg
	}
	a := &Acceptor{
		l:         l,
		log:       log.WithField("bridge", l.Addr().String()),
		errClosed: fmt.Errorf("vsock: bridge link %s: %w", l.Addr(), link.ErrClosed),
		done:      make(chan struct{}),
		changed:   make(chan struct{}),
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	go a.run()
	return a
}

// Addr returns the listener's address.
func (a *Acceptor) Addr() net.Addr { return a.l.Addr() }

// Connected reports whether a connection is up right now.
func (a *Acceptor) Connected() bool { return a.cur.Load() != nil }

// Dropped is the number of frames Write dropped because no connection was
// up or the write failed.
func (a *Acceptor) Dropped() uint64 { return a.dropped.Load() }

// Accepted is the number of connections accepted so far.
func (a *Acceptor) Accepted() uint64 { return a.accepted.Load() }

// WaitConnected blocks until a connection is up, ctx is done (ctx.Err()) or
// the Acceptor is closed (an error wrapping link.ErrClosed).
func (a *Acceptor) WaitConnected(ctx context.Context) error {
	for {
		a.mu.Lock()
		if a.closed.Load() {
			a.mu.Unlock()
			return a.errClosed
		}
		if a.cur.Load() != nil {
			a.mu.Unlock()
			return nil
		}
		ch := a.changed
		a.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// BatchSize implements link.Link.
func (a *Acceptor) BatchSize() int { return streamBatchSize }

// Read implements link.Link. It returns an error only after Close.
func (a *Acceptor) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		s, err := a.wait()
		if err != nil {
			return 0, err
		}
		n, err := s.link.Read(bufs, sizes, offset)
		if err == nil {
			return n, nil
		}
		a.fail(s, "read", err)
		if n > 0 {
			return n, nil // whole frames read before the failure
		}
	}
}

// Write implements link.Link. See the type's comment for what happens to
// frames without a connection.
func (a *Acceptor) Write(bufs [][]byte, offset int) (int, error) {
	if a.closed.Load() {
		return 0, a.errClosed
	}
	s := a.cur.Load()
	if s == nil {
		if a.closed.Load() {
			return 0, a.errClosed
		}
		a.dropped.Add(countFrames(bufs, offset))
		return len(bufs), nil
	}
	if _, err := s.link.Write(bufs, offset); err != nil {
		if a.closed.Load() {
			return 0, a.errClosed
		}
		a.fail(s, "write", err)
		a.dropped.Add(countFrames(bufs, offset))
	}
	return len(bufs), nil
}

// Close implements link.Link.
func (a *Acceptor) Close() error {
	a.cancel()
	a.l.Close() // unblocks Accept
	<-a.done
	return nil
}

func (a *Acceptor) wait() (*session, error) {
	if a.closed.Load() {
		return nil, a.errClosed
	}
	if s := a.cur.Load(); s != nil {
		return s, nil
	}
	a.mu.Lock()
	for {
		if a.closed.Load() {
			a.mu.Unlock()
			return nil, a.errClosed
		}
		if s := a.cur.Load(); s != nil {
			a.mu.Unlock()
			return s, nil
		}
		ch := a.changed
		a.mu.Unlock()
		<-ch
		a.mu.Lock()
	}
}

func (a *Acceptor) broadcastLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// fail retires s (once): it stops being current and its connection is
// closed, which unblocks a Read or Write still using it.
func (a *Acceptor) fail(s *session, op string, err error) {
	s.failOnce.Do(func() {
		a.mu.Lock()
		if a.cur.Load() == s {
			a.cur.Store(nil)
			a.broadcastLocked()
		}
		a.mu.Unlock()
		s.link.Close()
		close(s.failed)
		if !a.closed.Load() && op != "replaced" {
			a.log.WithError(err).Warnf("bridge connection lost (%s); waiting for the peer to reconnect", op)
		}
	})
}

func (a *Acceptor) run() {
	defer close(a.done)
	defer a.shutdown()
	for {
		conn, err := a.l.Accept()
		if err != nil {
			if a.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			a.log.WithError(err).Warn("bridge accept failed; retrying")
			select {
			case <-time.After(acceptRetryDelay):
				continue
			case <-a.ctx.Done():
				return
			}
		}
		s := &session{link: link.NewStream(conn, link.PrefixU32BE), failed: make(chan struct{})}
		n := a.accepted.Add(1)
		a.mu.Lock()
		if a.closed.Load() {
			a.mu.Unlock()
			conn.Close()
			return
		}
		old := a.cur.Swap(s)
		a.broadcastLocked()
		a.mu.Unlock()
		if old != nil {
			a.fail(old, "replaced", nil)
			a.log.Info("bridge reconnected: the new connection replaces the old one")
		} else if n == 1 {
			a.log.Info("bridge connected")
		} else {
			a.log.Info("bridge reconnected")
		}
	}
}

// shutdown marks the Acceptor closed before closing the connection, so that
// a Read or Write failing because of it reports ErrClosed.
func (a *Acceptor) shutdown() {
	a.l.Close()
	a.mu.Lock()
	a.closed.Store(true)
	s := a.cur.Swap(nil)
	a.broadcastLocked()
	a.mu.Unlock()
	if s != nil {
		a.fail(s, "close", link.ErrClosed)
	}
}
