package offload

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/gvpn/gvpn/runtime/link"
)

// BatchSize is the batch size of a Link: about one TSO superframe's worth
// of MTU-1220 segments per Read.
const BatchSize = 64

// Link presents a link whose frames carry a virtio-net header — a TAP
// opened with offloads — as a plain link.Link of Ethernet frames, one frame
// per buffer: Read splits superframes into MTU-sized frames (and completes
// partial checksums), Write coalesces runs of TCP segments into superframes
// and puts a header in front of everything else. Callers (the pump, its
// filters and counters) see exactly the frames the kernel would have sent
// and received without offloads.
//
// A packet whose header asks for segmentation that cannot be done is passed
// on as its bare frame, for the filters to judge; Malformed counts them.
type Link struct {
	inner link.Link

	// Read side: superframes read from inner and the one being split.
	rbufs     [][]byte
	rsizes    []int
	rn, ri    int
	rerr      error
	splitter  Splitter
	splitting bool

	malformed, smallGSO, split, coalesced atomic.Uint64

	// Write side.
	co     *Coalescer
	noGlue atomic.Bool // SetCoalescing(false)
}

var (
	_ link.Link          = (*Link)(nil)
	_ link.Counters      = (*Link)(nil)
	_ link.KernelDropper = (*Link)(nil)
)

// NewLink wraps inner, whose every frame starts with a VNetHdrLen-byte
// virtio-net header. The Link owns inner: Close closes it.
func NewLink(inner link.Link) *Link {
	n := max(inner.BatchSize(), 1)
	l := &Link{inner: inner, rbufs: make([][]byte, n), rsizes: make([]int, n), co: NewCoalescer(8)}
	for i := range l.rbufs {
		// A VLAN tag more than any packet a TAP makes, so that even
		// that one is not reported oversize.
		l.rbufs[i] = make([]byte, MaxPacket+4)
	}
	return l
}

// SetCoalescing turns the gluing of Write on (the default) or off. Off,
// every frame goes to the inner link alone behind a header that asks for
// nothing — for an inner link whose peer cannot take superframes at the
// moment (the bridge to an agent that did not agree to them, which then
// receives plain frames). It may be called at any time; a Write under way
// finishes with the setting it started with.
func (l *Link) SetCoalescing(on bool) { l.noGlue.Store(!on) }

// Pending reports whether Read holds frames it read from the inner link
// and has not handed out yet, so that a caller switching to reading the
// inner link directly can first take them, in order. It is for the
// goroutine that calls Read.
func (l *Link) Pending() bool {
	return (l.splitting && l.splitter.next >= 0) || l.ri < l.rn || l.rerr != nil
}

// Inner returns the wrapped link.
func (l *Link) Inner() link.Link { return l.inner }

// Stats counts what a Link did to the inner link's packets.
type Stats struct {
	SplitSuperframes     uint64 // superframes read and cut into frames
	CoalescedSuperframes uint64 // superframes written, each of two frames or more
	Malformed            uint64 // packets that could not be cut as their header asked; passed on as they were
	SmallGSO             uint64 // of the Malformed: a gso_size below MinGSOSize (a forged header)
}

// Stats returns the counters. It is safe to call at any time.
func (l *Link) Stats() Stats {
	return Stats{SplitSuperframes: l.split.Load(), CoalescedSuperframes: l.coalesced.Load(), Malformed: l.malformed.Load(),
		SmallGSO: l.smallGSO.Load()}
}

// Event names of a Link's counters (link.Counts.Events).
const (
	EventSplit     = "superframes_split"
	EventCoalesced = "superframes_coalesced"
	EventMalformed = "superframes_malformed"
	EventSmallGSO  = "superframes_small_gso"
)

// Counters implements link.Counters: the inner link's counts, and Stats as
// events (once non-zero).
func (l *Link) Counters() link.Counts {
	c := link.CountsOf(l.inner)
	st := l.Stats()
	for _, e := range [...]struct {
		name string
		n    uint64
	}{{EventSplit, st.SplitSuperframes}, {EventCoalesced, st.CoalescedSuperframes}, {EventMalformed, st.Malformed}, {EventSmallGSO, st.SmallGSO}} {
		if e.n > 0 {
			if c.Events == nil {
				c.Events = make(map[string]uint64)
			}
			c.Events[e.name] += e.n
		}
	}
	return c
}

// KernelDrops implements link.KernelDropper with the inner link's kernel
// counters (a TAP's); none when the inner link has none. The directions
// are the same: a Link reads and writes what its inner link does.
func (l *Link) KernelDrops() (rx, tx map[string]uint64, err error) {
	if kd, ok := l.inner.(link.KernelDropper); ok {
		return kd.KernelDrops()
	}
	return nil, nil, nil
}

// BatchSize implements link.Link.
func (l *Link) BatchSize() int { return BatchSize }

// Read implements link.Link. It reads from the inner link only when every
// frame of the superframes read before has been handed out, and only waits
// when it has nothing to return.
func (l *Link) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	want := min(len(bufs), len(sizes))
	for n < want {
		if l.splitting {
			size, ok := l.splitter.Next(bufs[n][offset:])
			if ok {
				sizes[n] = size
				n++
				continue
			}
			l.splitting = false
		}
		if l.ri < l.rn {
			buf, size := l.rbufs[l.ri], l.rsizes[l.ri]
			l.ri++
			if size > len(buf) || size < VNetHdrLen {
				// Cannot happen with a TAP; report it as the frame
				// it would be, for the caller to drop and count.
				sizes[n] = max(size-VNetHdrLen, 0)
				n++
				continue
			}
			pkt := buf[:size]
			if err := l.splitter.Reset(pkt); err != nil {
				l.malformed.Add(1)
				if err == ErrSmallGSO {
					l.smallGSO.Add(1)
				}
				f := pkt[VNetHdrLen:]
				if len(f) <= len(bufs[n])-offset {
					copy(bufs[n][offset:], f)
				}
				sizes[n] = len(f)
				n++
				continue
			}
			if l.splitter.gso {
				l.split.Add(1)
			}
			l.splitting = true
			continue
		}
		if n > 0 {
			break
		}
		if l.rerr != nil {
			err := l.rerr
			l.rerr = nil
			return 0, err
		}
		m, err := l.inner.Read(l.rbufs, l.rsizes, 0)
		l.rn, l.ri = m, 0
		if err != nil {
			if m == 0 {
				return 0, err
			}
			l.rerr = err // frames first
		}
	}
	return n, nil
}

var errHeadroom = errors.New("offload: write needs headroom for the virtio-net header")

// Write implements link.Link. offset must be at least VNetHdrLen. When the
// inner link refuses a packet, the returned count is the index of the
// packet's first frame.
func (l *Link) Write(bufs [][]byte, offset int) (int, error) {
	if offset < VNetHdrLen {
		return 0, fmt.Errorf("%w: offset %d < %d", errHeadroom, offset, VNetHdrLen)
	}
	l.co.SetAlone(l.noGlue.Load())
	done := 0
	for done < len(bufs) {
		pkts, ends, consumed := l.co.Coalesce(bufs[done:], offset)
		if l.co.used > 0 {
			l.coalesced.Add(uint64(l.co.used))
		}
		w, err := l.inner.Write(pkts, 0)
		if err != nil {
			if w > 0 {
				return done + ends[w-1], err
			}
			return done, err
		}
		done += consumed
	}
	return len(bufs), nil
}

// Close implements link.Link.
func (l *Link) Close() error { return l.inner.Close() }
