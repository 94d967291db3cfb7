package vsock

import (
	"errors"
	"net/netip"

	"github.com/gvpn/gvpn/netcfg"
)

// Limits of a Configure request: netcfg's.
const (
	MinMTU = netcfg.MinMTU
	MaxMTU = netcfg.MaxMTU
)

// NetConfig is a validated Configure: the interface's configuration as
// netcfg applies it, and the parsed hosts entries (nil when empty).
type NetConfig struct {
	Link  netcfg.LinkConfig
	Hosts map[string]netip.Addr
}

// Parse validates c with the one validator for network configuration,
// netcfg.Request.Parse, which the runtime applies to CreateNetwork too (so
// if_addr may not be the network's or broadcast address, the mask may also
// be written "/N", and the gateway may equal if_addr, meaning no gateway
// route). The error is a *netcfg.FieldError naming the first bad member by
// its Configure JSON name, checked in the order name, if_addr, mask,
// gateway, mtu, hosts.
func (c Configure) Parse() (NetConfig, error) {
	lc, hosts, err := netcfg.Request{
		Name: c.Name, Mask: c.Mask, Gateway: c.Gateway, IfAddr: c.IfAddr, MTU: c.MTU, Hosts: c.Hosts,
	}.Parse()
	if err != nil {
		var fe *netcfg.FieldError
		if !errors.As(err, &fe) {
			return NetConfig{}, &netcfg.FieldError{Field: "if_addr", Err: err}
		}
		if fe.Field == "addr" {
			// The network's address is if_addr here.
			c := *fe
			c.Field = "if_addr"
			return NetConfig{}, &c
		}
		return NetConfig{}, err
	}
	return NetConfig{Link: lc, Hosts: hosts}, nil
}

// Validate reports the first bad member of c as a *netcfg.FieldError (see
// Parse).
func (c Configure) Validate() error {
	_, err := c.Parse()
	return err
}

// ConfiguredFor builds the reply to the Configure with the given id: OK
// when err is nil, otherwise the error text and, when err wraps a
// *netcfg.FieldError, its Field.
func ConfiguredFor(id uint64, err error) Configured {
	if err == nil {
		return Configured{ID: id, OK: true}
	}
	r := Configured{ID: id, Error: err.Error()}
	var fe *netcfg.FieldError
	if errors.As(err, &fe) {
		r.Field = fe.Field
	}
	return r
}
