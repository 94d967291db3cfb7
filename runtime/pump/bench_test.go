package pump

import (
	"testing"

	"github.com/gvpn/gvpn/runtime/link"
)

// BenchmarkEgressCheck is the per-frame header check every frame of the
// payload passes (frame's parser, then the address rules).
func BenchmarkEgressCheck(b *testing.B) {
	f := udpFrame(b, ownMAC, peerMAC, ownIP, peerIP, make([]byte, 1166))
	flt := &EgressFilter{MAC: ownMAC, IP: ownIP, MaxFrame: maxFrame}
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		if r := flt.Check(f); r != Pass {
			b.Fatal(r)
		}
	}
}

// BenchmarkPump: batches of 50 frames through a running pump between two
// in-memory links, the pump's own cost per frame (the links copy).
func BenchmarkPump(b *testing.B) {
	h := newHarness(b)
	f := udpFrame(b, ownMAC, peerMAC, ownIP, peerIP, make([]byte, 1000))
	batch := make([][]byte, 50)
	for i := range batch {
		batch[i] = append(make([]byte, link.Headroom), f...)
	}
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, link.BufSize)
	}
	sizes := make([]int, 64)
	b.SetBytes(int64(len(f) * len(batch)))
	b.ReportAllocs()
	for b.Loop() {
		h.payload.Write(batch, link.Headroom)
		for got := 0; got < len(batch); {
			n, err := h.network.Read(bufs, sizes, link.Headroom)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
}
