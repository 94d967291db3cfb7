package netcfg

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/netcfg/ifname"
	"github.com/gvpn/gvpn/netcfg/nsthread"
)

// GatewayRouteMetric is the metric of the route Apply installs via the
// gateway (the value Golem's VM runtime uses). The kernel's connected route
// for the same prefix has metric 0 and keeps winning; the gateway route is
// what the ExeUnit's configuration asked for, and marks the network's
// gateway for tools that look. Apply and Teardown treat metric-101 routes
// on the link as theirs.
const GatewayRouteMetric = 101

// StepError is how Apply and Teardown fail: which interface, which step,
// and the cause (wrapped). Steps are "validate", "netlink", "find link",
// "set mac", "set mtu", "disable ipv6", "remove stale addresses",
// "add address", "set up", "remove stale routes", "add route" and, for
// Teardown, "remove addresses", "remove routes" and "set down".
type StepError struct {
	Link string
	Step string
	Err  error
}

func (e *StepError) Error() string {
	return fmt.Sprintf("netcfg %s: %s: %v", e.Link, e.Step, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// ErrInvalidConfig is wrapped by Apply's "validate" step.
var ErrInvalidConfig = errors.New("invalid link config")

// testHookStep, when set by a test, runs before each Apply step and makes
// that step fail with its error. It lets tests check the rollback of every
// step on a real link.
var testHookStep func(step string) error

// Apply configures interface cfg.Name in namespace ns (netns.None() or any
// negative handle: the caller's namespace): MAC 90:13:<if_addr>, MTU,
// IPv6 off (before the link goes up, so no link-local address or router
// solicitation ever appears), address if_addr/len, link up, and the gateway
// route when cfg.Net has a gateway.
//
// IPv6 off means disable_ipv6=1 on the link. At MTUs below 1280, the
// default 1220 included, the kernel has already removed IPv6 from the link
// altogether (there is no disable_ipv6 to write then); if a later Apply
// raises the MTU to 1280 or more, the kernel brings IPv6 back with default
// settings and Apply writes disable_ipv6=1 right after.
//
// The interface is treated as dedicated to the VPN: other IPv4 addresses on
// it, and metric-101 routes through it that cfg does not ask for, are
// removed. Apply is idempotent; values already right are not touched.
//
// On failure Apply undoes, in reverse order, what it had changed (restores
// MAC, MTU and disable_ipv6, removes the address and route it added, sets
// the link down if it brought it up, re-adds what it removed as stale) and
// returns a *StepError. A missing link fails at "find link" with an error
// wrapping netlink.LinkNotFoundError.
func Apply(ns netns.NsHandle, cfg LinkConfig) (err error) {
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if verr := cfg.validate(); verr != nil {
		return &StepError{cfg.Name, "validate", verr}
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return &StepError{cfg.Name, "netlink", err}
	}
	defer h.Close()

	a := &applier{h: h, ns: ns, name: cfg.Name, log: orDiscard(cfg.Log)}
	defer func() {
		if err != nil {
			a.rollback()
		}
	}()

	var l netlink.Link
	if err := a.step("find link", func() (err error) {
		l, err = linkByName(h, cfg.Name)
		return err
	}); err != nil {
		return err
	}
	attrs := *l.Attrs()
	ip := cfg.Net.IfAddr
	nets := cfg.Networks()
	wants := make([]*netlink.Addr, len(nets))
	for i, n := range nets {
		wants[i] = &netlink.Addr{IPNet: &net.IPNet{IP: n.IfAddr.AsSlice(), Mask: net.CIDRMask(n.Prefix.Bits(), 32)}}
	}
	wanted := func(ipNet *net.IPNet) bool {
		for _, w := range wants {
			if sameIPNet(ipNet, w.IPNet) {
				return true
			}
		}
		return false
	}

	if err := a.step("set mac", func() error {
		mac := MAC(ip)
		if bytes.Equal(attrs.HardwareAddr, mac) {
			return nil
		}
		if err := h.LinkSetHardwareAddr(l, mac); err != nil {
			return err
		}
		old := attrs.HardwareAddr
		a.onUndo("restore mac", func() error { return h.LinkSetHardwareAddr(l, old) })
		return nil
	}); err != nil {
		return err
	}

	if err := a.step("set mtu", func() error {
		if attrs.MTU == mtu {
			return nil
		}
		if err := h.LinkSetMTU(l, mtu); err != nil {
			return err
		}
		old := attrs.MTU
		a.onUndo("restore mtu", func() error { return h.LinkSetMTU(l, old) })
		return nil
	}); err != nil {
		return err
	}

	if err := a.step("disable ipv6", func() error {
		// Below IPv6's minimum MTU (1280, so at the default 1220) the
		// kernel has already removed IPv6 from the link, sysctl
		// directory included: nothing to disable.
		old, err := setDisableIPv6(ns, cfg.Name, "1", mtu < ipv6MinMTU)
		if err != nil || old == "" || old == "1" {
			return err
		}
		a.onUndo("restore disable_ipv6", func() error {
			_, err := setDisableIPv6(ns, cfg.Name, old, true)
			return err
		})
		return nil
	}); err != nil {
		return err
	}

	present := make([]bool, len(wants))
	if err := a.step("remove stale addresses", func() error {
		addrs, err := addrList(h, l)
		if err != nil {
			return err
		}
		stale := false
		for _, ad := range addrs {
			for i, w := range wants {
				present[i] = present[i] || sameIPNet(ad.IPNet, w.IPNet)
			}
			stale = stale || !wanted(ad.IPNet)
		}
		if stale {
			// Removing the last address of a subnet makes the kernel
			// drop the routes whose gateway was in it. Registered
			// first, this undo runs after the addresses are back.
			routes, err := ourRoutes(h, l)
			if err != nil {
				return err
			}
			a.onUndo("restore routes", func() error {
				var errs []error
				for _, r := range routes {
					errs = append(errs, h.RouteReplace(&r))
				}
				return errors.Join(errs...)
			})
		}
		for _, ad := range addrs {
			if wanted(ad.IPNet) {
				continue
			}
			if err := h.AddrDel(l, &ad); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("%s: %w", ad.IPNet, err)
			}
			readd := netlink.Addr{IPNet: ad.IPNet, Label: ad.Label, Flags: ad.Flags, Scope: ad.Scope}
			a.onUndo("re-add "+ad.IPNet.String(), func() error { return h.AddrReplace(l, &readd) })
		}
		return nil
	}); err != nil {
		return err
	}

	if err := a.step("add address", func() error {
		for i, want := range wants {
			if err := h.AddrReplace(l, want); err != nil {
				return fmt.Errorf("%s: %w", want.IPNet, err)
			}
			if !present[i] {
				a.onUndo("remove address "+want.IPNet.String(), func() error { return ignore(h.AddrDel(l, want), unix.EADDRNOTAVAIL) })
			}
		}
		return nil
	}); err != nil {
		return err
	}

	if err := a.step("set up", func() error {
		if attrs.Flags&net.FlagUp != 0 {
			return nil
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
		a.onUndo("set down", func() error { return h.LinkSetDown(l) })
		return nil
	}); err != nil {
		return err
	}

	var want []*netlink.Route
	for _, n := range nets {
		if n.HasGateway() {
			want = append(want, gatewayRoute(l, n))
		}
	}
	routePresent := make([]bool, len(want))
	if err := a.step("remove stale routes", func() error {
		routes, err := ourRoutes(h, l)
		if err != nil {
			return err
		}
	next:
		for _, r := range routes {
			for i, w := range want {
				if sameRoute(&r, w) {
					routePresent[i] = true
					continue next
				}
			}
			if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("%s: %w", r, err)
			}
			a.onUndo("re-add route "+r.String(), func() error { return h.RouteReplace(&r) })
		}
		return nil
	}); err != nil {
		return err
	}

	if err := a.step("add route", func() error {
		for i, route := range want {
			if err := h.RouteReplace(route); err != nil {
				return fmt.Errorf("%s: %w", route.Dst, err)
			}
			if !routePresent[i] {
				a.onUndo("remove route "+route.Dst.String(), func() error { return ignore(h.RouteDel(route), unix.ESRCH) })
			}
		}
		return nil
	}); err != nil {
		return err
	}

	a.log.WithFields(logrus.Fields{
		"interface-name": cfg.Name, "networks": nets, "mtu": mtu,
	}).Debug("netcfg: applied")
	return nil
}

func (cfg *LinkConfig) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case ifname.Check(cfg.Name) != nil:
		return bad("interface name %q: %v", cfg.Name, ifname.Check(cfg.Name))
	case cfg.MTU < 0:
		return bad("negative MTU %d", cfg.MTU)
	}
	for _, n := range cfg.Networks() {
		if err := validateNetwork(n); err != nil {
			return bad("%v", err)
		}
	}
	if err := CheckNetworks(cfg.Networks()); err != nil {
		return bad("%v", err)
	}
	return nil
}

func validateNetwork(n Network) error {
	bad := fmt.Errorf
	switch {
	case !n.Prefix.IsValid() || !n.Prefix.Addr().Is4() || n.Prefix.Bits() == 0:
		return bad("network %v is not an IPv4 prefix", n.Prefix)
	case !n.IfAddr.Is4() || !n.Prefix.Contains(n.IfAddr):
		return bad("interface address %v is not in %v", n.IfAddr, n.Prefix)
	case n.Gateway.IsValid() && (!n.Gateway.Is4() || !n.Prefix.Contains(n.Gateway)):
		return bad("gateway %v is not in %v", n.Gateway, n.Prefix)
	case n.Gateway.IsValid() && n.Gateway == n.IfAddr:
		return bad("gateway %v is the interface's own address", n.Gateway)
	}
	return nil
}

// applier runs Apply's steps and remembers how to undo each change.
type applier struct {
	h    *netlink.Handle
	ns   netns.NsHandle
	name string
	log  logrus.FieldLogger
	undo []undoStep
}

type undoStep struct {
	what string
	fn   func() error
}

func (a *applier) step(name string, fn func() error) error {
	if testHookStep != nil {
		if err := testHookStep(name); err != nil {
			return &StepError{a.name, name, err}
		}
	}
	if err := fn(); err != nil {
		return &StepError{a.name, name, err}
	}
	return nil
}

func (a *applier) onUndo(what string, fn func() error) {
	a.undo = append(a.undo, undoStep{what, fn})
}

// rollback undoes in reverse order. It carries on past failures (logged):
// each undo is independent, and stopping would leave more behind.
func (a *applier) rollback() {
	for i := len(a.undo) - 1; i >= 0; i-- {
		u := a.undo[i]
		if err := u.fn(); err != nil {
			a.log.WithFields(logrus.Fields{"interface-name": a.name, "undo": u.what}).WithError(err).
				Warn("netcfg: rollback step failed")
		}
	}
	a.undo = nil
}

// Teardown removes the IPv4 addresses and the metric-101 routes from
// interface name in ns and sets it down. A link that does not exist (for
// example a TAP already closed) is success, so Teardown can run any number
// of times. It leaves MAC, MTU and disable_ipv6 alone. Errors are
// *StepError. log (nil discards) hears what was torn down.
func Teardown(ns netns.NsHandle, name string, log logrus.FieldLogger) error {
	if err := ifname.Check(name); err != nil {
		return &StepError{name, "validate", fmt.Errorf("%w: interface name %q: %w", ErrInvalidConfig, name, err)}
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return &StepError{name, "netlink", err}
	}
	defer h.Close()

	l, err := linkByName(h, name)
	if err != nil {
		if isGone(err) {
			return nil
		}
		return &StepError{name, "find link", err}
	}
	routes, err := ourRoutes(h, l)
	if err == nil {
		for _, r := range routes {
			if err = h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				break
			}
			err = nil
		}
	}
	if err != nil && !isGone(err) {
		return &StepError{name, "remove routes", err}
	}
	addrs, err := addrList(h, l)
	if err == nil {
		for _, ad := range addrs {
			if err = h.AddrDel(l, &ad); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				break
			}
			err = nil
		}
	}
	if err != nil && !isGone(err) {
		return &StepError{name, "remove addresses", err}
	}
	if err := h.LinkSetDown(l); err != nil && !isGone(err) {
		return &StepError{name, "set down", err}
	}
	orDiscard(log).WithField("interface-name", name).Debug("netcfg: torn down")
	return nil
}

// isGone reports whether err means the link no longer exists.
func isGone(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

func ignore(err error, errno unix.Errno) error {
	if errors.Is(err, errno) {
		return nil
	}
	return err
}

func gatewayRoute(l netlink.Link, n Network) *netlink.Route {
	p := n.Prefix.Masked()
	return &netlink.Route{
		LinkIndex: l.Attrs().Index,
		Dst:       &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)},
		Gw:        n.Gateway.AsSlice(),
		Priority:  GatewayRouteMetric,
		Protocol:  unix.RTPROT_STATIC,
		Table:     unix.RT_TABLE_MAIN,
		Scope:     netlink.SCOPE_UNIVERSE,
	}
}

func sameIPNet(a, b *net.IPNet) bool {
	if a == nil || b == nil {
		return false
	}
	ao, _ := a.Mask.Size()
	bo, _ := b.Mask.Size()
	return a.IP.Equal(b.IP) && ao == bo
}

func sameRoute(a, b *netlink.Route) bool {
	return a.LinkIndex == b.LinkIndex && a.Priority == b.Priority && sameIPNet(a.Dst, b.Dst) && a.Gw.Equal(b.Gw)
}

// dumpRetries is how often a netlink dump interrupted by a concurrent change
// (NLM_F_DUMP_INTR, netlink.ErrDumpInterrupted) is retried, as
// containernetworking's netlinksafe does.
const dumpRetries = 5

// retryDump calls dump until it is not interrupted, at most dumpRetries
// times. The last interrupted result is returned with its error: callers
// must not trust it.
func retryDump[T any](dump func() (T, error)) (T, error) {
	var v T
	var err error
	for range dumpRetries {
		v, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

func linkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	return retryDump(func() (netlink.Link, error) { return h.LinkByName(name) })
}

func addrList(h *netlink.Handle, l netlink.Link) ([]netlink.Addr, error) {
	return retryDump(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_V4) })
}

// ourRoutes lists the metric-101 IPv4 routes through l in the main table.
func ourRoutes(h *netlink.Handle, l netlink.Link) ([]netlink.Route, error) {
	filter := &netlink.Route{LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_MAIN}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	ours := routes[:0]
	for _, r := range routes {
		if r.Priority == GatewayRouteMetric {
			ours = append(ours, r)
		}
	}
	return ours, nil
}

// ipv6MinMTU is IPv6's minimum link MTU. Linux drops IPv6 (addresses and
// the conf/<link> sysctls) from a link whose MTU is set below it and brings
// it back, with default settings, when the MTU rises again.
const ipv6MinMTU = 1280

// setDisableIPv6 writes value to the interface's disable_ipv6 sysctl in ns
// and returns the previous value. /proc/sys/net shows the namespace of the
// thread that opens it, hence the switch. It returns "" and no error when
// the kernel has no IPv6 at all, or when the link has none and absentOK.
func setDisableIPv6(ns netns.NsHandle, name, value string, absentOK bool) (old string, err error) {
	path := "/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6"
	err = nsthread.Do(ns, func() error {
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			if absentOK {
				return nil
			}
			if _, serr := os.Stat("/proc/sys/net/ipv6"); errors.Is(serr, os.ErrNotExist) {
				return nil // no IPv6 in this kernel
			}
		}
		if err != nil {
			return err
		}
		old = strings.TrimSpace(string(b))
		if old == value {
			return nil
		}
		return os.WriteFile(path, []byte(value), 0o644)
	})
	return old, err
}
