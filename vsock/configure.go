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

// FieldError is a Configure input that cannot be applied. Field is the
// Configure member's JSON name ("if_addr", "mask", "gateway", "mtu",
// "name", "hosts").
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

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
// route). The error is a *FieldError naming the first bad member, checked
// in the order name, if_addr, mask, gateway, mtu, hosts.
func (c Configure) Parse() (NetConfig, error) {
	lc, hosts, err := netcfg.Request{
		Name: c.Name, Mask: c.Mask, Gateway: c.Gateway, IfAddr: c.IfAddr, MTU: c.MTU, Hosts: c.Hosts,
	}.Parse()
	if err != nil {
		field := "if_addr" // the network's address is if_addr here
		var fe *netcfg.FieldError
		if errors.As(err, &fe) && fe.Field != "addr" {
			field = fe.Field
		}
		return NetConfig{}, &FieldError{Field: field, Err: err}
	}
	return NetConfig{Link: lc, Hosts: hosts}, nil
}

// Validate reports the first bad member of c as a *FieldError (see Parse).
func (c Configure) Validate() error {
	_, err := c.Parse()
	return err
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
