package offload

import "testing"

// The benchmarks measure the per-frame cost of cutting and gluing: the
// header parsing, copying and checksums the data path pays for every TSO
// superframe of MTU-1220 segments (bytes/s is payload through the call).

func BenchmarkSplit(b *testing.B) {
	fl := flow{payload: 1166 * 44, mss: 1166, tcpOpts: true}
	sf := fl.superframe()
	dst := make([]byte, 2048)
	var s Splitter
	b.SetBytes(int64(fl.payload))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Reset(sf); err != nil {
			b.Fatal(err)
		}
		for {
			if _, ok := s.Next(dst); !ok {
				break
			}
		}
	}
}

func BenchmarkCoalesce(b *testing.B) {
	fl := flow{payload: 1166 * 44, mss: 1166, tcpOpts: true}
	bufs := withHeadroom(fl.segments(), 16)
	c := NewCoalescer(4)
	b.SetBytes(int64(fl.payload))
	b.ReportAllocs()
	for b.Loop() {
		c.Coalesce(bufs, 16)
	}
}

// BenchmarkLink: a superframe read through a Link (split into a batch of
// frames) and written back (glued into one), as the netns TAP path does.
func BenchmarkLink(b *testing.B) {
	fl := flow{payload: 1166 * 44, mss: 1166, tcpOpts: true}
	round, _ := linkRoundTrip(b, fl)
	b.SetBytes(int64(fl.payload))
	b.ReportAllocs()
	for b.Loop() {
		round()
	}
}
