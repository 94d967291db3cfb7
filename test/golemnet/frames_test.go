package golemnet

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Frame builders for tests: real frames serialized by gopacket, the way a
// Linux payload would send them through its TAP (MAC 90:13:<ipv4>).

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func payloadMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x90, 0x13, b[0], b[1], b[2], b[3]}
}

func requestorMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0xA0, 0x13, b[0], b[1], b[2], b[3]}
}

func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// arpRequest is a broadcast "who has tpa, tell spa".
func arpRequest(tb testing.TB, spa, tpa netip.Addr) []byte {
	s, t := spa.As4(), tpa.As4()
	return serialize(tb,
		&layers.Ethernet{SrcMAC: payloadMAC(spa), DstMAC: broadcastMAC, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{
			AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
			HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
			SourceHwAddress: payloadMAC(spa), SourceProtAddress: s[:],
			DstHwAddress: make([]byte, 6), DstProtAddress: t[:],
		})
}

func ipv4Layer(src, dst netip.Addr, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto,
		SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice())}
}

// icmpEcho is an ICMPv4 echo request from src to dst, with MACs as a payload
// VM would put them (destination MAC 90:13:<dst>).
func icmpEcho(tb testing.TB, src, dst netip.Addr, seq uint16, payload []byte) []byte {
	return icmpEchoMAC(tb, payloadMAC(dst), src, dst, seq, payload)
}

func icmpEchoMAC(tb testing.TB, dstMAC net.HardwareAddr, src, dst netip.Addr, seq uint16, payload []byte) []byte {
	return serialize(tb,
		&layers.Ethernet{SrcMAC: payloadMAC(src), DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv4},
		ipv4Layer(src, dst, layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: seq},
		gopacket.Payload(payload))
}

// udpFrame is an IPv4/UDP frame whose payload starts with seq (big endian)
// and is padded so that the whole frame is size bytes.
func udpFrame(tb testing.TB, dstMAC net.HardwareAddr, src, dst netip.Addr, seq uint32, size int) []byte {
	const headers = 14 + 20 + 8
	payload := make([]byte, max(size-headers, 4))
	binary.BigEndian.PutUint32(payload, seq)
	ip := ipv4Layer(src, dst, layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: 40000, DstPort: 5001}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return serialize(tb,
		&layers.Ethernet{SrcMAC: payloadMAC(src), DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv4},
		ip, udp, gopacket.Payload(payload))
}

// udpSeq reads the sequence number udpFrame put in frame.
func udpSeq(frame []byte) (uint32, bool) {
	const off = 14 + 20 + 8
	if len(frame) < off+4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(frame[off:]), true
}

// ipv6NeighborSolicitation is what a Linux TAP with IPv6 on sends first.
func ipv6NeighborSolicitation(tb testing.TB) []byte {
	src := net.ParseIP("fe80::9213:aff:fe00:1")
	target := net.ParseIP("fe80::9213:aff:fe00:2")
	dst := net.ParseIP("ff02::1:ff00:2")
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: 255, SrcIP: src, DstIP: dst}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return serialize(tb,
		&layers.Ethernet{SrcMAC: net.HardwareAddr{0x90, 0x13, 10, 0, 0, 1}, DstMAC: net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv6},
		ip, icmp, &layers.ICMPv6NeighborSolicitation{TargetAddress: target})
}

// vlanICMP is an ICMP echo inside an 802.1Q tag, which the ExeUnit drops.
func vlanICMP(tb testing.TB, src, dst netip.Addr) []byte {
	return serialize(tb,
		&layers.Ethernet{SrcMAC: payloadMAC(src), DstMAC: payloadMAC(dst), EthernetType: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: 5, Type: layers.EthernetTypeIPv4},
		ipv4Layer(src, dst, layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1})
}

// lldpFrame is a frame with an EtherType the ExeUnit does not know.
func lldpFrame() []byte {
	f := make([]byte, 60)
	copy(f, []byte{0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e, 0x90, 0x13, 10, 0, 0, 1, 0x88, 0xcc})
	return f
}
