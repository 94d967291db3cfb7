package pump

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/runtime/frame"
	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/link/linktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	ownIP   = netip.MustParseAddr("192.168.0.2")
	peerIP  = netip.MustParseAddr("192.168.0.3")
	ownMAC  = frame.MAC{0x90, 0x13, 192, 168, 0, 2}
	peerMAC = frame.MAC{0x90, 0x13, 192, 168, 0, 3}
)

const maxFrame = 1220 + frame.EthernetLen

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

func udpFrame(t testing.TB, srcMAC, dstMAC frame.MAC, src, dst netip.Addr, payload []byte) []byte {
	eth := &layers.Ethernet{SrcMAC: srcMAC[:], DstMAC: dstMAC[:], EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	udp := &layers.UDP{SrcPort: 4000, DstPort: 5000}
	udp.SetNetworkLayerForChecksum(ip)
	return serialize(t, eth, ip, udp, gopacket.Payload(payload))
}

func arpFrame(t testing.TB, senderMAC frame.MAC, sender, target netip.Addr) []byte {
	eth := &layers.Ethernet{SrcMAC: senderMAC[:], DstMAC: frame.Broadcast[:], EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: senderMAC[:], SourceProtAddress: sender.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: target.AsSlice()}
	return serialize(t, eth, arp)
}

func ipv6Frame(t testing.TB) []byte {
	eth := &layers.Ethernet{SrcMAC: ownMAC[:], DstMAC: []byte{0x33, 0x33, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6,
		SrcIP: net.ParseIP("fe80::1"), DstIP: net.ParseIP("ff02::2")}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeRouterSolicitation, 0)}
	icmp.SetNetworkLayerForChecksum(ip)
	return serialize(t, eth, ip, icmp, gopacket.Payload(make([]byte, 4)))
}

func TestPayloadFilter(t *testing.T) {
	f := &EgressFilter{MAC: ownMAC, IP: ownIP, MaxFrame: maxFrame}
	good := udpFrame(t, ownMAC, peerMAC, ownIP, peerIP, []byte("hello"))
	truncatedIP := bytes.Clone(good[:frame.EthernetLen+10])
	badLen := bytes.Clone(good)
	binary.BigEndian.PutUint16(badLen[frame.EthernetLen+2:], 9000)
	vlan := bytes.Clone(good)
	binary.BigEndian.PutUint16(vlan[12:], 0x8100)
	arpOtherProto := arpFrame(t, ownMAC, ownIP, peerIP)
	binary.BigEndian.PutUint16(arpOtherProto[frame.EthernetLen+2:], 0x86dd)

	tests := []struct {
		name  string
		frame []byte
		want  Reason
	}{
		{"udp from us", good, Pass},
		{"arp from us", arpFrame(t, ownMAC, ownIP, peerIP), Pass},
		{"max size", udpFrame(t, ownMAC, peerMAC, ownIP, peerIP, make([]byte, 1220-28)), Pass},
		{"empty", nil, Short},
		{"13 bytes", good[:13], Short},
		{"oversize", udpFrame(t, ownMAC, peerMAC, ownIP, peerIP, make([]byte, 1220-27)), Oversize},
		{"ipv6", ipv6Frame(t), IPv6},
		{"vlan", vlan, EtherType},
		{"truncated ipv4", truncatedIP, Malformed},
		{"ipv4 length beyond frame", badLen, Malformed},
		{"arp for another protocol", arpOtherProto, Malformed},
		{"spoofed source mac", udpFrame(t, peerMAC, ownMAC, ownIP, peerIP, nil), SpoofedMAC},
		{"spoofed source ip", udpFrame(t, ownMAC, peerMAC, peerIP, ownIP, nil), SpoofedIP},
		{"arp claiming another node", arpFrame(t, ownMAC, peerIP, ownIP), SpoofedIP},
	}
	for _, tc := range tests {
		if got := f.Check(tc.frame); got != tc.want {
			t.Errorf("%s: Check = %v, want %v", tc.name, got, tc.want)
		}
	}
	// A payload on two networks may send as either of its addresses, and
	// still as nothing else.
	second := netip.MustParseAddr("10.20.0.2")
	two := &EgressFilter{MAC: ownMAC, IP: ownIP, More: []netip.Addr{second}, MaxFrame: maxFrame}
	for _, tc := range []struct {
		name  string
		frame []byte
		want  Reason
	}{
		{"udp from the first address", good, Pass},
		{"udp from the second address", udpFrame(t, ownMAC, peerMAC, second, peerIP, nil), Pass},
		{"arp from the second address", arpFrame(t, ownMAC, second, peerIP), Pass},
		{"udp from a peer's address", udpFrame(t, ownMAC, peerMAC, peerIP, second, nil), SpoofedIP},
		{"arp claiming a peer's address", arpFrame(t, ownMAC, peerIP, second), SpoofedIP},
	} {
		if got := two.Check(tc.frame); got != tc.want {
			t.Errorf("two networks, %s: Check = %v, want %v", tc.name, got, tc.want)
		}
	}
	// The network side accepts other nodes' sources, but not what the
	// ExeUnit could never have routed.
	n := &IngressFilter{MaxFrame: maxFrame}
	if got := n.Check(udpFrame(t, peerMAC, ownMAC, peerIP, ownIP, nil)); got != Pass {
		t.Errorf("network filter dropped a peer's frame: %v", got)
	}
	if got := n.Check(ipv6Frame(t)); got != IPv6 {
		t.Errorf("network filter on IPv6: %v", got)
	}
}

// harness is a pump between two socket pairs: the test plays the payload on
// one far end and the network on the other.
type harness struct {
	pump    *Pump
	payload link.Link // the test's end of the payload side
	network link.Link // the test's end of the network side
}

func newHarness(t testing.TB) *harness {
	payloadNear, payloadFar := linktest.StreamPair(t, link.PrefixU32BE)
	networkNear, networkFar := linktest.StreamPair(t, link.PrefixU32BE)
	p := Start(Config{
		Iface:   payloadNear,
		Uplink:  networkNear,
		Egress:  &EgressFilter{MAC: ownMAC, IP: ownIP, MaxFrame: maxFrame},
		Ingress: &IngressFilter{MaxFrame: maxFrame},
	})
	t.Cleanup(func() { p.Close() })
	return &harness{pump: p, payload: payloadFar, network: networkFar}
}

func TestPumpBothWaysInOrder(t *testing.T) {
	h := newHarness(t)
	const n = 2000
	var out, in [][]byte
	for i := range n {
		p := binary.BigEndian.AppendUint32(nil, uint32(i))
		out = append(out, udpFrame(t, ownMAC, peerMAC, ownIP, peerIP, p))
		in = append(in, udpFrame(t, peerMAC, ownMAC, peerIP, ownIP, p))
	}
	go func() {
		for i := 0; i < n; i += 100 {
			linktest.Send(t, h.payload, out[i:i+100]...)
			linktest.Send(t, h.network, in[i:i+100]...)
		}
	}()
	gotOut := linktest.Recv(t, h.network, n)
	gotIn := linktest.Recv(t, h.payload, n)
	for i := range n {
		if !bytes.Equal(gotOut[i], out[i]) || !bytes.Equal(gotIn[i], in[i]) {
			t.Fatalf("frame %d changed or reordered", i)
		}
	}
	st := settledStats(t, h.pump, func(st Stats) bool { return st.Egress.Frames == n && st.Ingress.Frames == n })
	if st.Egress.Frames != n || st.Ingress.Frames != n || st.Egress.Dropped() != 0 || st.Ingress.Dropped() != 0 {
		t.Fatalf("stats %+v", st)
	}
	if st.Egress.Bytes != uint64(n*len(out[0])) {
		t.Fatalf("egress bytes %d, want %d", st.Egress.Bytes, n*len(out[0]))
	}
}

func TestPumpDropsAndCountsBadFramesAndGoesOn(t *testing.T) {
	h := newHarness(t)
	bad := [][]byte{
		{1, 2, 3},
		udpFrame(t, ownMAC, peerMAC, ownIP, peerIP, make([]byte, 1500)),
		ipv6Frame(t),
		udpFrame(t, peerMAC, ownMAC, ownIP, peerIP, nil), // another node's MAC
		udpFrame(t, ownMAC, peerMAC, peerIP, ownIP, nil), // another node's IP
		arpFrame(t, ownMAC, peerIP, ownIP),
	}
	good := udpFrame(t, ownMAC, peerMAC, ownIP, peerIP, []byte("after the garbage"))
	linktest.Send(t, h.payload, append(bad, good)...)
	if got := linktest.Recv(t, h.network, 1); !bytes.Equal(got[0], good) {
		t.Fatal("the good frame after the bad ones did not arrive intact")
	}
	// Garbage from the network side never reaches the payload either.
	linktest.Send(t, h.network, []byte{0}, ipv6Frame(t), udpFrame(t, peerMAC, ownMAC, peerIP, ownIP, []byte("ok")))
	if got := linktest.Recv(t, h.payload, 1); len(got[0]) < 14 || frame.Src(got[0]) != peerMAC {
		t.Fatal("the good ingress frame did not arrive")
	}
	st := settledStats(t, h.pump, func(st Stats) bool { return st.Egress.Frames == 1 && st.Ingress.Frames == 1 })
	want := map[Reason]uint64{Short: 1, Oversize: 1, IPv6: 1, SpoofedMAC: 1, SpoofedIP: 2}
	for r, c := range want {
		if st.Egress.Drops[r] != c {
			t.Errorf("egress drops[%v] = %d, want %d (all: %v)", r, st.Egress.Drops[r], c, st.Egress.DropMap())
		}
	}
	if st.Ingress.Drops[Short] != 1 || st.Ingress.Drops[IPv6] != 1 {
		t.Errorf("ingress drops %v", st.Ingress.DropMap())
	}
}

func TestPumpStopsWhenALinkFailsAndCloseIsIdempotent(t *testing.T) {
	h := newHarness(t)
	h.network.Close() // the ExeUnit went away
	select {
	case <-h.pump.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("pump did not stop after its network link failed")
	}
	if h.pump.Err() == nil {
		t.Fatal("Err() = nil after a link failure")
	}
	h.pump.Close()
	h.pump.Close()
}

func TestPumpCloseStopsCleanly(t *testing.T) {
	h := newHarness(t)
	if err := h.pump.Close(); err != nil {
		t.Fatal(err)
	}
	if h.pump.Err() != nil {
		t.Fatalf("Err() after Close = %v, want nil", h.pump.Err())
	}
	h.pump.Close()
}

// steadyRound returns one round of the steady state: a batch of 50
// frames written by the payload and read by the network, and the batch's
// size in bytes.
func steadyRound(tb testing.TB, h *harness) (round func(), bytes int) {
	f := udpFrame(tb, ownMAC, peerMAC, ownIP, peerIP, make([]byte, 1000))
	batch := make([][]byte, 50)
	for i := range batch {
		batch[i] = append(make([]byte, link.Headroom), f...)
	}
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, link.BufSize)
	}
	sizes := make([]int, 64)
	return func() {
		h.payload.Write(batch, link.Headroom)
		for got := 0; got < len(batch); {
			n, err := h.network.Read(bufs, sizes, link.Headroom)
			if err != nil {
				tb.Fatal(err)
			}
			got += n
		}
	}, len(f) * len(batch)
}

func TestPumpSteadyStateAllocations(t *testing.T) {
	h := newHarness(t)
	round, _ := steadyRound(t, h)
	round() // warm up
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const rounds = 200
	for range rounds {
		round()
	}
	runtime.ReadMemStats(&after)
	frames := rounds * 50
	if perFrame := float64(after.Mallocs-before.Mallocs) / float64(frames); perFrame > 0.01 {
		t.Fatalf("%.3f allocations per frame in steady state, want 0", perFrame)
	}
}

// refusingLink is a link whose Write refuses frames of one size, as a TAP
// refuses a runt, and passes the rest to the real link beneath.
type refusingLink struct {
	link.Link
	refuse int
}

func (r *refusingLink) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		if len(b)-offset == r.refuse {
			if _, err := r.Link.Write(bufs[:i], offset); err != nil {
				return 0, err
			}
			return i, errors.New("invalid argument")
		}
	}
	return r.Link.Write(bufs, offset)
}

func TestPumpDropsOnlyTheRefusedFrame(t *testing.T) {
	payloadNear, payloadFar := linktest.StreamPair(t, link.PrefixU32BE)
	networkNear, networkFar := linktest.StreamPair(t, link.PrefixU32BE)
	bad := udpFrame(t, ownMAC, peerMAC, ownIP, peerIP, make([]byte, 77))
	p := Start(Config{Iface: payloadNear, Uplink: &refusingLink{Link: networkNear, refuse: len(bad)}})
	defer p.Close()
	first := udpFrame(t, ownMAC, peerMAC, ownIP, peerIP, []byte("first"))
	last := udpFrame(t, ownMAC, peerMAC, ownIP, peerIP, []byte("last"))
	linktest.Send(t, payloadFar, first, bad, last)
	got := linktest.Recv(t, networkFar, 2)
	if !bytes.Equal(got[0], first) || !bytes.Equal(got[1], last) {
		t.Fatal("the frames around the refused one did not arrive in order")
	}
	settledStats(t, p, func(st Stats) bool { return st.Egress.Drops[WriteFailed] == 1 && st.Egress.Frames == 2 })
}

// settledStats waits until the pump's counters satisfy ok: counters are
// published after a batch's write returns, so right after the far end
// received a frame they may still be catching up.
func settledStats(t *testing.T, p *Pump, ok func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := p.Stats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("counters never settled: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
