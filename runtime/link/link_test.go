package link_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/link/linktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStreamWireFormat(t *testing.T) {
	for _, tc := range []struct {
		prefix link.Prefix
		want   []byte
	}{
		// unix_stream: u16 native endian (little-endian on amd64/arm64).
		{link.PrefixU16NE, []byte{0x03, 0x00, 0xaa, 0xbb, 0xcc}},
		// tcp_stream and the bridge: u32 big endian.
		{link.PrefixU32BE, []byte{0x00, 0x00, 0x00, 0x03, 0xaa, 0xbb, 0xcc}},
	} {
		t.Run(tc.prefix.String(), func(t *testing.T) {
			if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
				t.Skip("the golden bytes are for little-endian hosts")
			}
			a, b := linktest.SocketPair(t)
			s := link.NewStream(a, tc.prefix)
			if _, err := s.Write([][]byte{linktest.WithHeadroom([]byte{0xaa, 0xbb, 0xcc})}, link.Headroom); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(tc.want))
			if _, err := io.ReadFull(b, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("wire bytes % x, want % x", got, tc.want)
			}
		})
	}
}

func TestStreamRoundTripChunked(t *testing.T) {
	for _, p := range []link.Prefix{link.PrefixU16NE, link.PrefixU32BE} {
		t.Run(p.String(), func(t *testing.T) {
			a, b := linktest.SocketPair(t)
			var frames [][]byte
			var wire []byte
			for i, size := range []int{14, 60, 1234, 1, 9000, 65535, 42} {
				f := linktest.Frame(i, size)
				frames = append(frames, f)
				var hdr [4]byte
				link.PutPrefix(p, hdr[:], size)
				wire = append(wire, hdr[:p.Size()]...)
				wire = append(wire, f...)
			}
			// Dribble the bytes in odd chunks so frames and prefixes
			// are split across reads.
			go func() {
				for i := 0; i < len(wire); i += 7 {
					a.Write(wire[i:min(i+7, len(wire))])
				}
				a.Close()
			}()
			s := link.NewStream(b, p)
			bufs, sizes := linktest.Bufs(3)
			var got [][]byte
			for {
				n, err := s.Read(bufs, sizes, link.Headroom)
				for i := range n {
					got = append(got, bytes.Clone(bufs[i][link.Headroom:link.Headroom+sizes[i]]))
				}
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if len(got) != len(frames) {
				t.Fatalf("got %d frames, want %d", len(got), len(frames))
			}
			for i := range frames {
				if !bytes.Equal(got[i], frames[i]) {
					t.Fatalf("frame %d differs (len %d vs %d)", i, len(got[i]), len(frames[i]))
				}
			}
		})
	}
}

func TestStreamOversizeIsSkippedAndReported(t *testing.T) {
	a, b := linktest.SocketPair(t)
	s := link.NewStream(b, link.PrefixU32BE)
	w := link.NewStream(a, link.PrefixU32BE)
	big, small := linktest.Frame(1, 3000), linktest.Frame(2, 100)
	go w.Write([][]byte{linktest.WithHeadroom(big), linktest.WithHeadroom(small)}, link.Headroom)

	bufs := [][]byte{make([]byte, link.Headroom+1500)}
	sizes := []int{0}
	if n, err := s.Read(bufs, sizes, link.Headroom); err != nil || n != 1 || sizes[0] != 3000 {
		t.Fatalf("Read = %d, %v, size %d; want the oversize frame reported with its size 3000", n, err, sizes[0])
	}
	if n, err := s.Read(bufs, sizes, link.Headroom); err != nil || n != 1 || !bytes.Equal(bufs[0][link.Headroom:link.Headroom+sizes[0]], small) {
		t.Fatalf("frame after the oversize one: n=%d err=%v size=%d", n, err, sizes[0])
	}
}

func TestStreamEndings(t *testing.T) {
	tests := []struct {
		name string
		wire []byte
		want error
	}{
		{"eof between frames", []byte{0, 0, 0, 2, 1, 2}, io.EOF},
		{"eof inside prefix", []byte{0, 0, 0, 2, 1, 2, 0, 0}, io.ErrUnexpectedEOF},
		{"eof inside frame", []byte{0, 0, 0, 9, 1, 2}, io.ErrUnexpectedEOF},
		{"eof inside skipped frame", []byte{0, 0, 0xff, 0xff, 1}, io.ErrUnexpectedEOF},
		{"length beyond any frame", []byte{0xff, 0xff, 0xff, 0xff}, link.ErrDesync},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := linktest.SocketPair(t)
			a.Write(tc.wire)
			a.Close()
			s := link.NewStream(b, link.PrefixU32BE)
			bufs, sizes := linktest.Bufs(4)
			var err error
			for range 10 {
				if _, err = s.Read(bufs, sizes, link.Headroom); err != nil {
					break
				}
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestStreamWriteSkipsEmptyAndUnsizable(t *testing.T) {
	a, b := linktest.SocketPair(t)
	w := link.NewStream(a, link.PrefixU16NE)
	n, err := w.Write([][]byte{linktest.WithHeadroom(nil), linktest.WithHeadroom(linktest.Frame(0, 70000)), linktest.WithHeadroom([]byte{7})}, link.Headroom)
	if err != nil || n != 3 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	got := make([]byte, 3)
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, []byte{1, 0, 7}) {
		t.Fatalf("wire % x: only the 1-byte frame should have been sent", got)
	}
}

func TestStreamCloseUnblocksRead(t *testing.T) {
	_, b := linktest.SocketPair(t)
	s := link.NewStream(b, link.PrefixU32BE)
	errc := make(chan error, 1)
	go func() {
		bufs, sizes := linktest.Bufs(1)
		_, err := s.Read(bufs, sizes, link.Headroom)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.Close()
	s.Close()
	select {
	case err := <-errc:
		if !link.IsClosed(err) {
			t.Fatalf("Read after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked 5 s after Close")
	}
	if _, err := s.Write([][]byte{linktest.WithHeadroom([]byte{1})}, link.Headroom); !link.IsClosed(err) {
		t.Fatalf("Write after Close: %v", err)
	}
}

func TestStreamNoAllocs(t *testing.T) {
	a, b := linktest.SocketPair(t)
	w, r := link.NewStream(a, link.PrefixU32BE), link.NewStream(b, link.PrefixU32BE)
	out := [][]byte{linktest.WithHeadroom(linktest.Frame(1, 1234)), linktest.WithHeadroom(linktest.Frame(2, 60))}
	bufs, sizes := linktest.Bufs(4)
	allocs := testing.AllocsPerRun(200, func() {
		w.Write(out, link.Headroom)
		got := 0
		for got < 2 {
			n, err := r.Read(bufs, sizes, link.Headroom)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per write+read of 2 frames, want 0", allocs)
	}
}

func udpPair(t testing.TB) (*link.Datagram, *link.Datagram) {
	t.Helper()
	ca, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cb, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := link.NewDatagram(ca, cb.LocalAddr().(*net.UDPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	b, err := link.NewDatagram(cb, ca.LocalAddr().(*net.UDPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestDatagramRoundTripBatch(t *testing.T) {
	a, b := udpPair(t)
	var out [][]byte
	for i := range 100 {
		out = append(out, linktest.WithHeadroom(linktest.Frame(i, 60+i*10)))
	}
	out[5] = linktest.WithHeadroom(nil) // never sent: an empty datagram stops the ExeUnit's VPN
	if n, err := a.Write(out, link.Headroom); err != nil || n != len(out) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	bufs, sizes := linktest.Bufs(32)
	var got [][]byte
	for len(got) < 99 {
		n, err := b.Read(bufs, sizes, link.Headroom)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			got = append(got, bytes.Clone(bufs[i][link.Headroom:link.Headroom+sizes[i]]))
		}
	}
	j := 0
	for i := range 100 {
		if i == 5 {
			continue
		}
		if !bytes.Equal(got[j], out[i][link.Headroom:]) {
			t.Fatalf("datagram %d differs or arrived out of order", i)
		}
		j++
	}
}

func TestDatagramDropsForeignSourceAndReportsTruncation(t *testing.T) {
	a, b := udpPair(t)
	intruder, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(a.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	intruder.Write(linktest.Frame(9, 100))
	time.Sleep(20 * time.Millisecond) // the intruder's datagram is queued first
	b.Write([][]byte{linktest.WithHeadroom(linktest.Frame(1, 3000))}, link.Headroom)

	bufs := [][]byte{make([]byte, link.Headroom+1500)}
	sizes := []int{0}
	n, err := a.Read(bufs, sizes, link.Headroom)
	if err != nil || n != 1 {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if sizes[0] <= 1500 {
		t.Fatalf("truncated datagram reported with size %d, want > buffer (1500)", sizes[0])
	}
	if a.Foreign() != 1 {
		t.Fatalf("Foreign() = %d, want 1", a.Foreign())
	}
	if c := a.Counters(); c.RxDrops[link.DropForeignSource] != 1 {
		t.Fatalf("Counters() = %v, want foreign_source 1", c)
	}
}

func TestDatagramCloseUnblocksRead(t *testing.T) {
	a, _ := udpPair(t)
	errc := make(chan error, 1)
	go func() {
		bufs, sizes := linktest.Bufs(2)
		_, err := a.Read(bufs, sizes, link.Headroom)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	a.Close()
	a.Close()
	select {
	case err := <-errc:
		if !link.IsClosed(err) {
			t.Fatalf("Read after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked 5 s after Close")
	}
}

func TestDatagramSendToAbsentPeerIsNotFatal(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d, err := link.NewDatagram(c, netip.MustParseAddrPort("127.0.0.1:9")) // discard port: nobody listens
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for range 3 {
		if _, err := d.Write([][]byte{linktest.WithHeadroom(linktest.Frame(1, 100))}, link.Headroom); err != nil {
			t.Fatalf("Write to an absent peer: %v (UDP loss must not stop the pump)", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDatagramNoAllocs(t *testing.T) {
	a, b := udpPair(t)
	out := [][]byte{linktest.WithHeadroom(linktest.Frame(1, 1234)), linktest.WithHeadroom(linktest.Frame(2, 60))}
	bufs, sizes := linktest.Bufs(4)
	allocs := testing.AllocsPerRun(200, func() {
		a.Write(out, link.Headroom)
		got := 0
		for got < 2 {
			n, err := b.Read(bufs, sizes, link.Headroom)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per write+read of 2 frames, want 0", allocs)
	}
}

// TestDatagramGSOToPlainReceiver: runs of same-size frames leave as UDP GSO
// messages, and a receiver that reads one datagram at a time (what the real
// ExeUnit does) still gets exactly one frame per datagram, in order.
func TestDatagramGSOToPlainReceiver(t *testing.T) {
	plain, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plain.SetReadBuffer(4 << 20)
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d, err := link.NewDatagram(c, plain.LocalAddr().(*net.UDPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Offloads() != "gso,gro" {
		t.Logf("offloads: %s (the kernel lacks some; the plain path is tested)", d.Offloads())
	}
	var out [][]byte
	for i := range 150 {
		size := 1234
		switch {
		case i%37 == 36:
			size = 90 // a short one ends a run
		case i == 100:
			size = 1500 // a longer one starts a new run
		}
		out = append(out, linktest.WithHeadroom(linktest.Frame(i, size)))
	}
	out[7] = linktest.WithHeadroom(nil)
	if n, err := d.Write(out, link.Headroom); err != nil || n != len(out) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	buf := make([]byte, 70000)
	plain.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range out {
		if i == 7 {
			continue
		}
		n, err := plain.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], out[i][link.Headroom:]) {
			t.Fatalf("datagram %d: %d bytes, want frame %d (%d bytes)", i, n, i, len(out[i])-link.Headroom)
		}
	}
}

// TestDatagramGROFromGSOSender: datagrams a GSO sender glued into one
// message arrive glued (UDP GRO) and are cut back into one frame each, in
// order, across Reads with a small batch.
func TestDatagramGROFromGSOSender(t *testing.T) {
	sender, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d, err := link.NewDatagram(c, sender.LocalAddr().(*net.UDPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const seg, perMsg, msgs = 1234, 40, 3
	var want [][]byte
	oob := make([]byte, link.UDPSegmentSpace)
	link.PutUDPSegment(oob, seg)
	for m := range msgs {
		var msg []byte
		for i := range perMsg {
			size := seg
			if i == perMsg-1 && m == 1 {
				size = 77 // the last one of a message may be shorter
			}
			f := linktest.Frame(m*perMsg+i, size)
			want = append(want, f)
			msg = append(msg, f...)
		}
		if _, _, err := sender.WriteMsgUDP(msg, oob, net.UDPAddrFromAddrPort(d.LocalAddr())); err != nil {
			t.Skipf("UDP GSO send refused: %v", err)
		}
	}
	bufs, sizes := linktest.Bufs(7)
	var got [][]byte
	for len(got) < len(want) {
		n, err := d.Read(bufs, sizes, link.Headroom)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			got = append(got, bytes.Clone(bufs[i][link.Headroom:link.Headroom+sizes[i]]))
		}
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d: %d bytes, want %d", i, len(got[i]), len(want[i]))
		}
	}
}

// TestStreamPeerGoneIsClosed: when the peer hangs up, Read (clean end) and
// Write (broken pipe) both report ErrClosed, so the pump needs no list of
// errnos; the cause stays visible.
func TestStreamPeerGoneIsClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   func(s *link.Stream) error
		want error
	}{
		{"read", func(s *link.Stream) error {
			_, err := s.Read([][]byte{make([]byte, link.BufSize)}, []int{0}, link.Headroom)
			return err
		}, io.EOF},
		{"write", func(s *link.Stream) error {
			_, err := s.Write([][]byte{linktest.WithHeadroom([]byte{1, 2, 3})}, link.Headroom)
			return err
		}, io.ErrClosedPipe},
	} {
		a, b := net.Pipe()
		s := link.NewStream(a, link.PrefixU32BE)
		b.Close()
		err := tc.op(s)
		if !link.IsClosed(err) || !errors.Is(err, tc.want) {
			t.Errorf("%s after the peer closed: %v, want ErrClosed wrapping %v", tc.name, err, tc.want)
		}
		s.Close()
	}
}
