package offload

import (
	"bytes"
	"testing"
)

// FuzzSplit feeds arbitrary packets to the Splitter: no panic, and every
// frame it produces fits in the packet's own headers plus one segment.
func FuzzSplit(f *testing.F) {
	for _, fl := range flows {
		f.Add(fl.superframe())
	}
	f.Add(make([]byte, VNetHdrLen))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var s Splitter
		if s.Reset(pkt) != nil {
			return
		}
		want := s.Frames()
		dst := make([]byte, len(pkt))
		got := 0
		for {
			n, ok := s.Next(dst)
			if !ok {
				break
			}
			if n > len(pkt) || n < 0 {
				t.Fatalf("frame of %d bytes from a %d-byte packet", n, len(pkt))
			}
			got++
			if got > want {
				t.Fatalf("more frames than Frames() = %d", want)
			}
		}
		if got != want {
			t.Fatalf("%d frames, Frames() = %d", got, want)
		}
	})
}

// FuzzCoalesceRoundTrip builds a stream with gopacket from the fuzzer's
// parameters, damages one byte of one frame and reorders or drops one, then
// checks that coalescing and splitting again gives back exactly the frames
// that went in, whatever they are.
func FuzzCoalesceRoundTrip(f *testing.F) {
	f.Add(uint16(5000), uint16(1166), uint8(0), uint16(0), uint32(0), uint8(0), uint16(0), uint8(0), uint8(0))
	f.Add(uint16(60000), uint16(1154), uint8(3), uint16(65530), uint32(1<<31), uint8(1), uint16(500), uint8(0x55), uint8(1))
	f.Add(uint16(9000), uint16(1000), uint8(2), uint16(7), uint32(7), uint8(4), uint16(0), uint8(0), uint8(2))
	f.Add(uint16(3000), uint16(1166), uint8(5), uint16(1), uint32(1), uint8(2), uint16(34+12), uint8(0x01), uint8(3))
	f.Fuzz(func(t *testing.T, payload, mss uint16, opts uint8, id uint16, seq uint32, flags uint8, at uint16, xor uint8, shuffle uint8) {
		if mss == 0 || int(payload)/int(mss) > 200 {
			return
		}
		fl := flow{payload: min(int(payload), 65535-60-40), mss: int(mss), ipOpts: opts&1 != 0, tcpOpts: opts&2 != 0,
			id: id, seq: seq, psh: flags&1 != 0, fin: flags&2 != 0, cwr: flags&4 != 0, tos: opts >> 2}
		frames := fl.segments()
		// Damage: flip bits of one byte somewhere in the stream.
		if xor != 0 {
			k := int(at) % len(frames)
			fr := frames[k]
			fr[int(at)%len(fr)] ^= xor
		}
		switch k := int(shuffle>>2) % len(frames); shuffle & 3 {
		case 1: // swap two neighbours
			if k+1 < len(frames) {
				frames[k], frames[k+1] = frames[k+1], frames[k]
			}
		case 2: // lose one
			frames = append(frames[:k], frames[k+1:]...)
		case 3: // one twice
			frames = append(frames[:k+1], frames[k:]...)
		}
		if len(frames) == 0 {
			return
		}
		in := make([][]byte, len(frames))
		for i := range frames {
			in[i] = bytes.Clone(frames[i])
		}
		pkts := coalesceAll(t, NewCoalescer(3), frames)
		var back [][]byte
		for _, p := range pkts {
			back = append(back, split(t, p)...)
		}
		sameFrames(t, back, in)
	})
}

// FuzzCoalesceBytes cuts arbitrary bytes into frames (each starting from a
// valid segment's headers, so that some of them get far) and checks that
// coalescing and splitting gives them back unchanged.
func FuzzCoalesceBytes(f *testing.F) {
	segs := flow{payload: 3000, mss: 1000, tcpOpts: true}.segments()
	f.Add(segs[0][54:], uint8(3), uint8(0))
	f.Add([]byte{1, 2, 3}, uint8(1), uint8(40))
	f.Fuzz(func(t *testing.T, data []byte, parts uint8, cut uint8) {
		n := int(parts%8) + 1
		var in [][]byte
		for i := range n {
			fr := bytes.Clone(segs[i%len(segs)])
			fr = fr[:min(len(fr), int(cut)+20+i)]
			fr = append(fr, data[len(data)*i/n:len(data)*(i+1)/n]...)
			in = append(in, fr)
		}
		want := make([][]byte, len(in))
		for i := range in {
			want[i] = bytes.Clone(in[i])
		}
		pkts := coalesceAll(t, NewCoalescer(2), in)
		var back [][]byte
		for _, p := range pkts {
			back = append(back, split(t, p)...)
		}
		sameFrames(t, back, want)
	})
}
