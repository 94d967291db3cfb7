package agent

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/runtime/frame"
	"github.com/gvpn/gvpn/runtime/pump"
	"github.com/gvpn/gvpn/tap"
	"github.com/gvpn/gvpn/vsock"
)

// applied is the configuration the interface has now.
type applied struct {
	link  netcfg.LinkConfig
	hosts map[string]string
}

// configure creates the TAP on first use and gives it c: address, mask, MAC
// 90:13:<if_addr>, MTU, link up, gateway route, hosts entries. Applying the
// same configuration again succeeds and changes nothing; a new address or
// MTU is applied in place. The interface name cannot change: the pump's
// payload side is that TAP for the agent's life.
//
// On failure, a TAP this call created is removed again, and an interface
// that existed keeps working with its previous settings as far as netcfg's
// rollback restores them. Errors wrap *netcfg.FieldError when one configure
// member is at fault.
func (a *agent) configure(c vsock.Configure) error {
	a.cfgMu.Lock()
	defer a.cfgMu.Unlock()
	nc, err := c.Parse()
	if err != nil {
		return err
	}
	lc := nc.Link
	log := a.log.WithFields(logrus.Fields{"if": lc.Name, "address": lc.Net.String(), "mtu": lc.MTU})
	if a.cur != nil && a.cur.link.Name != lc.Name {
		return &netcfg.FieldError{Field: "name", Err: fmt.Errorf(
			"interface %s is configured already; the name cannot change while the agent runs (restart it)", a.cur.link.Name)}
	}

	dev := a.gate.device()
	created := false
	if dev == nil {
		log.Info("creating the TAP interface")
		dev, err = tap.Create(a.ns, tap.Config{Name: lc.Name, Offload: true, Log: log})
		if err != nil {
			if errors.Is(err, tap.ErrExists) || errors.Is(err, tap.ErrInvalidName) {
				return &netcfg.FieldError{Field: "name", Err: err}
			}
			return fmt.Errorf("create TAP %s: %w", lc.Name, err)
		}
		created = true
	}
	undo := func() {
		if created {
			dev.Close() // non-persistent: the device goes with its fd
		}
	}

	log.Info("configuring the interface")
	lc.Log = log
	if err := netcfg.Apply(a.ns, lc); err != nil {
		undo()
		var se *netcfg.StepError
		if errors.As(err, &se) && se.Step == "set mtu" {
			return &netcfg.FieldError{Field: "mtu", Err: err}
		}
		return err
	}

	hosts := make(map[string]string, len(nc.Hosts))
	for name, ip := range nc.Hosts {
		hosts[name] = ip.String()
	}
	if len(hosts) > 0 {
		if a.hostsFile == "" {
			log.WithField("entries", len(hosts)).Warn("hosts entries received, but --hosts-file is empty: not written")
		} else {
			if err := netcfg.MergeHosts(a.hostsFile, hosts); err != nil {
				undo()
				var he *netcfg.HostsEntryError
				if errors.As(err, &he) {
					return &netcfg.FieldError{Field: "hosts", Err: err}
				}
				return fmt.Errorf("hosts file %s: %w", a.hostsFile, err)
			}
			log.WithFields(logrus.Fields{"file": a.hostsFile, "entries": len(hosts)}).Info("hosts entries merged")
		}
	}

	maxFrame := lc.MTU + frame.EthernetLen
	ip := lc.Net.IfAddr
	a.egress.set(pump.EgressFilter{MAC: frame.MAC(netcfg.MAC(ip)), IP: ip, MaxFrame: maxFrame})
	a.ingress.set(pump.IngressFilter{MaxFrame: maxFrame})
	if created && !a.gate.set(dev) {
		dev.Close()
		return errors.New("agent is shutting down")
	}
	if a.cur != nil && sameConfig(a.cur, lc, hosts) {
		log.Info("interface configured (unchanged)")
	} else {
		log.WithField("gateway", gatewayString(lc.Net.Gateway)).Info("interface configured")
	}
	a.cur = &applied{link: lc, hosts: hosts}
	return nil
}

func sameConfig(a *applied, lc netcfg.LinkConfig, hosts map[string]string) bool {
	return a.link.Name == lc.Name && a.link.MTU == lc.MTU && slices.Equal(a.link.Networks(), lc.Networks()) &&
		maps.Equal(a.hosts, hosts)
}

func gatewayString(gw netip.Addr) string {
	if gw.IsValid() {
		return gw.String()
	}
	return "none"
}
