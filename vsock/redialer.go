package vsock

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/link"
)

// streamBatchSize is the batch size of every bridge data link. BatchSize of
// link.Stream is a constant, so a zero Stream answers it.
var streamBatchSize = (&link.Stream{}).BatchSize()

// Redialer is the agent's end of the bridge data connection: a link.Link
// that outlives the connections under it.
//
// It dials its address in the background and re-dials whenever the current
// connection fails (a read or write error, EOF, a desynchronised stream):
// the failed connection is closed, the next dial waits a capped, jittered
// exponential backoff, and the backoff restarts from Initial once a
// connection has lived at least Max.
//
//   - Read blocks while there is no connection and resumes on the next one;
//     a frame cut short by a connection loss is lost with the connection.
//   - Write never waits for a connection: while disconnected it drops the
//     frames and counts them (Dropped). When a write fails, the whole batch
//     is counted as dropped, although the peer may have received some of it.
//     So every frame is either written on the current connection, in order,
//     or dropped; frames are never reordered. Write reports every frame as
//     handled and returns an error only after Close.
//   - Close (or cancelling the context given to NewRedialer) stops the
//     dialling, closes the connection and makes Read and Write return an
//     error wrapping link.ErrClosed. No goroutine outlives Close.
//
// On a connected link Write applies the usual stream backpressure: if the
// peer stops reading, Write blocks, as a write to any socket does. Only
// errors, not slowness, trigger a reconnect.
type Redialer struct {
	addr      Addr
	log       logrus.FieldLogger
	backoff   *Backoff
	errClosed error

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned

	// mu serialises the changes of cur and closed with the waiters'
	// checks; the atomics let Read and Write look at them without it.
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change of cur or closed
	cur     atomic.Pointer[session]
	closed  atomic.Bool

	dropped    atomic.Uint64
	reconnects atomic.Uint64
}

// session is one connection of a Redialer.
type session struct {
	link     *link.Stream
	failOnce sync.Once
	failed   chan struct{} // closed by fail
}

var _ link.Link = (*Redialer)(nil)

// NewRedialer starts dialling addr and returns at once; the link is usable
// immediately (Read waits, Write drops until the first connection is up).
// log may be nil. Cancelling ctx has the effect of Close. The only error is
// an invalid addr.
func NewRedialer(ctx context.Context, addr Addr, opts BackoffOptions, log logrus.FieldLogger) (*Redialer, error) {
	if err := addr.check(); err != nil {
		return nil, err
	}
	if addr.Scheme == SchemeVsock && addr.CID == CIDAny {
		return nil, &AddrError{Addr: addr.String(), Reason: "CID any can be listened on, not dialled"}
	}
	if log == nil {
		l := logrus.New()
		l.Out = io.Discard
		log = l
	}
	r := &Redialer{
		addr:      addr,
		log:       log.WithField("bridge", addr.String()),
		backoff:   NewBackoff(opts),
		errClosed: fmt.Errorf("vsock: bridge link %s: %w", addr, link.ErrClosed),
		done:      make(chan struct{}),
		changed:   make(chan struct{}),
	}
	r.ctx, r.cancel = context.WithCancel(ctx)
	go r.run()
	return r, nil
}

// Addr returns the address the Redialer dials.
func (r *Redialer) Addr() Addr { return r.addr }

// Connected reports whether a connection is up right now.
func (r *Redialer) Connected() bool { return r.cur.Load() != nil }

// Dropped is the number of frames Write dropped because no connection was
// up or the write failed.
func (r *Redialer) Dropped() uint64 { return r.dropped.Load() }

// Reconnects is the number of connections made after the first one.
func (r *Redialer) Reconnects() uint64 { return r.reconnects.Load() }

// BatchSize implements link.Link.
func (r *Redialer) BatchSize() int { return streamBatchSize }

// Read implements link.Link. It returns an error only after Close.
func (r *Redialer) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		s, err := r.wait()
		if err != nil {
			return 0, err
		}
		n, err := s.link.Read(bufs, sizes, offset)
		if err == nil {
			return n, nil
		}
		r.fail(s, "read", err)
		if n > 0 {
			return n, nil // whole frames read before the failure
		}
	}
}

// Write implements link.Link. See the type's comment for what happens to
// frames without a connection.
func (r *Redialer) Write(bufs [][]byte, offset int) (int, error) {
	if r.closed.Load() {
		return 0, r.errClosed
	}
	s := r.cur.Load()
	if s == nil {
		if r.closed.Load() {
			return 0, r.errClosed
		}
		r.dropped.Add(countFrames(bufs, offset))
		return len(bufs), nil
	}
	if _, err := s.link.Write(bufs, offset); err != nil {
		if r.closed.Load() {
			return 0, r.errClosed
		}
		r.fail(s, "write", err)
		r.dropped.Add(countFrames(bufs, offset))
	}
	return len(bufs), nil
}

// Close implements link.Link: it stops dialling, closes the connection and
// waits for the background goroutine to end.
func (r *Redialer) Close() error {
	r.cancel()
	<-r.done
	return nil
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
func (r *Redialer) wait() (*session, error) {
	if r.closed.Load() {
		return nil, r.errClosed
	}
	if s := r.cur.Load(); s != nil {
		return s, nil
	}
	r.mu.Lock()
	for {
		if r.closed.Load() {
			r.mu.Unlock()
			return nil, r.errClosed
		}
		if s := r.cur.Load(); s != nil {
			r.mu.Unlock()
			return s, nil
		}
		ch := r.changed
		r.mu.Unlock()
		<-ch
		r.mu.Lock()
	}
}

// broadcastLocked wakes every waiter. r.mu must be held.
func (r *Redialer) broadcastLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// fail retires s: it stops being current, its connection is closed (which
// unblocks a Read or Write still using it) and the dial loop is told.
// Only the first call per session does anything.
func (r *Redialer) fail(s *session, op string, err error) {
	s.failOnce.Do(func() {
		r.mu.Lock()
		if r.cur.Load() == s {
			r.cur.Store(nil)
			r.broadcastLocked()
		}
		r.mu.Unlock()
		s.link.Close()
		close(s.failed)
		if !r.closed.Load() {
			r.log.WithError(err).Warnf("bridge connection lost (%s); re-dialling", op)
		}
	})
}

// run dials, installs the connection, waits for it to fail, and again.
func (r *Redialer) run() {
	defer close(r.done)
	defer r.shutdown()
	established := false
	failures := 0
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if r.backoff.Wait(r.ctx) != nil {
				return
			}
		}
		conn, err := Dial(r.ctx, r.addr)
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			failures++
			if failures == 1 {
				r.log.WithError(err).Warn("bridge dial failed; retrying with backoff")
			} else {
				r.log.WithError(err).Debugf("bridge dial failed (%d in a row)", failures)
			}
			continue
		}
		failures = 0
		s := &session{link: link.NewStream(conn, link.PrefixU32BE), failed: make(chan struct{})}
		up := time.Now()
		if established {
			// Counted before the session is visible, so that whoever sees
			// Connected also sees the count.
			r.reconnects.Add(1)
			r.log.Info("bridge reconnected")
		} else {
			r.log.Info("bridge connected")
		}
		established = true
		r.mu.Lock()
		r.cur.Store(s)
		r.broadcastLocked()
		r.mu.Unlock()
		select {
		case <-s.failed:
		case <-r.ctx.Done():
			return
		}
		if time.Since(up) >= r.backoff.Options().Max {
			r.backoff.Reset()
		}
	}
}

// shutdown marks the Redialer closed before closing the connection, so that
// a Read or Write failing because of it reports ErrClosed.
func (r *Redialer) shutdown() {
	r.mu.Lock()
	r.closed.Store(true)
	s := r.cur.Load()
	r.cur.Store(nil)
	r.broadcastLocked()
	r.mu.Unlock()
	if s != nil {
		r.fail(s, "close", link.ErrClosed)
	}
}
