package pump

import (
	"errors"
	"sync/atomic"

	"github.com/gvpn/gvpn/runtime/link"
)

// Direction names one of the two ways frames cross a pump.
type Direction uint8

const (
	// DirEgress is payload → network (what the payload sends).
	DirEgress Direction = iota
	// DirIngress is network → payload (what the payload receives).
	DirIngress
)

func (d Direction) String() string {
	if d == DirEgress {
		return "egress"
	}
	return "ingress"
}

type dirStats struct {
	frames atomic.Uint64
	bytes  atomic.Uint64
	drops  [NumReasons]atomic.Uint64
}

// add publishes one batch's counts and resets the caller's drop scratch, so
// the hot loop touches shared atomics once per batch, not once per frame.
func (s *dirStats) add(frames, bytes uint64, drops *[NumReasons]uint64) {
	if frames > 0 {
		s.frames.Add(frames)
		s.bytes.Add(bytes)
	}
	for r := range drops {
		if drops[r] > 0 {
			s.drops[r].Add(drops[r])
			drops[r] = 0
		}
	}
}

func (s *dirStats) snapshot() DirStats {
	d := DirStats{Frames: s.frames.Load(), Bytes: s.bytes.Load()}
	for r := range s.drops {
		d.Drops[r] = s.drops[r].Load()
	}
	return d
}

// DirStats counts what crossed a pump in one direction.
type DirStats struct {
	Frames uint64 // frames delivered
	Bytes  uint64 // bytes of delivered frames
	Drops  [NumReasons]uint64
}

// Dropped returns the total number of dropped frames.
func (d DirStats) Dropped() uint64 {
	var n uint64
	for _, c := range d.Drops {
		n += c
	}
	return n
}

// DropMap returns the non-zero drop counters keyed by reason name.
func (d DirStats) DropMap() map[string]uint64 {
	m := make(map[string]uint64)
	for r, c := range d.Drops {
		if c > 0 {
			m[Reason(r).String()] = c
		}
	}
	return m
}

// Stats is a snapshot of a pump's counters.
type Stats struct {
	Egress  DirStats
	Ingress DirStats
}

// Stats returns the current counters. It is safe to call at any time.
func (p *Pump) Stats() Stats {
	return Stats{Egress: p.egress.snapshot(), Ingress: p.ingress.snapshot()}
}

// LinkStats are the counters of the two links a pump joins, turned from the
// links' own directions (link.Counts: rx toward Read, tx after Write) into
// the payload's: what the Iface lost on its way to Read and what the Uplink
// lost after Write is egress; the Uplink's rx and the Iface's tx are
// ingress. Nil maps are empty.
type LinkStats struct {
	// EgressDrops and IngressDrops are the links' own drops
	// (link.Counters).
	EgressDrops, IngressDrops map[string]uint64
	// EgressKernel and IngressKernel are the kernel's drops
	// (link.KernelDropper).
	EgressKernel, IngressKernel map[string]uint64
	// Events are the links' counts that are not losses.
	Events map[string]uint64
	// KernelErr says why a link's kernel counters could not be read.
	KernelErr error
}

// Links returns the counters of the pump's links. It is safe to call at
// any time, also after the pump stopped (the counts then no longer move;
// the kernel's may be gone).
func (p *Pump) Links() LinkStats {
	return sideStats(p.cfg.Iface, p.cfg.Uplink)
}

// sideStats is LinkStats for iface and uplink on the pump's two sides, for a
// caller that holds the links and not the pump. Either may be nil.
func sideStats(iface, uplink link.Link) LinkStats {
	var s LinkStats
	var errs []error
	for _, side := range []struct {
		l       link.Link
		rx, rxK *map[string]uint64 // where the link's rx goes
		tx, txK *map[string]uint64
	}{
		{iface, &s.EgressDrops, &s.EgressKernel, &s.IngressDrops, &s.IngressKernel},
		{uplink, &s.IngressDrops, &s.IngressKernel, &s.EgressDrops, &s.EgressKernel},
	} {
		if side.l == nil {
			continue
		}
		c := link.CountsOf(side.l)
		*side.rx = link.AddCounts(*side.rx, c.RxDrops)
		*side.tx = link.AddCounts(*side.tx, c.TxDrops)
		s.Events = link.AddCounts(s.Events, c.Events)
		kd, ok := side.l.(link.KernelDropper)
		if !ok {
			continue
		}
		rx, tx, err := kd.KernelDrops()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		*side.rxK = link.AddCounts(*side.rxK, rx)
		*side.txK = link.AddCounts(*side.txK, tx)
	}
	s.KernelErr = errors.Join(errs...)
	return s
}
