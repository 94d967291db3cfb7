package main

import (
	"context"
	"strconv"

	"github.com/gvpn/gvpn/netcfg"
)

// Addresses of nodes A and B in every testbed: the same /24 the gvpn
// integration tests use. Each testbed lives in its own namespaces, so they
// never meet.
const (
	addrA  = "192.168.0.2"
	addrB  = "192.168.0.3"
	vpnNet = "192.168.0.0"
	vpnMsk = "255.255.255.0"
	mtu    = netcfg.DefaultMTU // the gvpn runtime's default, used by every testbed
)

// vethBed is the kernel baseline: a veth pair between two namespaces at
// the VPN's MTU. Nothing in user space touches a frame.
type vethBed struct {
	*nsPair
	link string
}

func setupVeth(ctx context.Context, cfg *config, res *scenarioResult) (testbed, error) {
	p, err := newNSPair(ctx, cfg, "v", res)
	if err != nil {
		return nil, err
	}
	// The link is created directly inside the namespaces, so its name
	// never touches the host's; it goes away with either namespace.
	b := &vethBed{nsPair: p, link: "veth0"}
	steps := [][]string{
		{"link", "add", b.link, "netns", p.ns[nodeA], "type", "veth", "peer", "name", b.link, "netns", p.ns[nodeB]},
		{"-n", p.ns[nodeA], "addr", "add", addrA + "/24", "dev", b.link},
		{"-n", p.ns[nodeB], "addr", "add", addrB + "/24", "dev", b.link},
		{"-n", p.ns[nodeA], "link", "set", b.link, "mtu", strconv.Itoa(mtu), "up"},
		{"-n", p.ns[nodeB], "link", "set", b.link, "mtu", strconv.Itoa(mtu), "up"},
	}
	for _, s := range steps {
		if err := p.ip(ctx, s...); err != nil {
			p.close()
			return nil, err
		}
	}
	return b, nil
}

func (b *vethBed) ServerIP() string        { return addrB }
func (b *vethBed) LinkName() string        { return b.link }
func (b *vethBed) Sample() (sample, error) { return sample{}, nil }
func (b *vethBed) Close() error            { return b.close() }
