package pump

import (
	"fmt"
	"net/netip"

	"github.com/gvpn/gvpn/runtime/frame"
)

// Reason says why a frame was dropped. The zero value means the frame passes.
type Reason uint8

// Drop reasons. Their String forms are stable: they appear in logs, counters
// and RuntimeStatus events.
const (
	Pass        Reason = iota
	Short              // shorter than an Ethernet header
	Oversize           // longer than the MTU allows
	EtherType          // neither IPv4 nor ARP (VLAN, LLDP, ...)
	IPv6               // IPv6: Golem VPN routes IPv4 only
	Malformed          // ARP or IPv4 header does not parse
	SpoofedMAC         // payload sent with a source MAC that is not its own
	SpoofedIP          // payload sent with an IPv4/ARP source that is not its own
	WriteFailed        // the destination link refused the frame
	NumReasons
)

var reasonNames = [NumReasons]string{
	Pass:        "pass",
	Short:       "short",
	Oversize:    "oversize",
	EtherType:   "ethertype",
	IPv6:        "ipv6",
	Malformed:   "malformed",
	SpoofedMAC:  "spoofed_mac",
	SpoofedIP:   "spoofed_ip",
	WriteFailed: "write_failed",
}

func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Filter decides whether a frame may cross the pump. Check must not retain
// or modify frame, and must be safe to call from one goroutine at a time.
type Filter interface {
	Check(frame []byte) Reason
}

// EgressFilter checks frames the payload sends toward the Golem network.
// The payload may only speak as itself: ExeUnits learn which node owns an
// address from the source of the frames they receive, so a spoofed source
// would poison the routing of every other node.
type EgressFilter struct {
	MAC      frame.MAC
	IP       netip.Addr // IPv4
	MaxFrame int        // MTU + Ethernet header
}

// Check implements Filter.
func (p *EgressFilter) Check(f []byte) Reason {
	if r := checkCommon(f, p.MaxFrame); r != Pass {
		return r
	}
	if frame.Src(f) != p.MAC {
		return SpoofedMAC
	}
	own := p.IP.As4()
	switch frame.Type(f) {
	case frame.TypeIPv4:
		h, _ := frame.ParseIPv4(f) // validated by checkCommon
		if h.Src != own {
			return SpoofedIP
		}
	case frame.TypeARP:
		a, _ := frame.ParseARP(f)
		if a.SenderMAC != p.MAC {
			return SpoofedMAC
		}
		if a.SenderIP != own {
			return SpoofedIP
		}
	}
	return Pass
}

// IngressFilter checks frames arriving from the Golem network before they
// reach the payload.
type IngressFilter struct {
	MaxFrame int // MTU + Ethernet header
}

// Check implements Filter.
func (n *IngressFilter) Check(f []byte) Reason {
	return checkCommon(f, n.MaxFrame)
}

// checkCommon applies the rules both directions share: a whole Ethernet
// header, the size limit, and the EtherTypes the ExeUnit routes (IPv4 and
// IPv4 ARP) with headers that parse.
func checkCommon(f []byte, maxFrame int) Reason {
	if len(f) < frame.EthernetLen {
		return Short
	}
	if maxFrame > 0 && len(f) > maxFrame {
		return Oversize
	}
	switch frame.Type(f) {
	case frame.TypeIPv4:
		if _, ok := frame.ParseIPv4(f); !ok {
			return Malformed
		}
	case frame.TypeARP:
		if a, ok := frame.ParseARP(f); !ok || !a.ProtoIsIPv4 {
			return Malformed
		}
	case frame.TypeIPv6:
		return IPv6
	default:
		return EtherType
	}
	return Pass
}
