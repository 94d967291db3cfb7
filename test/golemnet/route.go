package golemnet

import (
	"encoding/binary"
	"net/netip"
)

// DropReason says why the hub did not deliver a frame (or one copy of a
// broadcast frame).
type DropReason uint8

// Drop reasons. Their String forms are the names used in logs and in
// NodeStats.DropMap.
const (
	// DropShort: the datagram is shorter than an Ethernet header (14 bytes).
	DropShort DropReason = iota
	// DropEmpty: the datagram was empty. Counted in addition to DropShort,
	// because the real ExeUnit's VPN stops for good on an empty datagram
	// (docs/protocol.md §5): an empty datagram is a runtime bug.
	DropEmpty
	// DropEtherType: the EtherType is neither IPv4, ARP nor IPv6 (VLAN tags,
	// LLDP, ...).
	DropEtherType
	// DropIPv6: a well-formed IPv6 frame. The ExeUnit parses IPv6 but never
	// routes it anywhere a Go runtime could see (neighbour discovery and
	// multicast have no owner).
	DropIPv6
	// DropMalformed: the ARP, IPv4 or IPv6 header does not parse.
	DropMalformed
	// DropARPProtoType: an ARP frame for a protocol other than IPv4.
	DropARPProtoType
	// DropNoRoute: no node owns the destination (ARP target, IPv4
	// destination, A0:13 MAC), the destination is multicast or a subnet
	// broadcast, or the destination node left (RemoveNode).
	DropNoRoute
	// DropSelf: the destination is owned by the sending node itself. The hub
	// does not reflect frames back to their sender.
	DropSelf
	// DropOversize: the datagram did not fit the hub's receive buffer.
	DropOversize
	// DropNoEndpoint: the destination node has no runtime endpoint yet
	// (Node.SetRuntimeEndpoint was not called).
	DropNoEndpoint
	// DropCut: the sending or receiving node is cut off (Fault.Cut).
	DropCut
	// DropLoss: dropped at random by Fault.Loss.
	DropLoss
	// DropQueueFull: the destination's delay queue (Fault.Latency) is full.
	DropQueueFull
	// DropSendError: the kernel refused to send the datagram to the runtime.
	DropSendError

	// NumDropReasons is the number of drop reasons, for arrays indexed by
	// DropReason.
	NumDropReasons
)

var dropNames = [NumDropReasons]string{
	DropShort:        "short",
	DropEmpty:        "empty",
	DropEtherType:    "ethertype",
	DropIPv6:         "ipv6",
	DropMalformed:    "malformed",
	DropARPProtoType: "arp_ptype",
	DropNoRoute:      "no_route",
	DropSelf:         "self",
	DropOversize:     "oversize",
	DropNoEndpoint:   "no_endpoint",
	DropCut:          "cut",
	DropLoss:         "loss",
	DropQueueFull:    "queue_full",
	DropSendError:    "send_error",
}

func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

const (
	etherHeaderLen = 14
	etherTypeIPv4  = 0x0800
	etherTypeARP   = 0x0806
	etherTypeIPv6  = 0x86DD

	arpHeaderLen  = 28 // htype, ptype, hlen, plen, oper + Ethernet/IPv4 addresses
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40

	ipv4Broadcast = 0xFFFFFFFF

	// requestorMACPrefix is the first two bytes of the MAC of a requestor's
	// yagna VPN stack (A0:13:<ipv4>); the ExeUnit routes by the MAC's
	// address bytes when the IPv4 destination has no owner.
	requestorMACPrefix0 = 0xA0
	requestorMACPrefix1 = 0x13
)

// action is what the router decided to do with a frame.
type action uint8

const (
	actDrop      action = iota
	actUnicast          // deliver to decision.to
	actBroadcast        // deliver to every node except the sender
)

// decision is the router's verdict on one frame.
type decision struct {
	act    action
	reason DropReason // why, when act == actDrop
	empty  bool       // the frame was empty (reason is DropShort)
	to     int32      // destination node index, when act == actUnicast
	// learn asks the hub to register src as an address of the sending node:
	// the frame was routed and its ARP sender / IPv4 source has no owner yet.
	learn bool
	src   uint32
}

// routes maps IPv4 addresses to the index of the node that owns them.
type routes map[uint32]int32

// owner returns the index of the node that owns ip.
func (r routes) owner(ip uint32) (int32, bool) {
	i, ok := r[ip]
	return i, ok
}

// route classifies frame, received from the runtime of node from, and picks
// its destination the way the ExeUnit's egress path does (docs/protocol.md
// §6). It only reads t, never retains frame, and never panics.
func route(frame []byte, from int32, t routes) decision {
	if len(frame) < etherHeaderLen {
		return decision{act: actDrop, reason: DropShort, empty: len(frame) == 0}
	}
	payload := frame[etherHeaderLen:]
	var src, dst uint32
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case etherTypeARP:
		if len(payload) < 8 {
			return drop(DropMalformed)
		}
		if binary.BigEndian.Uint16(payload[2:4]) != etherTypeIPv4 {
			return drop(DropARPProtoType)
		}
		if binary.BigEndian.Uint16(payload[0:2]) != 1 || payload[4] != 6 || payload[5] != 4 || len(payload) < arpHeaderLen {
			return drop(DropMalformed)
		}
		src = binary.BigEndian.Uint32(payload[14:18])
		dst = binary.BigEndian.Uint32(payload[24:28])
		// ARP, even a broadcast request, goes unicast to the owner of the
		// target protocol address.
		to, ok := t.owner(dst)
		if !ok {
			return drop(DropNoRoute)
		}
		return unicast(to, from, src, t)

	case etherTypeIPv4:
		if !validIPv4(payload) {
			return drop(DropMalformed)
		}
		src = binary.BigEndian.Uint32(payload[12:16])
		dst = binary.BigEndian.Uint32(payload[16:20])
		if dst == ipv4Broadcast {
			return withLearning(decision{act: actBroadcast}, from, src, t)
		}
		if to, ok := t.owner(dst); ok {
			return unicast(to, from, src, t)
		}
		if frame[0] == requestorMACPrefix0 && frame[1] == requestorMACPrefix1 {
			if to, ok := t.owner(binary.BigEndian.Uint32(frame[2:6])); ok {
				return unicast(to, from, src, t)
			}
		}
		// Multicast and subnet-directed broadcast end here too.
		return drop(DropNoRoute)

	case etherTypeIPv6:
		if !validIPv6(payload) {
			return drop(DropMalformed)
		}
		return drop(DropIPv6)

	default:
		return drop(DropEtherType)
	}
}

func drop(r DropReason) decision { return decision{act: actDrop, reason: r} }

func unicast(to, from int32, src uint32, t routes) decision {
	if to == from {
		return drop(DropSelf)
	}
	return withLearning(decision{act: actUnicast, to: to}, from, src, t)
}

// withLearning marks a routed frame's source address for learning when no
// node owns it yet. Only addresses that can name one host are learnt.
func withLearning(d decision, from int32, src uint32, t routes) decision {
	if learnable(src) {
		if _, known := t.owner(src); !known {
			d.learn, d.src = true, src
		}
	}
	return d
}

// learnable reports whether ip can be a node's own unicast address: not
// 0.0.0.0 (ARP probes), not loopback, not multicast or limited broadcast.
func learnable(ip uint32) bool {
	first := ip >> 24
	return ip != 0 && first != 127 && first < 224
}

// validIPv4 checks what the ExeUnit's parser needs: version 4, a header
// length of at least 20 bytes, and a total length inside the frame.
func validIPv4(p []byte) bool {
	if len(p) < ipv4HeaderLen || p[0]>>4 != 4 {
		return false
	}
	ihl := int(p[0]&0x0F) * 4
	total := int(binary.BigEndian.Uint16(p[2:4]))
	return ihl >= ipv4HeaderLen && ihl <= total && total <= len(p)
}

// validIPv6 checks version 6 and that the payload length fits the frame.
func validIPv6(p []byte) bool {
	return len(p) >= ipv6HeaderLen && p[0]>>4 == 6 &&
		ipv6HeaderLen+int(binary.BigEndian.Uint16(p[4:6])) <= len(p)
}

// ip4 converts a (possibly 4-in-6) IPv4 address to its integer form.
func ip4(a netip.Addr) (uint32, bool) {
	a = a.Unmap()
	if !a.Is4() {
		return 0, false
	}
	b := a.As4()
	return binary.BigEndian.Uint32(b[:]), true
}

func addrOf(ip uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], ip)
	return netip.AddrFrom4(b)
}
