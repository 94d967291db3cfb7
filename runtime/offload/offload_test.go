package offload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// flow describes a TCP/IPv4 stream cut into segments, built independently
// of the code under test with gopacket's layers.
type flow struct {
	payload  int    // bytes in all
	mss      int    // payload bytes per segment
	ipOpts   bool   // an IPv4 option (router alert)
	tcpOpts  bool   // NOP NOP timestamps
	id       uint16 // IPv4 identification of the first segment
	seq      uint32
	psh, fin bool // on the last segment
	cwr      bool // on the first segment
	tos      uint8
}

var (
	macA = net.HardwareAddr{0x90, 0x13, 192, 168, 0, 2}
	macB = net.HardwareAddr{0x90, 0x13, 192, 168, 0, 3}
	ipA  = net.IP{192, 168, 0, 2}
	ipB  = net.IP{192, 168, 0, 3}
)

func payloadBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func (fl flow) layers(id uint16, seq uint32, psh, fin, cwr bool, payload []byte) []byte {
	eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TOS: fl.tos, Id: id, Flags: layers.IPv4DontFragment, TTL: 64,
		Protocol: layers.IPProtocolTCP, SrcIP: ipA, DstIP: ipB}
	if fl.ipOpts {
		ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
	}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 5201, Seq: seq, Ack: 777, ACK: true, PSH: psh, FIN: fin, CWR: cwr, Window: 501}
	if fl.tcpOpts {
		tcp.Options = []layers.TCPOption{
			{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{0, 0, 1, 2, 0, 0, 3, 4}},
		}
	}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, tcp, gopacket.Payload(payload))
	if err != nil {
		panic(err)
	}
	// gopacket pads short frames to Ethernet's 60 bytes; a TAP does not.
	f := buf.Bytes()
	return bytes.Clone(f[:ethLen+int(binary.BigEndian.Uint16(f[ethLen+2:]))])
}

// segments is what the kernel would put on the wire for fl without
// offloads.
func (fl flow) segments() [][]byte {
	data := payloadBytes(fl.payload)
	var out [][]byte
	for off, i := 0, 0; off < len(data) || (len(data) == 0 && i == 0); i++ {
		end := min(off+fl.mss, len(data))
		last := end == len(data)
		out = append(out, fl.layers(fl.id+uint16(i), fl.seq+uint32(off), fl.psh && last, fl.fin && last, fl.cwr && i == 0, data[off:end]))
		off = end
		if len(data) == 0 {
			break
		}
	}
	return out
}

// naiveSum is RFC 1071 written plainly, to check the code under test.
func naiveSum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s
}

// superframe is what a TAP with TSO hands the reader for fl: one packet
// with all the payload, a virtio-net header, and a partial TCP checksum
// (the pseudo-header sum), as the kernel leaves it for the device.
func (fl flow) superframe() []byte {
	f := fl.layers(fl.id, fl.seq, fl.psh, fl.fin, fl.cwr, payloadBytes(fl.payload))
	ipLen := int(f[ethLen]&0xf) * 4
	tcp := f[ethLen+ipLen:]
	var ph []byte
	ph = append(ph, f[ethLen+12:ethLen+20]...)
	ph = append(ph, 0, protoTCP, byte(len(tcp)>>8), byte(len(tcp)))
	binary.BigEndian.PutUint16(tcp[16:], uint16(naiveSum(ph)))
	doff := int(tcp[12]>>4) * 4
	hdr := VNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4, HdrLen: uint16(ethLen + ipLen + doff),
		GSOSize: uint16(fl.mss), CsumStart: uint16(ethLen + ipLen), CsumOffset: 16}
	if fl.cwr {
		hdr.GSOType |= GSOECN
	}
	p := make([]byte, VNetHdrLen, VNetHdrLen+len(f))
	hdr.Encode(p)
	return append(p, f...)
}

// split runs a Splitter over pkt and returns copies of the frames.
func split(t testing.TB, pkt []byte) [][]byte {
	t.Helper()
	var s Splitter
	if err := s.Reset(pkt); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	want := s.Frames()
	dst := make([]byte, 70000)
	var out [][]byte
	for {
		n, ok := s.Next(dst)
		if !ok {
			break
		}
		out = append(out, bytes.Clone(dst[:n]))
	}
	if len(out) != want {
		t.Fatalf("Frames() = %d, Next produced %d", want, len(out))
	}
	return out
}

func withHeadroom(frames [][]byte, headroom int) [][]byte {
	out := make([][]byte, len(frames))
	for i, f := range frames {
		out[i] = append(make([]byte, headroom), f...)
	}
	return out
}

func sameFrames(t testing.TB, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d of %d differs:\n got % x\nwant % x", i, len(want), got[i], want[i])
		}
	}
}

var flows = []flow{
	{payload: 1000, mss: 1166},                                            // one short segment
	{payload: 1166 * 3, mss: 1166},                                        // exact multiple
	{payload: 1166*40 + 17, mss: 1166, psh: true},                         // short final segment
	{payload: 5000, mss: 1154, tcpOpts: true, psh: true},                  // timestamps
	{payload: 5000, mss: 1150, ipOpts: true, tcpOpts: true},               // IP options too
	{payload: 4000, mss: 1166, fin: true, psh: true, id: 65534},           // FIN; id wraps
	{payload: 3000, mss: 1166, cwr: true, seq: 0xffffff00},                // CWR; seq wraps
	{payload: maxGlued - VNetHdrLen - 14 - 20 - 20, mss: 1166, tos: 0x10}, // the largest the Coalescer builds
	{payload: 65535 - 20 - 20, mss: 1166},                                 // the largest superframe, glued as two
	{payload: MinGSOSize*3 + 1, mss: MinGSOSize},                          // the smallest MSS a superframe may have
}

func TestSplitMatchesKernelSegments(t *testing.T) {
	for _, fl := range flows {
		t.Run(fmt.Sprintf("%+v", fl), func(t *testing.T) {
			sameFrames(t, split(t, fl.superframe()), fl.segments())
		})
	}
}

func TestCoalesceThenSplitIsIdentity(t *testing.T) {
	for _, fl := range flows {
		t.Run(fmt.Sprintf("%+v", fl), func(t *testing.T) {
			segs := fl.segments()
			pkts := coalesceAll(t, NewCoalescer(4), segs)
			// A run of same-size segments becomes one superframe; a FIN
			// segment or a CWR one goes alone.
			want := 1
			if VNetHdrLen+14+40+fl.payload > maxGlued {
				want = 2 // no packet beyond link.MaxFrame
			}
			if len(segs) > 1 && fl.fin {
				want++
			}
			if fl.cwr && len(segs) > 1 {
				want = 2 // the CWR segment alone, then the rest
			}
			if len(pkts) != want {
				t.Errorf("%d segments gave %d packets, want %d", len(segs), len(pkts), want)
			}
			var back [][]byte
			for _, p := range pkts {
				back = append(back, split(t, p)...)
			}
			sameFrames(t, back, segs)
		})
	}
}

// coalesceAll runs frames through c and returns copies of all packets.
func coalesceAll(t testing.TB, c *Coalescer, frames [][]byte) [][]byte {
	t.Helper()
	const headroom = 16
	bufs := withHeadroom(frames, headroom)
	var out [][]byte
	done := 0
	for done < len(bufs) {
		pkts, ends, n := c.Coalesce(bufs[done:], headroom)
		if len(pkts) != len(ends) {
			t.Fatalf("%d packets, %d ends", len(pkts), len(ends))
		}
		for i, p := range pkts {
			if i > 0 && ends[i] <= ends[i-1] || ends[i] > n {
				t.Fatalf("ends %v out of order or beyond %d consumed", ends, n)
			}
			out = append(out, bytes.Clone(p))
		}
		if n == 0 {
			t.Fatal("Coalesce consumed nothing")
		}
		done += n
	}
	return out
}

func TestCoalesceKeepsOtherFramesApartAndInOrder(t *testing.T) {
	fl := flow{payload: 1166 * 4, mss: 1166}
	segs := fl.segments()
	other := flow{payload: 1166 * 2, mss: 1166, seq: 9999}.segments()
	arp := append(bytes.Clone(segs[0][:12]), 0x08, 0x06)
	arp = append(arp, make([]byte, 28)...)
	badSum := bytes.Clone(segs[2])
	badSum[len(badSum)-1] ^= 0xff // payload corrupted: the TCP checksum no longer matches
	gap := flow{payload: 1166 * 2, mss: 1166, seq: 1166 * 9, id: 9}.segments()

	in := [][]byte{segs[0], segs[1], arp, other[0], other[1], badSum, segs[3], gap[0], gap[1]}
	pkts := coalesceAll(t, NewCoalescer(8), in)
	var back [][]byte
	for _, p := range pkts {
		back = append(back, split(t, p)...)
	}
	sameFrames(t, back, in)
	gsoCount := 0
	for _, p := range pkts {
		if h, _ := DecodeVNetHdr(p); h.GSOType != GSONone {
			gsoCount++
		}
	}
	// segs[0..1], other[0..1] and gap[0..1] coalesce; the rest go alone.
	if len(pkts) != 6 || gsoCount != 3 {
		t.Fatalf("%d packets (%d superframes), want 6 (3)", len(pkts), gsoCount)
	}
}

func TestCoalesceRunsOutOfBuffers(t *testing.T) {
	var in [][]byte
	for i := range 5 {
		in = append(in, flow{payload: 2332, mss: 1166, seq: uint32(i) << 20, id: uint16(i * 10)}.segments()...)
	}
	c := NewCoalescer(2)
	bufs := withHeadroom(in, 16)
	pkts, _, n := c.Coalesce(bufs, 16)
	if len(pkts) != 2 || n != 4 {
		t.Fatalf("with 2 buffers: %d packets from %d frames, want 2 from 4", len(pkts), n)
	}
	back := coalesceAll(t, c, in)
	var frames [][]byte
	for _, p := range back {
		frames = append(frames, split(t, p)...)
	}
	sameFrames(t, frames, in)
}

func TestSplitNoneCompletesPartialChecksum(t *testing.T) {
	// A small UDP datagram as a TAP with checksum offload hands it: the
	// UDP checksum field holds only the pseudo-header sum.
	eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: ipA, DstIP: ipB}
	udp := &layers.UDP{SrcPort: 1000, DstPort: 2000}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, udp, gopacket.Payload(payloadBytes(333))); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(buf.Bytes())
	partial := bytes.Clone(want)
	u := partial[ethLen+20:]
	ph := append(bytes.Clone(partial[ethLen+12:ethLen+20]), 0, protoUDP, byte(len(u)>>8), byte(len(u)))
	binary.BigEndian.PutUint16(u[6:], uint16(naiveSum(ph)))
	pkt := make([]byte, VNetHdrLen)
	VNetHdr{Flags: FlagNeedsCsum, CsumStart: ethLen + 20, CsumOffset: 6}.Encode(pkt)
	sameFrames(t, split(t, append(pkt, partial...)), [][]byte{want})
}

func TestSplitUDPSuperframe(t *testing.T) {
	// UDP segmentation offload (USO): the datagrams a UDP_SEGMENT sender
	// asked the kernel to cut.
	const gso, total = 1192, 1192*5 + 100
	data := payloadBytes(total)
	build := func(id uint16, p []byte) []byte {
		eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Id: id, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolUDP, SrcIP: ipA, DstIP: ipB}
		udp := &layers.UDP{SrcPort: 1000, DstPort: 2000}
		udp.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			eth, ip, udp, gopacket.Payload(p)); err != nil {
			t.Fatal(err)
		}
		return bytes.Clone(buf.Bytes())
	}
	var want [][]byte
	for i, off := 0, 0; off < total; i, off = i+1, off+gso {
		want = append(want, build(uint16(100+i), data[off:min(off+gso, total)]))
	}
	sf := build(100, data)
	binary.BigEndian.PutUint16(sf[ethLen+20+6:], 0x1234) // partial: overwritten
	pkt := make([]byte, VNetHdrLen)
	VNetHdr{Flags: FlagNeedsCsum, GSOType: GSOUDPL4, GSOSize: gso, CsumStart: ethLen + 20, CsumOffset: 6}.Encode(pkt)
	sameFrames(t, split(t, append(pkt, sf...)), want)
}

func TestSplitRefusesWhatItCannotCut(t *testing.T) {
	tcp := flow{payload: 3000, mss: 1166}.superframe()
	mutate := func(f func(p []byte)) []byte { p := bytes.Clone(tcp); f(p); return p }
	for name, pkt := range map[string][]byte{
		"short header":     tcp[:5],
		"gso size 0":       mutate(func(p []byte) { binary.NativeEndian.PutUint16(p[4:], 0) }),
		"TSO6 type":        mutate(func(p []byte) { p[1] = GSOTCPv6 }),
		"UFO type":         mutate(func(p []byte) { p[1] = GSOUDP }),
		"not IPv4":         mutate(func(p []byte) { p[VNetHdrLen+12] = 0x86 }),
		"UDP under TSO":    mutate(func(p []byte) { p[VNetHdrLen+ethLen+9] = protoUDP }),
		"TCP under USO":    mutate(func(p []byte) { p[1] = GSOUDPL4 }),
		"length too long":  mutate(func(p []byte) { binary.BigEndian.PutUint16(p[VNetHdrLen+ethLen+2:], 65535) }),
		"fragment":         mutate(func(p []byte) { p[VNetHdrLen+ethLen+6] |= 0x20 }),
		"data offset 4":    mutate(func(p []byte) { p[VNetHdrLen+ethLen+20+12] = 0x40 }),
		"csum beyond none": mutate(func(p []byte) { p[1] = GSONone; binary.NativeEndian.PutUint16(p[8:], 60000) }),
	} {
		var s Splitter
		if err := s.Reset(pkt); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Reset = %v, want ErrMalformed", name, err)
		}
		if _, ok := s.Next(make([]byte, 100)); ok {
			t.Errorf("%s: Next produced a frame after a failed Reset", name)
		}
	}
}

// TestSplitRefusesTinyGSOSize: a forged header asking for segments below
// MinGSOSize is refused (one 64 KiB superframe of 1-byte segments would be
// 65 000 frames); Link counts it and passes its bare frame on.
func TestSplitRefusesTinyGSOSize(t *testing.T) {
	for _, gso := range []uint16{0, 1, MinGSOSize - 1} {
		pkt := flow{payload: 3000, mss: 1166}.superframe()
		binary.NativeEndian.PutUint16(pkt[4:], gso)
		var s Splitter
		if err := s.Reset(pkt); !errors.Is(err, ErrSmallGSO) || !errors.Is(err, ErrMalformed) {
			t.Errorf("gso_size %d: Reset = %v, want ErrSmallGSO", gso, err)
		}
		l := NewLink(&vnetLink{pkt: pkt})
		bufs, sizes := [][]byte{make([]byte, 16+MaxPacket)}, []int{0}
		if n, err := l.Read(bufs, sizes, 16); err != nil || n != 1 || sizes[0] != len(pkt)-VNetHdrLen {
			t.Errorf("gso_size %d: Read = %d (%d bytes), %v; want the bare frame", gso, n, sizes[0], err)
		}
		if st := l.Stats(); st.SmallGSO != 1 || st.Malformed != 1 || st.SplitSuperframes != 0 {
			t.Errorf("gso_size %d: counters %+v", gso, st)
		}
	}
	var s Splitter
	pkt := flow{payload: 3000, mss: MinGSOSize}.superframe()
	if err := s.Reset(pkt); err != nil || s.Frames() != (3000+MinGSOSize-1)/MinGSOSize {
		t.Errorf("gso_size MinGSOSize: %v, %d frames", err, s.Frames())
	}
}

func TestSplitShortDestinationReportsSize(t *testing.T) {
	var s Splitter
	if err := s.Reset(flow{payload: 3000, mss: 1166}.superframe()); err != nil {
		t.Fatal(err)
	}
	n, ok := s.Next(make([]byte, 100))
	if !ok || n != ethLen+20+20+1166 {
		t.Fatalf("Next into 100 bytes = %d, %v; want the needed size %d", n, ok, ethLen+20+20+1166)
	}
	if s.Frames() != 3 {
		t.Fatalf("Frames = %d", s.Frames())
	}
}

func TestNoAllocations(t *testing.T) {
	segs := flow{payload: 1166 * 20, mss: 1166, tcpOpts: true}.segments()
	bufs := withHeadroom(segs, 16)
	c := NewCoalescer(4)
	sf := flow{payload: 1166 * 20, mss: 1166}.superframe()
	dst := make([]byte, 2000)
	var s Splitter
	allocs := testing.AllocsPerRun(100, func() {
		c.Coalesce(bufs, 16)
		s.Reset(sf)
		for {
			if _, ok := s.Next(dst); !ok {
				break
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run, want 0", allocs)
	}
}

func TestChecksumMatchesNaive(t *testing.T) {
	for n := range 300 {
		b := payloadBytes(n)
		for i := range b {
			b[i] ^= byte(n * i)
		}
		if got, want := fold(sum(b, 0)), uint16(naiveSum(b)); got != want {
			t.Fatalf("len %d: sum %#x, want %#x", n, got, want)
		}
	}
}

// vnetLink is an inner link that hands out one superframe per Read and
// takes anything on Write, to measure the Link's own costs.
type vnetLink struct{ pkt []byte }

func (v *vnetLink) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	sizes[0] = copy(bufs[0][offset:], v.pkt)
	return 1, nil
}
func (v *vnetLink) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }
func (v *vnetLink) BatchSize() int                               { return 1 }
func (v *vnetLink) Close() error                                 { return nil }

// linkRoundTrip returns one round through a Link over a vnetLink: a
// superframe read (split into a batch of frames) and written back (glued),
// and the Link.
func linkRoundTrip(tb testing.TB, fl flow) (round func(), l *Link) {
	l = NewLink(&vnetLink{pkt: fl.superframe()})
	bufs := make([][]byte, BatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 16+2048)
	}
	sizes := make([]int, BatchSize)
	out := make([][]byte, 0, BatchSize)
	return func() {
		n, err := l.Read(bufs, sizes, 16)
		if err != nil || n == 0 {
			tb.Fatalf("Read = %d, %v", n, err)
		}
		out = out[:0]
		for i := range n {
			out = append(out, bufs[i][:16+sizes[i]])
		}
		if w, err := l.Write(out, 16); err != nil || w != n {
			tb.Fatalf("Write = %d, %v", w, err)
		}
	}, l
}

// TestLinkNoAllocations: splitting superframes into a batch of frames and
// coalescing them back allocate nothing per frame.
func TestLinkNoAllocations(t *testing.T) {
	round, l := linkRoundTrip(t, flow{payload: 1166 * 40, mss: 1166, tcpOpts: true})
	if allocs := testing.AllocsPerRun(50, round); allocs != 0 {
		t.Fatalf("%v allocations per batch, want 0", allocs)
	}
	if s := l.Stats(); s.SplitSuperframes == 0 || s.CoalescedSuperframes == 0 {
		t.Fatalf("stats %+v: nothing was split or coalesced", s)
	}
}
