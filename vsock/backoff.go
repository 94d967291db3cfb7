package vsock

import (
	"context"
	"math/rand/v2"
	"time"
)

// Default backoff bounds: quick enough that a restarted runtime is found
// within a fraction of a second, slow enough that a missing one costs
// nothing.
const (
	DefaultBackoffInitial = 100 * time.Millisecond
	DefaultBackoffMax     = 5 * time.Second
)

// BackoffOptions bound the delays of a Backoff. Zero fields take the
// defaults; a Max below Initial is raised to Initial.
type BackoffOptions struct {
	Initial time.Duration // first delay (before jitter)
	Max     time.Duration // cap of the doubling delay
}

func (o BackoffOptions) withDefaults() BackoffOptions {
	if o.Initial <= 0 {
		o.Initial = DefaultBackoffInitial
	}
	if o.Max <= 0 {
		o.Max = DefaultBackoffMax
	}
	if o.Max < o.Initial {
		o.Max = o.Initial
	}
	return o
}

// Backoff yields capped exponential delays with jitter: the n-th delay is
// drawn uniformly from [d/2, d] with d = min(Initial·2ⁿ, Max), so peers that
// lost the same runtime do not all retry in step. A Backoff is not safe for
// concurrent use.
type Backoff struct {
	opts BackoffOptions
	cur  time.Duration
}

// NewBackoff returns a Backoff whose next delay is about opts.Initial.
func NewBackoff(opts BackoffOptions) *Backoff {
	o := opts.withDefaults()
	return &Backoff{opts: o, cur: o.Initial}
}

// Options returns the bounds in use, defaults filled in.
func (b *Backoff) Options() BackoffOptions { return b.opts }

// Next returns the next delay and doubles the base for the one after.
func (b *Backoff) Next() time.Duration {
	d := b.cur
	half := d / 2
	delay := half + rand.N(d-half+1)
	if b.cur > b.opts.Max/2 {
		b.cur = b.opts.Max // also keeps the doubling from overflowing
	} else {
		b.cur *= 2
	}
	return delay
}

// Reset makes the next delay about Initial again, after a success.
func (b *Backoff) Reset() { b.cur = b.opts.Initial }

// Wait sleeps for Next() or until ctx is done, whichever comes first, and
// returns ctx.Err() in the latter case.
func (b *Backoff) Wait(ctx context.Context) error {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
