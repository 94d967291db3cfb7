package golemnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/netcfg"
)

// GatewayMode says what a lab puts in the gateway field of CreateNetwork;
// both forms exist in the wild (docs/protocol.md §4) and a runtime must
// accept either.
type GatewayMode string

const (
	// GatewayNone sends "", as ExeUnits built after 2026-03 do when the
	// requestor gives no gateway (yapapi never does).
	GatewayNone GatewayMode = ""
	// GatewayFirstHost sends the network's first host (.1 of a /24), as
	// released ExeUnits up to v0.17.6 do. No node owns that address.
	GatewayFirstHost GatewayMode = "first-host"
)

// Lab defaults.
const (
	// DefaultLabNet is the VPN a lab uses when LabConfig.Net is zero: the
	// network yapapi's examples use.
	DefaultLabNet = "192.168.0.0/24"
	// DefaultLabSandboxPrefix prefixes the network namespaces of a lab's
	// sandboxes, so leftovers can be found (sandbox.List) and told apart
	// from real activities ("gvpn-") and tests.
	DefaultLabSandboxPrefix = "gvpn-lab-"
	// MaxLabNodes bounds LabConfig.Nodes: every node is a runtime process,
	// a network namespace and a TAP device.
	MaxLabNodes = 64
)

// ErrLabConfig is wrapped by every error about a LabConfig that cannot
// work; the message says which field and why.
var ErrLabConfig = errors.New("bad lab config")

// ErrUnknownNode is wrapped when a lab has no node of the given name.
var ErrUnknownNode = errors.New("unknown node")

// LabConfig describes a lab: N provider nodes on one VPN, each a real
// gvpn-runtime driven the way the ExeUnit drives it, joined by a Hub.
type LabConfig struct {
	// Runtime is the path of the gvpn-runtime binary. Required.
	Runtime string
	// Nodes is how many provider nodes to run, 1..MaxLabNodes.
	Nodes int
	// Net is the VPN, IPv4 only; zero means DefaultLabNet. A host address
	// with a prefix length (192.168.0.7/24) means its network. Node i gets
	// the (i+2)th address of the network: .2, .3, …; the network address,
	// the first host (.1, a requestor's or gateway's address) and the
	// broadcast address are never given to a node.
	Net netip.Prefix
	// Gateway is what CreateNetwork carries as the gateway.
	Gateway GatewayMode
	// MoreNets are further networks every node joins, as with a
	// requestor's Deploy of several networks: node i gets the (i+2)th
	// address of each too, the lab sends all networks in the one
	// CreateNetwork (each node gets them in another order, as the
	// ExeUnit's hash map would) and the hub knows every node's address on
	// each. They must not overlap each other or Net.
	MoreNets []netip.Prefix
	// NoHosts sends CreateNetwork without hosts, as stock requestors do;
	// nodes then reach each other by address only.
	NoHosts bool
	// Hostnames name the nodes, one per node, in order; they are the
	// nodes' names in the lab and the hub, their --hostname at deploy and
	// the keys of the hosts map every node gets. Empty means node-a,
	// node-b, … (node-27 onward past node-z).
	Hostnames []string
	// SandboxPrefix prefixes the runtimes' network namespace names
	// (--sandbox-prefix); empty means DefaultLabSandboxPrefix.
	SandboxPrefix string
	// VMNodes is how many of the nodes, the last ones, run their payload
	// in a QEMU guest (gvpn-runtime --sandbox vm) instead of a network
	// namespace; 0..Nodes.
	VMNodes int
	// TaskPackage, when set, is the image every node deploys and starts
	// with (--task-package, as the ExeUnit passes a requestor's image): a
	// GVMI, squashfs, OCI or docker save archive. The payloads then see
	// the image's files and tools, not the host's (LabNode.Image).
	TaskPackage string
	// VMArgs are added to the runtime invocations of VM nodes (e.g.
	// --vm-kernel, --vm-initrd when the guest image is not beside the
	// runtime).
	VMArgs []string
	// RuntimeArgs are appended to every runtime invocation after
	// --sandbox-prefix, like the ExeUnit's --runtime-arg values (e.g.
	// --stats-interval 1s, --log-level debug).
	RuntimeArgs []string
	// Workdir holds one activity work directory per node (Workdir/NAME),
	// removed at Close. Empty means a fresh temporary directory, removed
	// at Close too.
	Workdir string
	// Log receives the lab's and the hub's logs; nil discards them.
	Log *logrus.Entry
	// LogDir, if set, is where the runtimes' log files can be read as
	// LogDir/NAME.log: links to <workdir>/logs/gvpn-runtime.log while the
	// lab runs, copies after Close (which removes the workdirs), so that a
	// path printed for the user stays good. The runtimes themselves run
	// with stderr on /dev/null, as under a real provider, and log only to
	// their files; the self-test's output goes to LogDir/test.log.
	LogDir string
	// OwnProcessGroups starts each runtime in its own process group, so
	// that a terminal's Ctrl-C reaches only the program running the lab,
	// which then shuts the runtimes down in order, as the ExeUnit would.
	OwnProcessGroups bool
	// Progress, if set, is told what the lab is doing while NewLab runs:
	// node is "" for lab-wide steps. It may be called from several
	// goroutines at once.
	Progress func(node, step string)
}

// Validate checks c without touching anything: every error wraps
// ErrLabConfig and says which field is wrong. NewLab validates too.
func (c LabConfig) Validate() error {
	_, err := c.plan()
	return err
}

// labPlan is a validated LabConfig with every default filled in.
type labPlan struct {
	net    netip.Prefix
	mask   string
	names  []string
	ips    []netip.Addr
	more   []labNet // MoreNets, planned
	prefix string
}

// labNet is one of MoreNets with the nodes' addresses on it.
type labNet struct {
	net  netip.Prefix
	mask string
	ips  []netip.Addr
}

// plan validates c and assigns names and addresses. It touches nothing.
func (c LabConfig) plan() (labPlan, error) {
	bad := func(format string, args ...any) (labPlan, error) {
		return labPlan{}, fmt.Errorf("%w: %s", ErrLabConfig, fmt.Sprintf(format, args...))
	}
	if c.Runtime == "" {
		return bad("no runtime binary given")
	}
	if c.Nodes < 1 {
		return bad("a lab needs at least 1 node, not %d", c.Nodes)
	}
	if c.Nodes > MaxLabNodes {
		return bad("at most %d nodes, not %d", MaxLabNodes, c.Nodes)
	}
	if c.VMNodes < 0 || c.VMNodes > c.Nodes {
		return bad("%d VM nodes among %d nodes", c.VMNodes, c.Nodes)
	}
	switch c.Gateway {
	case GatewayNone, GatewayFirstHost:
	default:
		return bad("gateway mode %q: want %q or %q", c.Gateway, GatewayNone, GatewayFirstHost)
	}
	pfx := c.Net
	if !pfx.IsValid() {
		pfx = netip.MustParsePrefix(DefaultLabNet)
	}
	if !pfx.Addr().Is4() {
		return bad("network %s is not IPv4 (Golem VPN is IPv4-only)", pfx)
	}
	pfx = pfx.Masked()
	if room := LabCapacity(pfx); room < c.Nodes {
		return bad("network %s has room for %d node%s, not %d (nodes get %s onward; the network address, %s and the broadcast address are reserved)",
			pfx, room, plural(room), c.Nodes, pfx.Addr().Next().Next(), pfx.Addr().Next())
	}

	p := labPlan{
		net:    pfx,
		mask:   net.IP(net.CIDRMask(pfx.Bits(), 32)).String(),
		prefix: c.SandboxPrefix,
	}
	if p.prefix == "" {
		p.prefix = DefaultLabSandboxPrefix
	}
	if len(c.Hostnames) == 0 {
		for i := range c.Nodes {
			p.names = append(p.names, LabNodeName(i))
		}
	} else {
		if len(c.Hostnames) != c.Nodes {
			return bad("%d hostnames for %d nodes", len(c.Hostnames), c.Nodes)
		}
		seen := map[string]bool{}
		for _, h := range c.Hostnames {
			if err := netcfg.CheckHostname(h); err != nil {
				return bad("%v", err)
			}
			key := strings.ToLower(h)
			if seen[key] {
				return bad("hostname %q given twice", h)
			}
			seen[key] = true
			p.names = append(p.names, h)
		}
	}
	p.ips = nodeAddrs(pfx, c.Nodes)
	taken := []netip.Prefix{pfx}
	for _, m := range c.MoreNets {
		if !m.IsValid() || !m.Addr().Is4() {
			return bad("further network %s is not IPv4", m)
		}
		m = m.Masked()
		if room := LabCapacity(m); room < c.Nodes {
			return bad("further network %s has room for %d node%s, not %d", m, room, plural(room), c.Nodes)
		}
		for _, t := range taken {
			if m.Overlaps(t) {
				return bad("networks %s and %s overlap", t, m)
			}
		}
		taken = append(taken, m)
		p.more = append(p.more, labNet{net: m, mask: net.IP(net.CIDRMask(m.Bits(), 32)).String(), ips: nodeAddrs(m, c.Nodes)})
	}
	return p, nil
}

// nodeAddrs gives n nodes the addresses of pfx from its second host on
// (the first stays free, as a requestor's or gateway's address).
func nodeAddrs(pfx netip.Prefix, n int) []netip.Addr {
	var ips []netip.Addr
	ip := pfx.Addr().Next()
	for range n {
		ip = ip.Next()
		ips = append(ips, ip)
	}
	return ips
}

// LabCapacity returns how many nodes fit in the IPv4 network pfx: its
// addresses minus the network address, the first host (reserved like a
// gateway) and the broadcast address; a /30 holds one node. It is 0 for
// /31, /32, IPv6 and invalid prefixes.
func LabCapacity(pfx netip.Prefix) int {
	if !pfx.IsValid() || !pfx.Addr().Is4() {
		return 0
	}
	return max(int(int64(1)<<(32-pfx.Bits())-3), 0)
}

// LabNodeName is the default name of node i (from 0): node-a … node-z,
// then node-27, node-28, ….
func LabNodeName(i int) string {
	if i >= 0 && i < 26 {
		return "node-" + string(rune('a'+i))
	}
	return fmt.Sprintf("node-%d", i+1)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
