package agent

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/offload"
	"github.com/gvpn/gvpn/runtime/pump"
	"github.com/gvpn/gvpn/tap"
)

// hdrLen is the virtio-net header in front of every frame in the agent's
// pump: the pump joins the gate and a bridge link made WithVNetHdr.
const hdrLen = offload.VNetHdrLen

// gate is the payload side of the agent's pump: the TAP, once there is one.
// The pump runs from the agent's start, so that frames arriving on the
// bridge before the interface is configured are read and dropped (counted
// as Unconfigured) instead of piling up in the socket, as docs/bridge.md §4
// asks.
//
// Every frame the gate reads or writes starts with a virtio-net header, as
// on the bridge link. While superframes are agreed with the runtime
// (setSuperframes, docs/bridge.md §2.4) the TAP's packets pass both ways
// unchanged, superframes included: the runtime segments them. Otherwise
// the gate reads the TAP through offload.Link, which cuts superframes into
// MTU-sized frames and glues the bridge's frames for the TAP, and puts an
// all-zero header, which the bridge link sends as a plain frame, in front
// of each frame. A TAP the kernel gave no virtio-net header is read and
// written plain, behind the same zero headers.
//
//   - Read waits until a TAP is set, then reads from it;
//   - Write drops (and counts) frames while there is no TAP;
//   - Close closes the TAP, which removes the non-persistent device.
//
// The TAP is set once: the interface name cannot change while the agent
// runs (see agent.configure).
type gate struct {
	mu      sync.Mutex
	changed chan struct{} // closed when dev is set or the gate is closed
	dev     atomic.Pointer[tap.TAP]
	off     *offload.Link // dev behind offload.Link when dev has a virtio-net header; set with dev
	closed  atomic.Bool

	superframes atomic.Bool // agreed with the runtime, and dev has a virtio-net header

	unconfigured atomic.Uint64

	kmu      sync.Mutex
	krx, ktx map[string]uint64 // the TAP's kernel drops as last read
}

var (
	_ link.Link          = (*gate)(nil)
	_ link.Counters      = (*gate)(nil)
	_ link.KernelDropper = (*gate)(nil)
)

// dropUnconfigured counts frames the gate's Write dropped while there was
// no TAP.
const dropUnconfigured = "unconfigured"

// Counters implements link.Counters: the frames dropped while there was no
// TAP (tx dropUnconfigured), and what the gate's own offload.Link did
// (events).
func (g *gate) Counters() link.Counts {
	var c link.Counts
	if n := g.unconfigured.Load(); n > 0 {
		c.TxDrops = map[string]uint64{dropUnconfigured: n}
	}
	if g.dev.Load() != nil && g.off != nil {
		c.Add(g.off.Counters())
	}
	return c
}

// KernelDrops implements link.KernelDropper with the TAP's counters; none
// before the TAP is set, and after Close the last ones read (the final
// counters go out after the TAP is gone).
func (g *gate) KernelDrops() (rx, tx map[string]uint64, err error) {
	g.kmu.Lock()
	defer g.kmu.Unlock()
	if dev := g.dev.Load(); dev != nil && !g.closed.Load() {
		rx, tx, err = dev.KernelDrops()
		if err == nil {
			g.krx, g.ktx = rx, tx
		}
		return rx, tx, err
	}
	return g.krx, g.ktx, nil
}

var errGateClosed = fmt.Errorf("agent: interface: %w", link.ErrClosed)

func newGate() *gate { return &gate{changed: make(chan struct{})} }

// set installs the TAP. It reports false (and leaves dev to the caller)
// when the gate is closed or already has one.
func (g *gate) set(dev *tap.TAP) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed.Load() || g.dev.Load() != nil {
		return false
	}
	if dev.VNetHdr() {
		g.off = offload.NewLink(dev)
	}
	g.dev.Store(dev)
	close(g.changed)
	return true
}

// device returns the TAP, or nil before set.
func (g *gate) device() *tap.TAP { return g.dev.Load() }

// setSuperframes says whether the runtime agreed to superframes on the
// bridge. It reports whether they are carried now: only with a TAP that
// has a virtio-net header.
func (g *gate) setSuperframes(agreed bool) bool {
	on := agreed && g.canCarrySuperframes()
	g.superframes.Store(on)
	return on
}

// canCarrySuperframes reports whether the TAP hands over and takes
// superframes with virtio-net headers.
func (g *gate) canCarrySuperframes() bool {
	dev := g.dev.Load()
	return dev != nil && dev.VNetHdr()
}

// Unconfigured is the number of frames dropped because no interface was
// configured yet.
func (g *gate) Unconfigured() uint64 { return g.unconfigured.Load() }

// BatchSize implements link.Link.
func (g *gate) BatchSize() int { return offload.BatchSize }

// Read implements link.Link.
func (g *gate) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	dev := g.dev.Load()
	if dev == nil {
		g.mu.Lock()
		ch := g.changed
		g.mu.Unlock()
		<-ch
		if dev = g.dev.Load(); dev == nil || g.closed.Load() {
			return 0, errGateClosed
		}
	}
	if g.superframes.Load() && !g.off.Pending() {
		// Frames the offload.Link read before the switch go first.
		return dev.Read(bufs, sizes, offset)
	}
	var n int
	var err error
	if g.off != nil {
		n, err = g.off.Read(bufs, sizes, offset+hdrLen)
	} else {
		n, err = dev.Read(bufs, sizes, offset+hdrLen)
	}
	for i := range n {
		clear(bufs[i][offset : offset+hdrLen])
		sizes[i] += hdrLen
	}
	return n, err
}

// Write implements link.Link.
func (g *gate) Write(bufs [][]byte, offset int) (int, error) {
	dev := g.dev.Load()
	if dev == nil {
		if g.closed.Load() {
			return 0, errGateClosed
		}
		for _, b := range bufs {
			if len(b) > offset+hdrLen {
				g.unconfigured.Add(1)
			}
		}
		return len(bufs), nil
	}
	switch {
	case g.superframes.Load():
		// The runtime's superframes and frames, headers and all.
		return dev.Write(bufs, offset)
	case g.off != nil:
		// Plain frames from the bridge: the header room in front of each
		// is the offload.Link's to fill.
		return g.off.Write(bufs, offset+hdrLen)
	default:
		return dev.Write(bufs, offset+hdrLen)
	}
}

// Close implements link.Link.
func (g *gate) Close() error {
	g.mu.Lock()
	if !g.closed.Swap(true) && g.dev.Load() == nil {
		close(g.changed)
	}
	dev := g.dev.Load()
	g.mu.Unlock()
	if dev != nil {
		return dev.Close()
	}
	return nil
}

// filters are the checks of one configuration, for frames behind a
// virtio-net header: frame for MTU-sized frames, super (the same checks
// without the size limit) for superframes, whose segments the runtime
// checks one by one when it cuts them.
type filters[F pump.Filter] struct {
	frame, super F
}

func (f *filters[F]) check(p []byte) pump.Reason {
	h, ok := offload.DecodeVNetHdr(p)
	if !ok {
		return pump.Short
	}
	if h.GSOType != offload.GSONone {
		return f.super.Check(p[hdrLen:])
	}
	return f.frame.Check(p[hdrLen:])
}

// replaceable is a filter for frames behind a virtio-net header that a
// configure can replace while the pump runs (a new address or MTU). Before
// the first configure it refuses every frame, unless passUnset.
type replaceable[F pump.Filter] struct {
	cur       atomic.Pointer[filters[F]]
	passUnset bool
}

func (r *replaceable[F]) replace(frame, super F) {
	r.cur.Store(&filters[F]{frame: frame, super: super})
}

func (r *replaceable[F]) Check(p []byte) pump.Reason {
	f := r.cur.Load()
	if f == nil {
		if r.passUnset {
			return pump.Pass
		}
		return pump.SpoofedMAC
	}
	return f.check(p)
}

// egressFilter is a replaceable pump.EgressFilter. A superframe is
// checked as one frame: its segments share its addresses. Before the first
// configure it refuses everything: there is no interface to send from
// anyway.
type egressFilter struct {
	replaceable[*pump.EgressFilter]
}

func newEgressFilter() *egressFilter {
	return &egressFilter{}
}

// set makes f the filter, with its size limit for MTU-sized frames.
func (e *egressFilter) set(f pump.EgressFilter) {
	super := f
	super.MaxFrame = 0
	e.replace(&f, &super)
}

// ingressFilter is a replaceable pump.IngressFilter. Before the first
// configure it passes frames on to the gate, which drops and counts them.
type ingressFilter struct {
	replaceable[*pump.IngressFilter]
}

func newIngressFilter() *ingressFilter {
	return &ingressFilter{replaceable[*pump.IngressFilter]{passUnset: true}}
}

// set makes f the filter, with its size limit for MTU-sized frames.
func (i *ingressFilter) set(f pump.IngressFilter) {
	super := f
	super.MaxFrame = 0
	i.replace(&f, &super)
}
