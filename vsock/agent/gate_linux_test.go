package agent

import (
	"net/netip"
	"testing"

	"github.com/gvpn/gvpn/runtime/frame"
	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/link/linktest"
	"github.com/gvpn/gvpn/runtime/pump"
)

// TestGateBeforeConfigure: without an interface the gate drops and counts
// what the bridge delivers, and Close releases a reader waiting for one.
func TestGateBeforeConfigure(t *testing.T) {
	g := newGate()
	frames := [][]byte{make([]byte, link.Headroom+60), make([]byte, link.Headroom), make([]byte, link.Headroom+42)}
	n, err := g.Write(frames, link.Headroom)
	if err != nil || n != 3 {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if got := g.Unconfigured(); got != 2 {
		t.Fatalf("unconfigured %d, want 2 (the empty frame is not a frame)", got)
	}
	done := make(chan error, 1)
	go func() {
		bufs, sizes := linktest.Bufs(1)
		_, err := g.Read(bufs, sizes, link.Headroom)
		done <- err
	}()
	g.Close()
	if err := <-done; !link.IsClosed(err) {
		t.Fatalf("Read after Close: %v", err)
	}
	if _, err := g.Write(frames, link.Headroom); !link.IsClosed(err) {
		t.Fatalf("Write after Close: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	e, i := newEgressFilter(), newIngressFilter()
	if e.Check(make([]byte, 60)) == pump.Pass || i.Check(make([]byte, 60)) != pump.Pass {
		t.Fatal("before configure, egress must refuse and ingress pass (to the gate)")
	}
}

// TestFiltersDoNotAllocate: the replaceable filters sit on the per-frame
// path.
func TestFiltersDoNotAllocate(t *testing.T) {
	var e egressFilter
	var i ingressFilter
	mac := frame.MAC{0x90, 0x13, 10, 0, 0, 2}
	e.set(pump.EgressFilter{MAC: mac, IP: netip.MustParseAddr("10.0.0.2"), MaxFrame: 1234})
	i.set(pump.IngressFilter{MaxFrame: 1234})
	f := make([]byte, hdrLen+60) // behind a virtio-net header, as in the agent's pump
	copy(f[hdrLen+6:], mac[:])
	f[hdrLen+12], f[hdrLen+13] = 0x08, 0x06
	if n := testing.AllocsPerRun(1000, func() { e.Check(f); i.Check(f) }); n != 0 {
		t.Fatalf("%.1f allocations per frame", n)
	}
}
