package pump

import "testing"

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
	round, n := steadyRound(b, newHarness(b))
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		round()
	}
}
