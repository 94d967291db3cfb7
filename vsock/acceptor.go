package vsock

import (
	"context"
	"errors"
	"net"
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
	slot // Read, Write, BatchSize, Connected, Dropped, WaitConnected
	l    net.Listener

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the accept loop has returned

	accepted atomic.Uint64
}

var (
	_ link.Link     = (*Acceptor)(nil)
	_ link.Counters = (*Acceptor)(nil)
)

// ListenAcceptor listens on a (see Listen) and returns an Acceptor over the
// listener. log may be nil.
func ListenAcceptor(a Addr, log logrus.FieldLogger, opts ...Option) (*Acceptor, error) {
	l, err := Listen(a)
	if err != nil {
		return nil, err
	}
	return NewAcceptor(l, log, opts...), nil
}

// NewAcceptor starts accepting bridge data connections on l and returns at
// once. The Acceptor owns l and closes it on Close. log may be nil.
func NewAcceptor(l net.Listener, log logrus.FieldLogger, opts ...Option) *Acceptor {
	a := &Acceptor{l: l, done: make(chan struct{})}
	a.init(log, l.Addr().String(), "waiting for the peer to reconnect", opts)
	a.ctx, a.cancel = context.WithCancel(context.Background())
	go a.run()
	return a
}

// Addr returns the listener's address.
func (a *Acceptor) Addr() net.Addr { return a.l.Addr() }

// Accepted is the number of connections accepted so far.
func (a *Acceptor) Accepted() uint64 { return a.accepted.Load() }

// Counters implements link.Counters: frames Write dropped while there was
// no connection (tx CounterDropped) and the connections accepted (event
// CounterAccepted).
func (a *Acceptor) Counters() link.Counts {
	return a.slot.counts(CounterAccepted, a.Accepted())
}

// Close implements link.Link.
func (a *Acceptor) Close() error {
	a.cancel()
	a.l.Close() // unblocks Accept
	<-a.done
	return nil
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
		n := a.accepted.Add(1)
		old, ok := a.install(a.newSession(conn))
		if !ok {
			conn.Close()
			return
		}
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

// shutdown stops accepting and closes the link.
func (a *Acceptor) shutdown() {
	a.l.Close()
	a.slot.shutdown()
}
