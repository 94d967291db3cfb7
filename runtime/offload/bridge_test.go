package offload

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/link/linktest"
)

// capture is an inner link that keeps copies of the packets written to it.
type capture struct{ pkts [][]byte }

func (c *capture) Read([][]byte, []int, int) (int, error) { return 0, io.EOF }
func (c *capture) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		c.pkts = append(c.pkts, bytes.Clone(b[offset:]))
	}
	return len(bufs), nil
}
func (c *capture) BatchSize() int { return 1 }
func (c *capture) Close() error   { return nil }

// TestLinkSetCoalescing: off, Write glues nothing and puts an all-zero
// header in front of every frame (what the bridge sends as plain frames);
// on again, the run becomes one superframe.
func TestLinkSetCoalescing(t *testing.T) {
	segs := flow{payload: 1166 * 5, mss: 1166}.segments()
	var c capture
	l := NewLink(&c)
	l.SetCoalescing(false)
	if n, err := l.Write(withHeadroom(segs, 16), 16); err != nil || n != len(segs) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if len(c.pkts) != len(segs) {
		t.Fatalf("coalescing off: %d packets for %d frames", len(c.pkts), len(segs))
	}
	for i, p := range c.pkts {
		if !bytes.Equal(p[:VNetHdrLen], make([]byte, VNetHdrLen)) || !bytes.Equal(p[VNetHdrLen:], segs[i]) {
			t.Fatalf("packet %d is not frame %d behind an all-zero header", i, i)
		}
	}
	c.pkts = nil
	l.SetCoalescing(true)
	if _, err := l.Write(withHeadroom(segs, 16), 16); err != nil {
		t.Fatal(err)
	}
	if len(c.pkts) != 1 {
		t.Fatalf("coalescing on: %d packets, want one superframe", len(c.pkts))
	}
	sameFrames(t, split(t, c.pkts[0]), segs)
}

// TestLinkPending: Pending is true exactly while Read holds frames of a
// superframe it has not handed out.
func TestLinkPending(t *testing.T) {
	fl := flow{payload: 1166 * 4, mss: 1166}
	l := NewLink(&vnetLink{pkt: fl.superframe()})
	if l.Pending() {
		t.Fatal("Pending before any Read")
	}
	bufs := make([][]byte, 3)
	for i := range bufs {
		bufs[i] = make([]byte, 16+2048)
	}
	sizes := make([]int, 3)
	if n, err := l.Read(bufs, sizes, 16); err != nil || n != 3 {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if !l.Pending() {
		t.Fatal("not Pending with the fourth segment still to hand out")
	}
	if n, err := l.Read(bufs[:1], sizes, 16); err != nil || n != 1 {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if l.Pending() {
		t.Fatal("Pending after the last segment was handed out")
	}
}

// swapLink is a link.Link whose inner link a test replaces.
type swapLink struct{ link.Link }

func (s *swapLink) BatchSize() int { return 64 } // a link.Stream's

// FuzzBridgeRead reads arbitrary bytes as the runtime reads the agent's
// side of the bridge: a stream with virtio-net headers (link.HeaderFlag)
// behind a Link that cuts superframes. The agent is not trusted: whatever
// it sends, no panic, every frame fits the caller's buffer or is reported
// longer than it (for the pump to drop), and the reading ends.
func FuzzBridgeRead(f *testing.F) {
	for _, fl := range flows[:4] {
		pkt := fl.superframe()
		f.Add(append([]byte{0x80, 0, byte(len(pkt) >> 8), byte(len(pkt))}, pkt...))
	}
	f.Add([]byte{0, 0, 0, 14, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 8, 0})
	f.Add([]byte{0x80, 0, 0, 4, 1, 1, 0, 0})
	f.Add([]byte{0x80, 0, 0, 24, 1, 1, 0xff, 0xff, 1, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0x45, 0, 0, 0})
	// One Link for every input (its buffers are large); each input is a
	// new stream under it. A Link hands out an inner error only after
	// every frame read before it, so nothing carries over.
	in := &swapLink{}
	l := NewLink(in)
	f.Fuzz(func(t *testing.T, data []byte) {
		s := link.NewStream(linktest.ReaderConn(bytes.NewReader(data)), link.PrefixU32BE)
		if err := s.SetHeader(VNetHdrLen); err != nil {
			t.Fatal(err)
		}
		in.Link = s
		bufs := make([][]byte, 8)
		for i := range bufs {
			bufs[i] = make([]byte, link.Headroom+1234)
		}
		sizes := make([]int, len(bufs))
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			n, err := l.Read(bufs, sizes, link.Headroom)
			for i := range n {
				if sizes[i] < 0 {
					t.Fatalf("negative size %d", sizes[i])
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, link.ErrDesync) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if n == 0 {
				t.Fatal("Read returned no frame and no error")
			}
		}
		t.Fatal("reading did not end")
	})
}
