package pump

import (
	"sync/atomic"
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
