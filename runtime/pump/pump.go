// Package pump joins two frame links: it moves Ethernet frames both ways
// between the payload's interface side (a TAP device or the bridge to an
// agent) and the uplink (the ExeUnit's data endpoint, or the bridge to the
// host), filters them, and counts frames, bytes and drops by reason.
//
// Each direction is one goroutine that reads a batch from one link and
// writes the accepted frames of that batch to the other: no per-frame
// hand-off between goroutines, no allocation per frame, order kept.
package pump

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/link"
)

// Config says what a Pump joins.
type Config struct {
	// Iface is the payload's interface side: its TAP device, or the bridge
	// to the agent that holds it.
	Iface link.Link
	// Uplink is the side toward the Golem network: the ExeUnit's data
	// endpoint (or, in the agent, the bridge to the host).
	Uplink link.Link
	// Egress checks frames from Iface to Uplink; nil passes all.
	Egress Filter
	// Ingress checks frames from Uplink to Iface; nil passes all.
	Ingress Filter
	// Log receives start/stop lines and rate-limited per-frame errors;
	// nil discards them.
	Log *logrus.Entry
}

// Pump moves frames between two links until Close or until a link fails.
type Pump struct {
	cfg      Config
	log      *logrus.Entry
	egress   dirStats
	ingress  dirStats
	wg       sync.WaitGroup
	done     chan struct{}
	errOnce  sync.Once
	err      error
	stopOnce sync.Once
	closing  atomic.Bool
}

// Start starts moving frames. The pump owns both links from now on: it
// closes them when it stops.
func Start(cfg Config) *Pump {
	log := cfg.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	p := &Pump{cfg: cfg, log: log, done: make(chan struct{})}
	p.wg.Add(2)
	go p.run(DirEgress, cfg.Iface, cfg.Uplink, cfg.Egress, &p.egress)
	go p.run(DirIngress, cfg.Uplink, cfg.Iface, cfg.Ingress, &p.ingress)
	go func() {
		p.wg.Wait()
		close(p.done)
	}()
	return p
}

// Done is closed when both directions have stopped.
func (p *Pump) Done() <-chan struct{} { return p.done }

// Err returns why the pump stopped on its own: the first link failure. It is
// nil while the pump runs and after a stop by Close.
func (p *Pump) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Close stops both directions, closes both links and waits until the
// goroutines have returned. It is idempotent.
func (p *Pump) Close() error {
	p.closing.Store(true)
	p.stop()
	<-p.done
	return nil
}

func (p *Pump) stop() {
	p.stopOnce.Do(func() {
		p.cfg.Iface.Close()
		p.cfg.Uplink.Close()
	})
}

func (p *Pump) fail(dir Direction, err error) {
	if p.closing.Load() {
		return
	}
	p.errOnce.Do(func() {
		p.err = fmt.Errorf("pump %s: %w", dir, err)
		p.log.WithError(err).WithField("dir", dir.String()).Warn("frame pump stopped: link failed")
	})
	p.stop()
}

func (p *Pump) run(dir Direction, src, dst link.Link, filter Filter, st *dirStats) {
	defer p.wg.Done()
	batch := src.BatchSize()
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, link.BufSize)
	}
	sizes := make([]int, batch)
	out := make([][]byte, 0, batch)
	limiter := logLimiter{every: 5 * time.Second}
	var drops [NumReasons]uint64

	for {
		n, err := src.Read(bufs, sizes, link.Headroom)
		out = out[:0]
		var frames, bytes uint64
		for i := range n {
			size := sizes[i]
			if size > len(bufs[i])-link.Headroom {
				drops[Oversize]++
				continue
			}
			f := bufs[i][link.Headroom : link.Headroom+size]
			if filter != nil {
				if r := filter.Check(f); r != Pass {
					drops[r]++
					continue
				}
			}
			out = append(out, bufs[i][:link.Headroom+size])
			frames++
			bytes += uint64(size)
		}
		// A refused frame (the kernel rejects a runt, the link is down) is
		// dropped alone; the frames after it in the batch still go out.
		for len(out) > 0 {
			written, werr := dst.Write(out, link.Headroom)
			if werr == nil {
				break
			}
			if link.IsClosed(werr) {
				st.add(frames, bytes, &drops)
				p.fail(dir, fmt.Errorf("write: %w", werr))
				return
			}
			if written >= len(out) {
				break
			}
			drops[WriteFailed]++
			frames--
			bytes -= uint64(len(out[written]) - link.Headroom)
			out = out[written+1:]
			if limiter.allow() {
				p.log.WithError(werr).WithField("dir", dir.String()).Warn("frame dropped: write failed")
			}
		}
		st.add(frames, bytes, &drops)
		if err != nil {
			p.fail(dir, fmt.Errorf("read: %w", err))
			return
		}
	}
}

// logLimiter lets one log line through per period, so that a flood of bad
// frames cannot flood the log.
type logLimiter struct {
	every time.Duration
	last  time.Time
}

func (l *logLimiter) allow() bool {
	now := time.Now()
	if now.Sub(l.last) < l.every {
		return false
	}
	l.last = now
	return true
}
