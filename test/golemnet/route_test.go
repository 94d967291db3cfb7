package golemnet

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"slices"
	"testing"
)

var (
	ipA      = netip.MustParseAddr("10.0.0.1")
	ipB      = netip.MustParseAddr("10.0.0.2")
	ipC      = netip.MustParseAddr("10.0.0.3")
	ipD      = netip.MustParseAddr("10.0.0.4") // never pre-registered
	ipNobody = netip.MustParseAddr("10.0.0.99")
)

// testNodes is the number of nodes behind testTable.
const testNodes = 3

// testTable routes ipA/ipB/ipC to nodes 0/1/2.
func testTable() routes {
	t := routes{}
	for i, ip := range []netip.Addr{ipA, ipB, ipC} {
		k, _ := ip4(ip)
		t[k] = int32(i)
	}
	return t
}

type routeCase struct {
	name  string
	frame []byte
	from  int32
	act   action
	to    int32      // actUnicast
	drop  DropReason // actDrop
	learn netip.Addr // learnt source, if any
}

// routeCases are shared by the router's unit test and the hub's end-to-end
// test; from/to are indices of ipA, ipB, ipC.
func routeCases(tb testing.TB) []routeCase {
	truncated := icmpEcho(tb, ipA, ipB, 1, make([]byte, 100))
	truncated = truncated[:len(truncated)-50] // IPv4 total length now beyond the frame
	badIHL := icmpEcho(tb, ipA, ipB, 1, nil)
	badIHL[14] = 0x44 // IHL 4 < 5
	badVersion := icmpEcho(tb, ipA, ipB, 1, nil)
	badVersion[14] = 0x65
	arpIPv6 := arpRequest(tb, ipA, ipB)
	binary.BigEndian.PutUint16(arpIPv6[16:18], 0x86DD)
	arpHlen := arpRequest(tb, ipA, ipB)
	arpHlen[18] = 8
	arpShort := arpRequest(tb, ipA, ipB)[:14+20]
	ipv6Short := ipv6NeighborSolicitation(tb)[:14+30]
	padded := append(icmpEcho(tb, ipA, ipB, 1, nil), make([]byte, 18)...) // Ethernet padding after the IP packet

	return []routeCase{
		{name: "arp broadcast request goes unicast to TPA owner", frame: arpRequest(tb, ipA, ipC), from: 0, act: actUnicast, to: 2},
		{name: "arp from unregistered sender is learnt", frame: arpRequest(tb, ipD, ipB), from: 0, act: actUnicast, to: 1, learn: ipD},
		{name: "arp unknown target", frame: arpRequest(tb, ipA, ipNobody), from: 0, act: actDrop, drop: DropNoRoute},
		{name: "arp for own address", frame: arpRequest(tb, ipA, ipA), from: 0, act: actDrop, drop: DropSelf},
		{name: "arp ptype ipv6", frame: arpIPv6, from: 0, act: actDrop, drop: DropARPProtoType},
		{name: "arp hlen 8", frame: arpHlen, from: 0, act: actDrop, drop: DropMalformed},
		{name: "arp truncated", frame: arpShort, from: 0, act: actDrop, drop: DropMalformed},
		{name: "icmp unicast", frame: icmpEcho(tb, ipA, ipB, 1, []byte("ping")), from: 0, act: actUnicast, to: 1},
		{name: "icmp with ethernet padding", frame: padded, from: 0, act: actUnicast, to: 1},
		{name: "icmp to self", frame: icmpEcho(tb, ipB, ipB, 1, nil), from: 1, act: actDrop, drop: DropSelf},
		{name: "icmp unknown destination", frame: icmpEcho(tb, ipA, ipNobody, 1, nil), from: 0, act: actDrop, drop: DropNoRoute},
		{name: "icmp from unregistered source is learnt", frame: icmpEcho(tb, ipD, ipC, 1, nil), from: 1, act: actUnicast, to: 2, learn: ipD},
		{name: "spoofed registered source is not learnt", frame: icmpEcho(tb, ipA, ipC, 1, nil), from: 1, act: actUnicast, to: 2},
		{name: "A0:13 MAC fallback", frame: icmpEchoMAC(tb, requestorMAC(ipC), ipA, netip.MustParseAddr("8.8.8.8"), 1, nil), from: 0, act: actUnicast, to: 2},
		{name: "A0:13 MAC of nobody", frame: icmpEchoMAC(tb, requestorMAC(ipNobody), ipA, netip.MustParseAddr("8.8.8.8"), 1, nil), from: 0, act: actDrop, drop: DropNoRoute},
		{name: "90:13 MAC is no fallback", frame: icmpEchoMAC(tb, payloadMAC(ipC), ipA, netip.MustParseAddr("8.8.8.8"), 1, nil), from: 0, act: actDrop, drop: DropNoRoute},
		{name: "udp limited broadcast", frame: udpFrame(tb, broadcastMAC, ipA, netip.MustParseAddr("255.255.255.255"), 1, 100), from: 0, act: actBroadcast},
		{name: "udp subnet broadcast", frame: udpFrame(tb, broadcastMAC, ipA, netip.MustParseAddr("10.0.0.255"), 1, 100), from: 0, act: actDrop, drop: DropNoRoute},
		{name: "udp multicast", frame: udpFrame(tb, broadcastMAC, ipA, netip.MustParseAddr("224.0.0.251"), 1, 100), from: 0, act: actDrop, drop: DropNoRoute},
		{name: "ipv6 neighbour solicitation", frame: ipv6NeighborSolicitation(tb), from: 0, act: actDrop, drop: DropIPv6},
		{name: "ipv6 truncated", frame: ipv6Short, from: 0, act: actDrop, drop: DropMalformed},
		{name: "vlan tagged", frame: vlanICMP(tb, ipA, ipB), from: 0, act: actDrop, drop: DropEtherType},
		{name: "lldp", frame: lldpFrame(), from: 0, act: actDrop, drop: DropEtherType},
		{name: "truncated ipv4", frame: truncated, from: 0, act: actDrop, drop: DropMalformed},
		{name: "ipv4 ihl 4", frame: badIHL, from: 0, act: actDrop, drop: DropMalformed},
		{name: "ipv4 version 6", frame: badVersion, from: 0, act: actDrop, drop: DropMalformed},
		{name: "13 bytes", frame: icmpEcho(tb, ipA, ipB, 1, nil)[:13], from: 0, act: actDrop, drop: DropShort},
		{name: "ethernet header only", frame: icmpEcho(tb, ipA, ipB, 1, nil)[:14], from: 0, act: actDrop, drop: DropMalformed},
	}
}

func TestRoute(t *testing.T) {
	tab := testTable()
	for _, tc := range routeCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			d := route(tc.frame, tc.from, tab)
			if d.act != tc.act {
				t.Fatalf("action %d, want %d (decision %+v)", d.act, tc.act, d)
			}
			switch tc.act {
			case actUnicast:
				if d.to != tc.to {
					t.Errorf("to node %d, want %d", d.to, tc.to)
				}
			case actDrop:
				if d.reason != tc.drop {
					t.Errorf("drop %v, want %v", d.reason, tc.drop)
				}
			}
			if tc.learn.IsValid() {
				if !d.learn || addrOf(d.src) != tc.learn {
					t.Errorf("learn %v %v, want %v", d.learn, addrOf(d.src), tc.learn)
				}
			} else if d.learn {
				t.Errorf("learns %v, want nothing", addrOf(d.src))
			}
		})
	}
}

func TestRouteEmpty(t *testing.T) {
	d := route(nil, 0, testTable())
	if d.act != actDrop || d.reason != DropShort || !d.empty {
		t.Fatalf("empty frame: %+v", d)
	}
	d = route([]byte{1}, 0, testTable())
	if d.empty {
		t.Fatalf("1-byte frame counted as empty")
	}
}

func TestDropReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for r := range NumDropReasons {
		s := r.String()
		if s == "" || s == "unknown" || seen[s] {
			t.Errorf("reason %d has name %q", r, s)
		}
		seen[s] = true
	}
	if NumDropReasons.String() != "unknown" {
		t.Errorf("out of range reason named %q", NumDropReasons.String())
	}
}

func TestRouteAllocs(t *testing.T) {
	tab := testTable()
	frames := [][]byte{icmpEcho(t, ipA, ipB, 1, nil), arpRequest(t, ipD, ipC), udpFrame(t, broadcastMAC, ipA, netip.MustParseAddr("255.255.255.255"), 1, 1234)}
	if a := testing.AllocsPerRun(100, func() {
		for _, f := range frames {
			route(f, 0, tab)
		}
	}); a != 0 {
		t.Fatalf("route allocates %.1f times per run", a)
	}
}

// FuzzRoute feeds arbitrary frames and routing tables to the router and
// checks that it neither panics nor returns an impossible decision. The
// table is either the fixed test table (owners empty) or decoded from
// owners: 5 bytes per entry, an IPv4 address and a node index.
func FuzzRoute(f *testing.F) {
	for _, tc := range routeCases(f) {
		f.Add(tc.frame, uint8(tc.from), []byte(nil))
	}
	f.Add([]byte{}, uint8(0), []byte(nil))
	f.Add(icmpEcho(f, ipA, ipB, 1, nil), uint8(1), []byte{10, 0, 0, 2, 1, 10, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, frame []byte, from uint8, owners []byte) {
		tab := testTable()
		if len(owners) >= 5 {
			tab = routes{}
			for ; len(owners) >= 5; owners = owners[5:] {
				tab[binary.BigEndian.Uint32(owners)] = int32(owners[4] % 8)
			}
		}
		src := int32(from % 8)
		d := route(frame, src, tab)
		switch d.act {
		case actDrop:
			if d.reason >= NumDropReasons {
				t.Fatalf("bad reason %d", d.reason)
			}
			if d.learn {
				t.Fatalf("dropped frame learns")
			}
			if d.empty != (len(frame) == 0) {
				t.Fatalf("empty %v for %d bytes", d.empty, len(frame))
			}
		case actUnicast:
			if d.to == src || !slices.Contains(slices.Collect(maps.Values(tab)), d.to) {
				t.Fatalf("unicast to %d from %d", d.to, src)
			}
		case actBroadcast:
			if len(frame) < 34 || frame[12] != 0x08 || frame[13] != 0x00 {
				t.Fatalf("broadcast of a non-IPv4 frame")
			}
		default:
			t.Fatalf("bad action %d", d.act)
		}
		if d.act != actDrop && len(frame) < etherHeaderLen {
			t.Fatalf("short frame routed")
		}
		if d.learn {
			if _, owned := tab.owner(d.src); owned || !learnable(d.src) {
				t.Fatalf("learns %v", addrOf(d.src))
			}
		}
	})
}

func BenchmarkRoute(b *testing.B) {
	tab := testTable()
	frame := udpFrame(b, payloadMAC(ipB), ipA, ipB, 1, 1234)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		route(frame, 0, tab)
	}
}
