package vsock

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/gvpn/gvpn/netcfg"
)

// Limits of a Configure request.
const (
	MinMTU      = netcfg.MinMTU // the one MTU rule of every gvpn program
	MaxMTU      = netcfg.MaxMTU
	maxIfName   = 15 // IFNAMSIZ - 1
	maxHostname = 253
)

// FieldError is a Configure input that cannot be applied. Field is the
// Configure member's JSON name ("if_addr", "mask", "gateway", "mtu",
// "name", "hosts").
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// NetConfig is a validated Configure.
type NetConfig struct {
	Name    string                // interface name
	Addr    netip.Prefix          // if_addr with the mask's length, e.g. 10.0.0.2/24
	Gateway netip.Addr            // invalid (zero) when there is none
	MTU     int                   // IP MTU
	Hosts   map[string]netip.Addr // hostname → IP; nil when empty
}

// Parse validates c and returns its parsed form. The error is a
// *FieldError naming the first bad member, checked in the order name,
// if_addr, mask, gateway, mtu, hosts.
//
// The rules: name 1…15 bytes without '/', ':' or white space; if_addr an
// IPv4 unicast address; mask a dotted IPv4 netmask with contiguous ones;
// gateway empty or an IPv4 address inside if_addr/mask (it may equal
// if_addr, which means no gateway route); mtu in MinMTU…MaxMTU; hosts
// names without white space, '#' or NUL (they go into /etc/hosts) and valid
// IPv4 or IPv6 addresses.
func (c Configure) Parse() (NetConfig, error) {
	bad := func(field, format string, args ...any) (NetConfig, error) {
		return NetConfig{}, &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	switch {
	case c.Name == "":
		return bad("name", "empty interface name")
	case len(c.Name) > maxIfName:
		return bad("name", "interface name %q is longer than %d bytes", c.Name, maxIfName)
	case c.Name == "." || c.Name == "..":
		return bad("name", "interface name %q is reserved", c.Name)
	case strings.ContainsFunc(c.Name, func(r rune) bool { return r == '/' || r == ':' || r <= ' ' || r == 0x7f }):
		return bad("name", "interface name %q contains '/', ':', white space or a control character", c.Name)
	}
	ip, err := netip.ParseAddr(c.IfAddr)
	if err != nil || !ip.Is4() {
		return bad("if_addr", "%q is not an IPv4 address", c.IfAddr)
	}
	if ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return bad("if_addr", "%s is not a unicast address", ip)
	}
	bits, err := maskBits(c.Mask)
	if err != nil {
		return bad("mask", "%v", err)
	}
	cfg := NetConfig{Name: c.Name, Addr: netip.PrefixFrom(ip, bits), MTU: c.MTU}
	if c.Gateway != "" {
		gw, err := netip.ParseAddr(c.Gateway)
		if err != nil || !gw.Is4() {
			return bad("gateway", "%q is not an IPv4 address", c.Gateway)
		}
		if !cfg.Addr.Masked().Contains(gw) {
			return bad("gateway", "%s is outside %s", gw, cfg.Addr.Masked())
		}
		cfg.Gateway = gw
	}
	if err := netcfg.CheckMTU(c.MTU); err != nil {
		return bad("mtu", "%v", err)
	}
	if len(c.Hosts) > 0 {
		cfg.Hosts = make(map[string]netip.Addr, len(c.Hosts))
		for name, addr := range c.Hosts {
			if name == "" || len(name) > maxHostname ||
				strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == '#' || r == 0x7f }) {
				return bad("hosts", "hostname %q is empty, too long, or contains white space, '#' or a control character", name)
			}
			a, err := netip.ParseAddr(addr)
			if err != nil || a.Zone() != "" {
				return bad("hosts", "address %q of %q is not an IP address", addr, name)
			}
			cfg.Hosts[name] = a
		}
	}
	return cfg, nil
}

// Validate reports the first bad member of c as a *FieldError (see Parse).
func (c Configure) Validate() error {
	_, err := c.Parse()
	return err
}

// maskBits returns the prefix length of a dotted IPv4 netmask.
func maskBits(s string) (int, error) {
	m, err := netip.ParseAddr(s)
	if err != nil || !m.Is4() {
		return 0, fmt.Errorf("%q is not a dotted IPv4 mask", s)
	}
	b := m.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for v&(1<<31) != 0 {
		ones++
		v <<= 1
	}
	if v != 0 {
		return 0, fmt.Errorf("%s is not a netmask (its ones are not contiguous)", s)
	}
	if ones == 0 {
		return 0, fmt.Errorf("%s is an empty netmask", s)
	}
	return ones, nil
}

// ConfiguredFor builds the reply to the Configure with the given id: OK
// when err is nil, otherwise the error text and, when err wraps a
// *FieldError, its Field.
func ConfiguredFor(id uint64, err error) Configured {
	if err == nil {
		return Configured{ID: id, OK: true}
	}
	r := Configured{ID: id, Error: err.Error()}
	var fe *FieldError
	if errors.As(err, &fe) {
		r.Field = fe.Field
	}
	return r
}
