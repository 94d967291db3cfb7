// Package frame reads the few Ethernet II, ARP and IPv4 header fields that
// Golem VPN routing and filtering, and the cutting and gluing of
// superframes (package offload), depend on: the module's one parser of
// these headers. It never allocates and never panics: every accessor
// checks the frame's length first.
package frame

import "encoding/binary"

// Header sizes and EtherTypes of the frames Golem VPN carries.
const (
	EthernetLen = 14 // dst MAC, src MAC, EtherType; no VLAN tag, no FCS
	ARPLen      = 28 // ARP for IPv4 over Ethernet
	IPv4MinLen  = 20

	TypeIPv4 = 0x0800
	TypeARP  = 0x0806
	TypeIPv6 = 0x86dd
)

// MAC is an Ethernet address.
type MAC [6]byte

// Broadcast is the Ethernet broadcast address.
var Broadcast = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Dst returns the destination MAC, or the zero MAC when f is shorter than an
// Ethernet header.
func Dst(f []byte) MAC {
	if len(f) < EthernetLen {
		return MAC{}
	}
	return MAC(f[0:6])
}

// Src returns the source MAC, or the zero MAC when f is shorter than an
// Ethernet header.
func Src(f []byte) MAC {
	if len(f) < EthernetLen {
		return MAC{}
	}
	return MAC(f[6:12])
}

// Type returns the EtherType, or 0 (no EtherType) when f is shorter than an
// Ethernet header.
func Type(f []byte) uint16 {
	if len(f) < EthernetLen {
		return 0
	}
	return binary.BigEndian.Uint16(f[12:14])
}

// ARP holds the fields of an IPv4-over-Ethernet ARP packet.
type ARP struct {
	Op          uint16
	SenderMAC   MAC
	SenderIP    [4]byte
	TargetMAC   MAC
	TargetIP    [4]byte
	ProtoIsIPv4 bool
}

// ParseARP parses the ARP packet in Ethernet frame f. ok is false when the
// packet is truncated or is not ARP for Ethernet hardware addresses.
// ProtoIsIPv4 is false for ARP of other protocol types, which the ExeUnit
// ignores.
func ParseARP(f []byte) (a ARP, ok bool) {
	if len(f) < EthernetLen+ARPLen {
		return a, false
	}
	p := f[EthernetLen:]
	htype := binary.BigEndian.Uint16(p[0:2])
	ptype := binary.BigEndian.Uint16(p[2:4])
	if htype != 1 || p[4] != 6 {
		return a, false
	}
	a.ProtoIsIPv4 = ptype == TypeIPv4 && p[5] == 4
	a.Op = binary.BigEndian.Uint16(p[6:8])
	a.SenderMAC = MAC(p[8:14])
	a.SenderIP = [4]byte(p[14:18])
	a.TargetMAC = MAC(p[18:24])
	a.TargetIP = [4]byte(p[24:28])
	return a, true
}

// IPv4 holds the fields of an IPv4 header that routing and filtering use;
// segmentation (package offload) reads the others with IPv4ID,
// IPv4Fragment and IPv4Protocol.
type IPv4 struct {
	Src, Dst [4]byte
	Protocol uint8
	HdrLen   int // bytes
	TotalLen int // bytes, from the header
}

// ParseIPv4 parses the IPv4 header in Ethernet frame f. ok is false when the
// header is truncated, is not version 4, or declares lengths the frame does
// not hold (IPv4Lens). Trailing padding after TotalLen is allowed (Ethernet
// pads short frames).
func ParseIPv4(f []byte) (h IPv4, ok bool) {
	h.HdrLen, h.TotalLen, ok = IPv4Lens(f)
	if !ok {
		return h, false
	}
	p := f[EthernetLen:]
	h.Protocol = p[9]
	h.Src = [4]byte(p[12:16])
	h.Dst = [4]byte(p[16:20])
	return h, true
}

// IPv4Lens checks the IPv4 header in Ethernet frame f and returns its
// header and total lengths: the part of ParseIPv4 a per-segment path
// (package offload) needs, cheap enough to inline. ok is false when the
// header is truncated, is not version 4, or declares lengths the frame does
// not hold. When ok, the header's fixed fields can be read with IPv4ID,
// IPv4Fragment and IPv4Protocol.
func IPv4Lens(f []byte) (hdrLen, totalLen int, ok bool) {
	if len(f) < EthernetLen+IPv4MinLen || f[EthernetLen]>>4 != 4 {
		return 0, 0, false
	}
	hdrLen = int(f[EthernetLen]&0x0f) * 4
	totalLen = int(binary.BigEndian.Uint16(f[EthernetLen+2:]))
	if hdrLen < IPv4MinLen || totalLen < hdrLen || totalLen > len(f)-EthernetLen {
		return 0, 0, false
	}
	return hdrLen, totalLen, true
}

// IPv4ID returns the identification of the IPv4 packet in Ethernet frame f,
// or 0 when f is too short to hold an IPv4 header.
func IPv4ID(f []byte) uint16 {
	if len(f) < EthernetLen+IPv4MinLen {
		return 0
	}
	return binary.BigEndian.Uint16(f[EthernetLen+4:])
}

// IPv4Fragment reports whether the IPv4 packet in Ethernet frame f is a
// fragment (more fragments follow, or its offset is not zero); false when f
// is too short to hold an IPv4 header.
func IPv4Fragment(f []byte) bool {
	return len(f) >= EthernetLen+IPv4MinLen && binary.BigEndian.Uint16(f[EthernetLen+6:])&0x3fff != 0
}

// IPv4Protocol returns the protocol number of the IPv4 packet in Ethernet
// frame f, or 0 when f is too short to hold an IPv4 header.
func IPv4Protocol(f []byte) uint8 {
	if len(f) < EthernetLen+IPv4MinLen {
		return 0
	}
	return f[EthernetLen+9]
}
