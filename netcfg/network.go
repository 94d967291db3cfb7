// Package netcfg configures the VPN interface the way Golem VPN expects:
// IPv4 address and prefix, MAC 90:13:<ipv4>, MTU 1220, link up, an optional
// gateway route, IPv6 off, and hosts-file entries.
//
// Parsing (ParseNetwork, MAC, MergeHosts' merge) is pure and runs anywhere.
// Apply and Teardown talk netlink to a given network namespace and are
// idempotent: running them twice gives the same state and no error.
package netcfg

import (
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"strconv"
)

// DefaultName is the VPN interface's name when none is given: the name the
// runtime, the agent and the lab give the payload's interface.
const DefaultName = "vpn0"

// DefaultMTU is the IP MTU of the VPN interface when LinkConfig.MTU is 0.
// Golem's VM runtime uses 1220 so that a frame (MTU+14) plus the Golem Net
// framing around it still fits a 1500-byte path unfragmented.
const DefaultMTU = 1220

// Network is one VPN network as this node sees it, validated.
type Network struct {
	// Prefix is the network, masked (192.168.0.0/24 even if the address
	// arrived as 192.168.0.7).
	Prefix netip.Prefix
	// IfAddr is this node's address; it lies inside Prefix and is neither
	// its network nor its broadcast address (below /31).
	IfAddr netip.Addr
	// Gateway is the zero netip.Addr when there is no gateway route to
	// install: the gateway was "" (newer ExeUnits), equal to IfAddr or
	// outside the network. Otherwise it lies inside Prefix.
	Gateway netip.Addr
	// GatewayIgnored says why a non-empty gateway field gave no route
	// ("is this node's own address", "outside network …"), for the log;
	// "" when the field was empty or used.
	GatewayIgnored string
}

// HasGateway reports whether n asks for a route via a gateway.
func (n Network) HasGateway() bool { return n.Gateway.IsValid() }

// String returns e.g. "192.168.0.2/24 gw 192.168.0.1" or "192.168.0.2/24".
func (n Network) String() string {
	s := netip.PrefixFrom(n.IfAddr, n.Prefix.Bits()).String()
	if n.HasGateway() {
		s += " gw " + n.Gateway.String()
	}
	return s
}

// FieldError says which input was bad and why: the module's one error type
// for that, whatever the input — a field of CreateNetwork or of the
// bridge's configure message, or a flag of a command line. Field is the
// input's name as its protocol or command line spells it: "addr", "mask",
// "gateway", "if_addr", for a whole Request also "name", "mtu" and "hosts",
// for a flag "--bridge". The error text always names it.
type FieldError struct {
	Field  string
	Value  string // the bad value, when quoting it helps
	Reason string // why it is bad; empty when Err says it
	Err    error  // the cause, when there is one (a *HostsEntryError)
}

func (e *FieldError) Error() string {
	switch {
	case e.Field == "hosts" && e.Err != nil:
		return e.Err.Error() // a HostsEntryError names the entry and "hosts"
	case e.Reason == "" && e.Err != nil:
		if e.Field == "" {
			return e.Err.Error()
		}
		return e.Field + ": " + e.Err.Error()
	}
	return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

func (e *FieldError) Unwrap() error { return e.Err }

// ParseNetwork validates the four address fields of a CreateNetwork request
// (docs/protocol.md §4) and returns the network they describe.
//
//   - addr may be unmasked; the network is addr&mask.
//   - mask is a dotted IPv4 netmask with contiguous ones ("255.255.255.0"),
//     or a length written "/24". A /0 network is refused.
//   - if_addr must be a unicast IPv4 address inside the network and, below
//     /31, not its network or broadcast address.
//   - gateway may be "", equal to if_addr or outside the network, all
//     meaning no gateway route (newer ExeUnits send "", v0.17.6 the first
//     host, which may be this very node; Golem's VM runtime skips such
//     routes too). GatewayIgnored then says why. Inside the network it
//     must not be the network or broadcast address.
//
// Only IPv4 is supported; an IPv6 value in any field is an error naming
// that field. All errors are *FieldError.
func ParseNetwork(addr, mask, gateway, ifAddr string) (Network, error) {
	a, err := parseIPv4("addr", addr)
	if err != nil {
		return Network{}, err
	}
	length, err := parseMask(mask)
	if err != nil {
		return Network{}, err
	}
	prefix := netip.PrefixFrom(a, length).Masked()

	ip, err := parseIPv4("if_addr", ifAddr)
	if err != nil {
		return Network{}, err
	}
	if err := checkHost("if_addr", ifAddr, ip, prefix); err != nil {
		return Network{}, err
	}
	if !ip.IsGlobalUnicast() && !ip.IsLinkLocalUnicast() { // IsGlobalUnicast includes private ranges
		return Network{}, &FieldError{"if_addr", ifAddr, "not a unicast address", nil}
	}

	n := Network{Prefix: prefix, IfAddr: ip}
	if gateway == "" {
		return n, nil
	}
	gw, err := parseIPv4("gateway", gateway)
	if err != nil {
		return Network{}, err
	}
	if gw == ip {
		n.GatewayIgnored = "is this node's own address"
		return n, nil
	}
	if !prefix.Contains(gw) {
		n.GatewayIgnored = "outside network " + prefix.String()
		return n, nil
	}
	if err := checkHost("gateway", gateway, gw, prefix); err != nil {
		return Network{}, err
	}
	n.Gateway = gw
	return n, nil
}

func parseIPv4(field, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, &FieldError{field, s, "empty", nil}
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, &FieldError{field, s, "not an IPv4 address", nil}
	case !a.Is4():
		return netip.Addr{}, &FieldError{field, s, "IPv6 is not supported", nil}
	}
	return a, nil
}

// parseMask returns the prefix length of a contiguous dotted netmask or of
// "/N".
func parseMask(s string) (int, error) {
	var length int
	if len(s) > 1 && s[0] == '/' {
		digits := s[1:]
		n, err := strconv.Atoi(digits)
		if err != nil || len(digits) > 2 || digits[0] < '0' || digits[0] > '9' || n > 32 {
			return 0, &FieldError{"mask", s, "not a prefix length from /1 to /32", nil}
		}
		length = n
	} else {
		m, err := parseIPv4("mask", s)
		if err != nil {
			return 0, err
		}
		b := m.As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		length = bits.LeadingZeros32(^v)
		if v != ^uint32(0)<<(32-length) {
			return 0, &FieldError{"mask", s, "not a contiguous netmask", nil}
		}
	}
	if length == 0 {
		return 0, &FieldError{"mask", s, "a /0 network would take every address", nil}
	}
	return length, nil
}

// checkHost checks that ip is a usable host address of prefix.
func checkHost(field, value string, ip netip.Addr, prefix netip.Prefix) error {
	if !prefix.Contains(ip) {
		return &FieldError{field, value, "outside network " + prefix.String(), nil}
	}
	if prefix.Bits() >= 31 {
		return nil // RFC 3021 point-to-point /31 and host /32 have no such addresses
	}
	if ip == prefix.Addr() {
		return &FieldError{field, value, "is the network address of " + prefix.String(), nil}
	}
	if ip == broadcast(prefix) {
		return &FieldError{field, value, "is the broadcast address of " + prefix.String(), nil}
	}
	return nil
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= ^uint32(0) >> p.Bits()
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// MAC returns the Golem VPN MAC address for an interface address:
// 90:13:a:b:c:d for IPv4 a.b.c.d. For an IPv6 address it uses the last four
// bytes, as Golem's VM runtime does. It returns nil for the zero Addr.
func MAC(ip netip.Addr) net.HardwareAddr {
	if !ip.IsValid() {
		return nil
	}
	b := ip.As16() // IPv4 sits in the last four bytes
	return net.HardwareAddr{0x90, 0x13, b[12], b[13], b[14], b[15]}
}

// CheckNetworks refuses a set of networks that cannot share one interface:
// two that overlap (the same or nested prefixes) would make the kernel's
// choice of source address and route ambiguous, and the same address twice
// would have two owners. Disjoint networks, in any order, are fine. The
// error is a *FieldError for field "networks" naming both.
func CheckNetworks(nets []Network) error {
	for i, a := range nets {
		for _, b := range nets[i+1:] {
			if a.Prefix.Overlaps(b.Prefix) {
				return &FieldError{Field: "networks", Value: a.String() + ", " + b.String(),
					Reason: "networks " + a.Prefix.String() + " and " + b.Prefix.String() + " overlap: one interface cannot route both"}
			}
		}
	}
	return nil
}
