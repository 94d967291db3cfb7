package link_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/link/linktest"
)

const hdrLen = 10 // a virtio-net header, as on the gvpn bridge

// TestStreamHeaderWire: with SetHeader, a frame behind an all-zero header
// goes out as a plain frame and any other with HeaderFlag and its header;
// a reader with SetHeader gets both back behind their headers, frame by
// frame, and a reader without it takes the flagged length for lost
// framing instead of misreading the frame.
func TestStreamHeaderWire(t *testing.T) {
	plain := linktest.Frame(1, 60)
	super := linktest.Frame(2, 3000)
	hdr := []byte{1, 1, 0x42, 0, 0x90, 0x04, 0x22, 0, 0x10, 0}
	in := [][]byte{
		linktest.WithHeadroom(append(make([]byte, hdrLen), plain...)),
		linktest.WithHeadroom(append(bytes.Clone(hdr), super...)),
		linktest.WithHeadroom(append(make([]byte, hdrLen), plain...)),
	}

	a, b := linktest.SocketPair(t)
	w := link.NewStream(a, link.PrefixU32BE)
	if err := w.SetHeader(hdrLen); err != nil {
		t.Fatal(err)
	}
	go w.Write(in, link.Headroom)
	wire := make([]byte, 4+60+4+hdrLen+3000+4+60)
	if _, err := io.ReadFull(b, wire); err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0, 0, 0, 60}, plain...)
	want = append(want, 0x80, 0, 0x0b, 0xc2) // HeaderFlag | 10 + 3000
	want = append(want, hdr...)
	want = append(want, super...)
	want = append(want, 0, 0, 0, 60)
	want = append(want, plain...)
	if !bytes.Equal(wire, want) {
		t.Fatalf("wire bytes differ:\n got % x…\nwant % x…", wire[:80], want[:80])
	}

	// Read back with headers.
	a2, b2 := linktest.SocketPair(t)
	go writeAll(t, a2, wire)
	r := link.NewStream(b2, link.PrefixU32BE)
	if err := r.SetHeader(hdrLen); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := linktest.Bufs(3)
	got := 0
	for got < 3 {
		n, err := r.Read(bufs[got:], sizes[got:], link.Headroom)
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	for i := range in {
		if g := bufs[i][link.Headroom : link.Headroom+sizes[i]]; !bytes.Equal(g, in[i][link.Headroom:]) {
			t.Errorf("frame %d read back as % x…, want % x…", i, g[:min(len(g), 24)], in[i][link.Headroom:link.Headroom+24])
		}
	}

	// A reader that does not know the flag.
	a3, b3 := linktest.SocketPair(t)
	go writeAll(t, a3, wire)
	old := link.NewStream(b3, link.PrefixU32BE)
	n, err := old.Read(bufs, sizes, link.Headroom)
	if n != 1 || !bytes.Equal(bufs[0][link.Headroom:link.Headroom+sizes[0]], plain) {
		t.Fatalf("plain reader: first frame %d, %v", n, err)
	}
	if n, err := old.Read(bufs, sizes, link.Headroom); n != 0 || !errors.Is(err, link.ErrDesync) {
		t.Fatalf("plain reader on a flagged frame: %d, %v; want ErrDesync", n, err)
	}
}

func writeAll(t *testing.T, w io.Writer, b []byte) {
	if _, err := w.Write(b); err != nil {
		t.Error(err)
	}
}

// TestStreamHeaderOversizeAndRefusals: a frame too long for the buffer is
// reported with the size it would have behind its header; SetHeader
// refuses what it cannot do.
func TestStreamHeaderOversizeAndRefusals(t *testing.T) {
	a, b := linktest.SocketPair(t)
	r := link.NewStream(b, link.PrefixU32BE)
	if err := r.SetHeader(hdrLen); err != nil {
		t.Fatal(err)
	}
	go writeAll(t, a, append([]byte{0, 0, 0, 100}, make([]byte, 100)...))
	bufs := [][]byte{make([]byte, link.Headroom+105)}
	sizes := []int{0}
	if n, err := r.Read(bufs, sizes, link.Headroom); err != nil || n != 1 || sizes[0] != hdrLen+100 {
		t.Fatalf("Read = %d, %v, size %d; want the frame reported oversize as %d bytes", n, err, sizes[0], hdrLen+100)
	}
	if err := link.NewStream(a, link.PrefixU16NE).SetHeader(hdrLen); err == nil {
		t.Error("SetHeader on a u16 stream: no error (its length has no room for the flag)")
	}
	for _, n := range []int{0, 256} {
		if err := link.NewStream(a, link.PrefixU32BE).SetHeader(n); err == nil {
			t.Errorf("SetHeader(%d): no error", n)
		}
	}
}

// BenchmarkStreamSuperframes moves 64 KiB frames behind headers through a
// unix socket pair: the bridge in superframe mode.
func BenchmarkStreamSuperframes(b *testing.B) {
	x, y := linktest.SocketPair(b)
	w := link.NewStream(x, link.PrefixU32BE)
	r := link.NewStream(y, link.PrefixU32BE)
	for _, s := range []*link.Stream{w, r} {
		if err := s.SetHeader(hdrLen); err != nil {
			b.Fatal(err)
		}
	}
	frame := append([]byte{1, 1, 0x42, 0, 0x90, 0x04, 0x22, 0, 0x10, 0}, linktest.Frame(1, 64000)...)
	out := [][]byte{linktest.WithHeadroom(frame)}
	go func() {
		for range b.N {
			if _, err := w.Write(out, link.Headroom); err != nil {
				return
			}
		}
	}()
	bufs, sizes := linktest.Bufs(8)
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	for got := 0; got < b.N; {
		n, err := r.Read(bufs, sizes, link.Headroom)
		if err != nil {
			b.Fatal(err)
		}
		got += n
	}
}
