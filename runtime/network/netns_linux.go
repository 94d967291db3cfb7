package network

import (
	"context"
	"fmt"

	"github.com/vishvananda/netns"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/offload"
	"github.com/gvpn/gvpn/tap"
)

// NetnsPayload attaches the VPN as a TAP device inside a network namespace
// (the netns sandbox), configured by netlink, with the hosts entries merged
// into the sandbox's own hosts file.
type NetnsPayload struct {
	NS        netns.NsHandle
	HostsPath string
}

// Attach implements Payload.
func (p *NetnsPayload) Attach(_ context.Context, cfg netcfg.LinkConfig, hosts map[string]string) (link.Link, error) {
	dev, err := tap.Create(p.NS, tap.Config{Name: cfg.Name, Offload: true})
	if err != nil {
		return nil, fmt.Errorf("create TAP %s: %w", cfg.Name, err)
	}
	if err := netcfg.Apply(p.NS, cfg); err != nil {
		dev.Close() // non-persistent: the device goes with its fd
		return nil, fmt.Errorf("configure %s: %w", cfg.Name, err)
	}
	if len(hosts) > 0 && p.HostsPath != "" {
		if err := netcfg.MergeHosts(p.HostsPath, hosts); err != nil {
			dev.Close()
			return nil, fmt.Errorf("write hosts: %w", err)
		}
	}
	if dev.VNetHdr() {
		// The payload's TCP hands the TAP superframes; the ExeUnit and
		// the filters take one MTU-sized frame at a time.
		return offload.NewLink(dev), nil
	}
	return dev, nil
}
