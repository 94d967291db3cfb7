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

// gate is the payload side of the agent's pump: the TAP, once there is one.
// The pump runs from the agent's start, so that frames arriving on the
// bridge before the interface is configured are read and dropped (counted
// as Unconfigured) instead of piling up in the socket, as docs/bridge.md §4
// asks.
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
	data    link.Link // dev, or dev behind offload.Link; set with dev
	closed  atomic.Bool

	unconfigured atomic.Uint64
}

var _ link.Link = (*gate)(nil)

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
	g.data = dev
	if dev.VNetHdr() {
		// The payload's TCP hands the TAP superframes; the bridge and
		// the filters take one MTU-sized frame at a time.
		g.data = offload.NewLink(dev)
	}
	g.dev.Store(dev)
	close(g.changed)
	return true
}

// device returns the TAP, or nil before set.
func (g *gate) device() *tap.TAP { return g.dev.Load() }

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
	return g.data.Read(bufs, sizes, offset)
}

// Write implements link.Link.
func (g *gate) Write(bufs [][]byte, offset int) (int, error) {
	dev := g.dev.Load()
	if dev == nil {
		if g.closed.Load() {
			return 0, errGateClosed
		}
		for _, b := range bufs {
			if len(b) > offset {
				g.unconfigured.Add(1)
			}
		}
		return len(bufs), nil
	}
	return g.data.Write(bufs, offset)
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

// egressFilter is a pump.EgressFilter that a configure can replace while
// the pump runs (a new address or MTU). Before the first configure it
// refuses everything: there is no interface to send from anyway.
type egressFilter struct {
	cur atomic.Pointer[pump.EgressFilter]
}

func (f *egressFilter) Check(frame []byte) pump.Reason {
	p := f.cur.Load()
	if p == nil {
		return pump.SpoofedMAC
	}
	return p.Check(frame)
}

// ingressFilter is the replaceable pump.IngressFilter. Before the first
// configure it passes frames on to the gate, which drops and counts them.
type ingressFilter struct {
	cur atomic.Pointer[pump.IngressFilter]
}

func (f *ingressFilter) Check(frame []byte) pump.Reason {
	p := f.cur.Load()
	if p == nil {
		return pump.Pass
	}
	return p.Check(frame)
}
