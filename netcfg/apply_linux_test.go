package netcfg

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/tap"
	"github.com/gvpn/gvpn/test/privtest"

	"github.com/gvpn/gvpn/netcfg/nsthread"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLog is a debug-level logger that keeps what it hears for assertions.
func testLog() (*logrus.Logger, *logtest.Hook) {
	l, hook := logtest.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	return l, hook
}

// logged reports whether hook heard msg.
func logged(hook *logtest.Hook, msg string) bool {
	for _, e := range hook.AllEntries() {
		if e.Message == msg {
			return true
		}
	}
	return false
}

// env is a test namespace with a TAP in it.
type env struct {
	ns  netns.NsHandle
	h   *netlink.Handle
	tap *tap.TAP
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, ns := privtest.NewNetns(t, "gvt-tn-")
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	e := &env{ns: ns, h: h}
	e.newTAP(t)
	return e
}

// newTAP replaces the env's TAP with a fresh one named vpn0.
func (e *env) newTAP(t *testing.T) {
	t.Helper()
	if e.tap != nil {
		e.tap.Close()
	}
	d, err := tap.Create(e.ns, tap.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	e.tap = d
}

func mustNet(t *testing.T, addr, mask, gw, ifAddr string) Network {
	t.Helper()
	n, err := ParseNetwork(addr, mask, gw, ifAddr)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// linkState is everything Apply may change, in comparable form.
type linkState struct {
	MAC         string
	MTU         int
	Up          bool
	Addrs       []string // IPv4
	Has6        bool     // any IPv6 address
	Routes      []string // metric-101 routes
	DisableIPv6 string   // "absent" when the link has no IPv6 at all
}

func (e *env) state(t *testing.T, name string) linkState {
	t.Helper()
	l, err := e.h.LinkByName(name)
	if err != nil {
		t.Fatalf("LinkByName(%s): %v", name, err)
	}
	a := l.Attrs()
	s := linkState{MAC: a.HardwareAddr.String(), MTU: a.MTU, Up: a.Flags&net.FlagUp != 0}
	addrs, err := e.h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, ad := range addrs {
		s.Addrs = append(s.Addrs, ad.IPNet.String())
	}
	sort.Strings(s.Addrs)
	addrs6, err := e.h.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	s.Has6 = len(addrs6) > 0
	routes, err := ourRoutes(e.h, l)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		s.Routes = append(s.Routes, fmt.Sprintf("%s via %s metric %d", r.Dst, r.Gw, r.Priority))
	}
	sort.Strings(s.Routes)
	if err := nsthread.Do(e.ns, func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6")
		if errors.Is(err, os.ErrNotExist) {
			s.DisableIPv6 = "absent" // no IPv6 on the link at all
			return nil
		}
		s.DisableIPv6 = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestApply(t *testing.T) {
	e := newEnv(t)
	log, hook := testLog()
	cfg := LinkConfig{Name: "vpn0", Net: mustNet(t, "192.168.7.0", "255.255.255.0", "192.168.7.1", "192.168.7.2"), Log: log}
	if err := Apply(e.ns, cfg); err != nil {
		t.Fatal(err)
	}
	if !logged(hook, "netcfg: applied") {
		t.Error("Apply did not log to the caller's logger")
	}
	got := e.state(t, "vpn0")
	want := linkState{
		MAC: "90:13:c0:a8:07:02", MTU: DefaultMTU, Up: true,
		Addrs:  []string{"192.168.7.2/24"},
		Routes: []string{"192.168.7.0/24 via 192.168.7.1 metric 101"},
		// Below MTU 1280 the kernel removes IPv6 from the link.
		DisableIPv6: "absent",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("state after Apply:\n%+v\nwant\n%+v", got, want)
	}
	if mtu, err := e.tap.MTU(); err != nil || mtu != DefaultMTU {
		t.Errorf("tap MTU() = %d, %v", mtu, err)
	}
	// Idempotent.
	if err := Apply(e.ns, cfg); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	if again := e.state(t, "vpn0"); !reflect.DeepEqual(again, want) {
		t.Errorf("state after second Apply:\n%+v", again)
	}
}

// TestApplyIPv6Off: at an MTU where the link keeps IPv6, Apply turns it off
// before the link goes up, so no IPv6 address (link-local) ever appears.
func TestApplyIPv6Off(t *testing.T) {
	e := newEnv(t)
	cfg := LinkConfig{Name: "vpn0", Net: mustNet(t, "192.168.7.0", "/24", "", "192.168.7.2"), MTU: 1500}
	if s := e.state(t, "vpn0"); s.DisableIPv6 != "0" {
		t.Fatalf("fresh TAP has disable_ipv6 %q, want 0", s.DisableIPv6)
	}
	for range 2 {
		if err := Apply(e.ns, cfg); err != nil {
			t.Fatal(err)
		}
		s := e.state(t, "vpn0")
		if s.DisableIPv6 != "1" || s.Has6 || !s.Up || s.MTU != 1500 {
			t.Errorf("state %+v, want disable_ipv6 1 and no IPv6 address", s)
		}
	}
	// Down to 1220 the kernel drops IPv6; back up, Apply turns it off again.
	cfg.MTU = 0
	if err := Apply(e.ns, cfg); err != nil {
		t.Fatal(err)
	}
	if s := e.state(t, "vpn0"); s.DisableIPv6 != "absent" || s.Has6 {
		t.Errorf("at MTU 1220: %+v", s)
	}
	cfg.MTU = 1500
	if err := Apply(e.ns, cfg); err != nil {
		t.Fatal(err)
	}
	if s := e.state(t, "vpn0"); s.DisableIPv6 != "1" || s.Has6 {
		t.Errorf("back at MTU 1500: %+v", s)
	}
}

func TestApplyGatewaySemantics(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		gw     string
		routes []string
	}{
		{"", nil},
		{"192.168.7.2", nil}, // our own address: no route
		{"192.168.7.1", []string{"192.168.7.0/24 via 192.168.7.1 metric 101"}},
		{"192.168.7.9", []string{"192.168.7.0/24 via 192.168.7.9 metric 101"}}, // replaced
		{"", nil}, // stale route removed
	} {
		cfg := LinkConfig{Name: "vpn0", Net: mustNet(t, "192.168.7.0", "255.255.255.0", tc.gw, "192.168.7.2"), MTU: 1400}
		if err := Apply(e.ns, cfg); err != nil {
			t.Fatalf("gateway %q: %v", tc.gw, err)
		}
		s := e.state(t, "vpn0")
		if !reflect.DeepEqual(s.Routes, tc.routes) {
			t.Errorf("gateway %q: routes %v, want %v", tc.gw, s.Routes, tc.routes)
		}
		if s.MTU != 1400 {
			t.Errorf("MTU %d, want 1400", s.MTU)
		}
	}
}

func TestApplyReconfigure(t *testing.T) {
	e := newEnv(t)
	if err := Apply(e.ns, LinkConfig{Name: "vpn0", Net: mustNet(t, "192.168.7.0", "255.255.255.0", "192.168.7.1", "192.168.7.2")}); err != nil {
		t.Fatal(err)
	}
	if err := Apply(e.ns, LinkConfig{Name: "vpn0", Net: mustNet(t, "10.8.0.0", "/16", "", "10.8.3.4")}); err != nil {
		t.Fatal(err)
	}
	s := e.state(t, "vpn0")
	if s.MAC != "90:13:0a:08:03:04" || !reflect.DeepEqual(s.Addrs, []string{"10.8.3.4/16"}) || s.Routes != nil {
		t.Errorf("after reconfiguration: %+v", s)
	}
}

// TestApplyTwoNetworks: the ExeUnit's CreateNetwork may carry several
// networks; all live on the one interface, each with its address and
// prefix route and its own gateway route where it has one. Dropping one
// later removes exactly its address and route.
func TestApplyTwoNetworks(t *testing.T) {
	e := newEnv(t)
	a := mustNet(t, "192.168.7.0", "255.255.255.0", "192.168.7.1", "192.168.7.2")
	b := mustNet(t, "10.8.0.0", "/16", "", "10.8.3.4")
	cfg := LinkConfig{Name: "vpn0", Net: a, More: []Network{b}}
	for range 2 { // idempotent
		if err := Apply(e.ns, cfg); err != nil {
			t.Fatal(err)
		}
		s := e.state(t, "vpn0")
		if s.MAC != "90:13:c0:a8:07:02" || !reflect.DeepEqual(s.Addrs, []string{"10.8.3.4/16", "192.168.7.2/24"}) ||
			!reflect.DeepEqual(s.Routes, []string{"192.168.7.0/24 via 192.168.7.1 metric 101"}) {
			t.Errorf("two networks: %+v", s)
		}
	}
	if err := Apply(e.ns, LinkConfig{Name: "vpn0", Net: b}); err != nil {
		t.Fatal(err)
	}
	if s := e.state(t, "vpn0"); !reflect.DeepEqual(s.Addrs, []string{"10.8.3.4/16"}) || s.Routes != nil {
		t.Errorf("back to one network: %+v", s)
	}
	overlap := mustNet(t, "192.168.0.0", "/16", "", "192.168.9.9")
	err := Apply(e.ns, LinkConfig{Name: "vpn0", Net: a, More: []Network{overlap}})
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "overlap") {
		t.Errorf("overlapping networks: %v", err)
	}
}

func TestApplyMissingLink(t *testing.T) {
	e := newEnv(t)
	err := Apply(e.ns, LinkConfig{Name: "nope0", Net: mustNet(t, "10.0.0.0", "/24", "", "10.0.0.2")})
	var se *StepError
	var nf netlink.LinkNotFoundError
	if !errors.As(err, &se) || se.Step != "find link" || !errors.As(err, &nf) {
		t.Errorf("Apply on a missing link = %v", err)
	}
}

func TestApplyInvalidConfig(t *testing.T) {
	n := mustNet(t, "10.0.0.0", "/24", "10.0.0.1", "10.0.0.2")
	for _, cfg := range []LinkConfig{
		{Name: "", Net: n},
		{Name: "../../x", Net: n},
		{Name: "vpn0", Net: n, MTU: -1},
		{Name: "vpn0", Net: Network{}},
		{Name: "vpn0", Net: Network{Prefix: n.Prefix, IfAddr: n.IfAddr, Gateway: n.IfAddr}},
		{Name: "vpn0", Net: Network{Prefix: n.Prefix, IfAddr: n.IfAddr, Gateway: mustNet(t, "10.1.0.0", "/24", "", "10.1.0.1").IfAddr}},
		{Name: "vpn0", Net: Network{Prefix: n.Prefix, IfAddr: mustNet(t, "10.1.0.0", "/24", "", "10.1.0.1").IfAddr}},
	} {
		err := Apply(netns.None(), cfg)
		var se *StepError
		if !errors.As(err, &se) || se.Step != "validate" || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Apply(%+v) = %v, want a validate error", cfg, err)
		}
	}
}

// TestApplyMTUFailure: the kernel refuses the MTU; nothing is left half
// configured.
func TestApplyMTUFailure(t *testing.T) {
	e := newEnv(t)
	before := e.state(t, "vpn0")
	err := Apply(e.ns, LinkConfig{Name: "vpn0", Net: mustNet(t, "10.0.0.0", "/24", "10.0.0.1", "10.0.0.2"), MTU: 70000})
	var se *StepError
	if !errors.As(err, &se) || se.Step != "set mtu" {
		t.Fatalf("Apply with MTU 70000 = %v, want a set mtu error", err)
	}
	if after := e.state(t, "vpn0"); !reflect.DeepEqual(after, before) {
		t.Errorf("state changed by a failed Apply:\nbefore %+v\nafter  %+v", before, after)
	}
}

var applySteps = []string{
	"find link", "set mac", "set mtu", "disable ipv6", "remove stale addresses",
	"add address", "set up", "remove stale routes", "add route",
}

// TestApplyRollback makes each step fail in turn, on a fresh link and on a
// link configured differently before, and checks the link is left exactly
// as it was.
func TestApplyRollback(t *testing.T) {
	e := newEnv(t)
	t.Cleanup(func() { testHookStep = nil })
	first := LinkConfig{Name: "vpn0", Net: mustNet(t, "192.168.7.0", "/24", "192.168.7.1", "192.168.7.2")}
	second := LinkConfig{Name: "vpn0", Net: mustNet(t, "10.8.0.0", "/16", "10.8.0.1", "10.8.3.4"), MTU: 1300}
	for _, configured := range []bool{false, true} {
		for _, step := range applySteps {
			e.newTAP(t)
			if configured {
				if err := Apply(e.ns, first); err != nil {
					t.Fatal(err)
				}
			} else if err := e.h.LinkSetMTU(mustLink(t, e.h, "vpn0"), 1500); err != nil {
				// Keep IPv6 on the fresh link so that its undo is
				// exercised too.
				t.Fatal(err)
			}
			before := e.state(t, "vpn0")
			injected := errors.New("injected")
			testHookStep = func(s string) error {
				if s == step {
					return injected
				}
				return nil
			}
			err := Apply(e.ns, second)
			testHookStep = nil
			var se *StepError
			if !errors.As(err, &se) || se.Step != step || !errors.Is(err, injected) {
				t.Fatalf("configured=%v step %q: Apply = %v", configured, step, err)
			}
			if after := e.state(t, "vpn0"); !reflect.DeepEqual(after, before) {
				t.Errorf("configured=%v, failure at %q left the link changed:\nbefore %+v\nafter  %+v", configured, step, before, after)
			}
		}
	}
}

func mustLink(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestApplyCurrentNamespace(t *testing.T) {
	e := newEnv(t)
	cfg := LinkConfig{Name: "vpn0", Net: mustNet(t, "192.168.7.0", "/24", "", "192.168.7.2")}
	if err := nsthread.Do(e.ns, func() error { return Apply(netns.None(), cfg) }); err != nil {
		t.Fatal(err)
	}
	if s := e.state(t, "vpn0"); !s.Up || s.DisableIPv6 != "absent" || len(s.Addrs) != 1 {
		t.Errorf("state %+v", s)
	}
}

func TestTeardown(t *testing.T) {
	e := newEnv(t)
	if err := Apply(e.ns, LinkConfig{Name: "vpn0", Net: mustNet(t, "192.168.7.0", "/24", "192.168.7.1", "192.168.7.2")}); err != nil {
		t.Fatal(err)
	}
	log, hook := testLog()
	for i := range 2 {
		if err := Teardown(e.ns, "vpn0", log); err != nil {
			t.Fatalf("Teardown #%d: %v", i+1, err)
		}
		if !logged(hook, "netcfg: torn down") {
			t.Errorf("Teardown #%d did not log to the caller's logger", i+1)
		}
		hook.Reset()
		s := e.state(t, "vpn0")
		if s.Up || s.Addrs != nil || s.Routes != nil {
			t.Errorf("after Teardown #%d: %+v", i+1, s)
		}
	}
	// The link is gone (TAP closed): still success, twice.
	e.tap.Close()
	for range 2 {
		if err := Teardown(e.ns, "vpn0", nil); err != nil {
			t.Errorf("Teardown of a closed TAP: %v", err)
		}
	}
	if err := Teardown(e.ns, "never0", nil); err != nil {
		t.Errorf("Teardown of a link that never existed: %v", err)
	}
	var se *StepError
	if err := Teardown(e.ns, "a/b", nil); !errors.As(err, &se) || se.Step != "validate" {
		t.Errorf("Teardown with a bad name = %v", err)
	}
}
