package vsock

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/link"
)

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
	slot    // Read, Write, BatchSize, Connected, Dropped, WaitConnected
	addr    Addr
	backoff *Backoff

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned

	reconnects atomic.Uint64
}

var (
	_ link.Link     = (*Redialer)(nil)
	_ link.Counters = (*Redialer)(nil)
)

// NewRedialer starts dialling addr and returns at once; the link is usable
// immediately (Read waits, Write drops until the first connection is up).
// log may be nil. Cancelling ctx has the effect of Close. The only error is
// an invalid addr.
func NewRedialer(ctx context.Context, addr Addr, opts BackoffOptions, log logrus.FieldLogger, linkOpts ...Option) (*Redialer, error) {
	if err := addr.check(); err != nil {
		return nil, err
	}
	if addr.Scheme == SchemeVsock && addr.CID == CIDAny {
		return nil, &AddrError{Addr: addr.String(), Reason: "CID any can be listened on, not dialled"}
	}
	r := &Redialer{addr: addr, backoff: NewBackoff(opts), done: make(chan struct{})}
	r.init(log, addr.String(), "re-dialling", linkOpts)
	r.ctx, r.cancel = context.WithCancel(ctx)
	go r.run()
	return r, nil
}

// Addr returns the address the Redialer dials.
func (r *Redialer) Addr() Addr { return r.addr }

// Reconnects is the number of connections made after the first one.
func (r *Redialer) Reconnects() uint64 { return r.reconnects.Load() }

// Counters implements link.Counters: frames Write dropped while there was
// no connection (tx CounterDropped) and the reconnections (event
// CounterReconnects).
func (r *Redialer) Counters() link.Counts {
	return r.slot.counts(CounterReconnects, r.Reconnects())
}

// Close implements link.Link: it stops dialling, closes the connection and
// waits for the background goroutine to end.
func (r *Redialer) Close() error {
	r.cancel()
	<-r.done
	return nil
}

// run dials, installs the connection, waits for it to fail, and again.
func (r *Redialer) run() {
	defer close(r.done)
	defer r.slot.shutdown()
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
		s := r.newSession(conn)
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
		if _, ok := r.install(s); !ok {
			conn.Close()
			return
		}
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
