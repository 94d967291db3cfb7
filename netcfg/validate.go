package netcfg

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"

	"github.com/gvpn/gvpn/netcfg/ifname"
	"github.com/sirupsen/logrus"
)

// Limits of a VPN interface's configuration.
const (
	MinMTU = 68         // the smallest IPv4 MTU (RFC 791)
	MaxMTU = 65535 - 14 // the largest frame a link carries, minus the Ethernet header
	// MaxHostname is the longest hostname a payload can be given: the
	// kernel's HOST_NAME_MAX, the limit of sethostname(2).
	MaxHostname = 64
)

// LinkConfig is the configuration Apply gives one interface.
type LinkConfig struct {
	// Name is the interface name in the target namespace.
	Name string
	// Net is the validated network, usually from Request.Parse or
	// ParseNetwork. Its address gives the interface its MAC,
	// 90:13:<if_addr>.
	Net Network
	// More are further networks on the same interface (the ExeUnit sends
	// one per network of the requestor's Deploy): each gets its address
	// and prefix route, and its gateway route if it has one. They must not
	// overlap Net or each other (CheckNetworks).
	More []Network
	// MTU is the IP MTU; 0 means DefaultMTU. A value the kernel refuses
	// (a TAP takes 68 to 65535) fails at step "set mtu".
	MTU int
	// Log receives what Apply did and any rollback step that failed; nil
	// discards it. The caller passes its own, so lines carry its fields.
	Log logrus.FieldLogger
}

// Networks returns Net followed by More.
func (cfg LinkConfig) Networks() []Network {
	return append([]Network{cfg.Net}, cfg.More...)
}

// Request is a VPN interface's configuration as it arrives, in text: from
// the ExeUnit's CreateNetwork, from the bridge's configure message, from
// gvpn-agent's flags. Parse is the one validator all of them go through.
type Request struct {
	Name    string            // interface name, required
	Addr    string            // the network's address; may be unmasked; "" means IfAddr
	Mask    string            // dotted netmask ("255.255.255.0") or length ("/24")
	Gateway string            // "" or IfAddr: no gateway route
	IfAddr  string            // this node's address
	MTU     int               // IP MTU, MinMTU…MaxMTU
	Hosts   map[string]string // hostname → IP, for the payload's hosts file
}

// Parse validates every field and returns the configuration Apply takes and
// the parsed hosts entries (nil when there are none). Fields are checked in
// the order name, addr, mask, if_addr, gateway, mtu, hosts; the first bad
// one is reported as a *FieldError (Field is the protocol's name for it),
// or as a *HostsEntryError wrapped in one for "hosts". The address rules
// are ParseNetwork's, the hosts rules MergeHosts'.
func (r Request) Parse() (LinkConfig, map[string]netip.Addr, error) {
	if err := ifname.Check(r.Name); err != nil {
		return LinkConfig{}, nil, &FieldError{"name", r.Name, err.Error(), nil}
	}
	addr := r.Addr
	if addr == "" {
		addr = r.IfAddr
	}
	n, err := ParseNetwork(addr, r.Mask, r.Gateway, r.IfAddr)
	if err != nil {
		return LinkConfig{}, nil, err
	}
	if err := CheckMTU(r.MTU); err != nil {
		return LinkConfig{}, nil, err
	}
	hosts, err := CheckHosts(r.Hosts)
	if err != nil {
		return LinkConfig{}, nil, err
	}
	return LinkConfig{Name: r.Name, Net: n, MTU: r.MTU}, hosts, nil
}

// CheckMTU reports an MTU outside MinMTU…MaxMTU as a *FieldError on "mtu".
func CheckMTU(mtu int) error {
	if mtu < MinMTU || mtu > MaxMTU {
		return &FieldError{"mtu", strconv.Itoa(mtu), fmt.Sprintf("outside %d…%d", MinMTU, MaxMTU), nil}
	}
	return nil
}

// CheckHosts validates a hostname → IP map (the names by RFC 1123, as
// CheckHostname but up to 253 bytes; the addresses IPv4 or IPv6 without a
// zone; no two names equal but for case) and returns it parsed, or nil when
// it is empty. The error is a *FieldError on "hosts" wrapping the
// *HostsEntryError of the first bad entry in name order.
func CheckHosts(entries map[string]string) (map[string]netip.Addr, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	list, err := checkHosts(entries)
	if err != nil {
		return nil, &FieldError{Field: "hosts", Value: err.(*HostsEntryError).Hostname, Reason: err.Error(), Err: err}
	}
	out := make(map[string]netip.Addr, len(list))
	for _, e := range list {
		out[e.name] = e.ip
	}
	return out, nil
}

// CheckHostname reports why h cannot be the payload's own hostname: it
// must follow RFC 1123 (dot-separated labels of letters, digits and '-',
// not starting or ending with '-') and fit sethostname(2) (MaxHostname
// bytes). The same rule, without the length limit of the kernel, applies
// to the names of the hosts file.
func CheckHostname(h string) error {
	if len(h) > MaxHostname {
		return fmt.Errorf("hostname %q is longer than %d bytes", h, MaxHostname)
	}
	if reason := checkHostname(h); reason != "" {
		return fmt.Errorf("hostname %q: %s", h, reason)
	}
	return nil
}

// orDiscard returns log, or a logger that drops everything when log is nil:
// a library must not write to the process-wide logger behind its caller.
func orDiscard(log logrus.FieldLogger) logrus.FieldLogger {
	if log != nil {
		return log
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}
