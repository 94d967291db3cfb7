package netns

import (
	"context"
	"fmt"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/offload"
	"github.com/gvpn/gvpn/tap"
)

// Attach brings up the payload's side of the VPN (network.Attacher): a TAP
// device inside the sandbox's namespace, configured by netlink, with the
// hosts entries merged into the sandbox's own hosts file. Bad hosts entries
// are refused (a *netcfg.FieldError on "hosts") before anything is made; on
// any error nothing it made is left behind. The returned link belongs to
// the caller.
func (s *Sandbox) Attach(_ context.Context, cfg netcfg.LinkConfig, hosts map[string]string) (link.Link, error) {
	if _, err := netcfg.CheckHosts(hosts); err != nil {
		return nil, err
	}
	dev, err := tap.Create(s.ns, tap.Config{Name: cfg.Name, Offload: true, Log: s.log})
	if err != nil {
		return nil, fmt.Errorf("create TAP %s: %w", cfg.Name, err)
	}
	if cfg.Log == nil {
		cfg.Log = s.log
	}
	if err := netcfg.Apply(s.ns, cfg); err != nil {
		dev.Close() // non-persistent: the device goes with its fd
		return nil, fmt.Errorf("configure %s: %w", cfg.Name, err)
	}
	if len(hosts) > 0 && s.hostsPath != "" {
		if err := netcfg.MergeHosts(s.hostsPath, hosts); err != nil {
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
