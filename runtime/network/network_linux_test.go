package network

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/endpoint"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/privtest"
)

func TestMain(m *testing.M) {
	netns.MaybeRunShim()
	goleak.VerifyTestMain(m)
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	l.SetLevel(logrus.WarnLevel)
	return logrus.NewEntry(l)
}

func vpnRequest(addr, mask, gw, ifAddr string, hosts map[string]string) *api.Request_CreateNetwork {
	return &api.Request_CreateNetwork{
		Networks: []*api.Network{{Addr: addr, Mask: mask, Gateway: gw, IfAddr: ifAddr}},
		Hosts:    hosts,
	}
}

// activity is one sandbox plus its network manager, as gvpn-runtime's
// start builds them.
type activity struct {
	sb      *netns.Sandbox
	mgr     *Manager
	exeunit *net.UDPConn
}

func newActivity(t *testing.T) *activity {
	t.Helper()
	sb, err := netns.Open(netns.Config{Workdir: t.TempDir(), NamePrefix: "gvt-nw-", Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	exeunit, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := endpoint.Parse("udp://" + exeunit.LocalAddr().String())
	mgr := New(Options{VPN: &u, Attacher: sb, Log: quietLog()})
	return &activity{sb: sb, mgr: mgr, exeunit: exeunit}
}

func (a *activity) close(t *testing.T) {
	t.Helper()
	for range 2 { // teardown runs twice without error
		if err := a.mgr.Close(); err != nil {
			t.Fatal(err)
		}
		if err := a.sb.Close(); err != nil {
			t.Fatal(err)
		}
	}
	a.exeunit.Close()
}

func linksIn(t *testing.T, a *activity) []string {
	t.Helper()
	h, err := netlink.NewHandleAt(a.sb.NetNS())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

func TestBadRequestsNameTheFieldAndLeaveNothing(t *testing.T) {
	privtest.RequireRoot(t)
	a := newActivity(t)
	defer a.close(t)
	ctx := context.Background()
	cases := []struct {
		name  string
		req   *api.Request_CreateNetwork
		field string
	}{
		{"if_addr not an address", vpnRequest("192.168.0.0", "255.255.255.0", "", "999.1.1.1", nil), "if_addr"},
		{"non-contiguous mask", vpnRequest("192.168.0.0", "255.0.255.0", "", "192.168.0.2", nil), "mask"},
		{"if_addr outside the network", vpnRequest("192.168.0.0", "255.255.255.0", "", "10.0.0.2", nil), "if_addr"},
		{"IPv6 network", vpnRequest("fd00::", "ffff:ffff:ffff:ffff::", "", "fd00::2", nil), "addr"},
		{"gateway outside", vpnRequest("192.168.0.0", "255.255.255.0", "10.0.0.1", "192.168.0.2", nil), "gateway"},
		{"bad hosts entry", vpnRequest("192.168.0.0", "255.255.255.0", "", "192.168.0.2", map[string]string{"node-a": "not-an-ip"}), "hosts"},
		{"INET", &api.Request_CreateNetwork{Interface: api.NetworkInterface_INET,
			Networks: []*api.Network{{Addr: "10.42.42.1", Gateway: "10.42.42.1", Mask: "255.255.255.0", IfAddr: "10.42.42.2"}}}, "interface"},
		{"two networks", &api.Request_CreateNetwork{Networks: []*api.Network{{}, {}}}, "networks"},
	}
	for _, tc := range cases {
		_, err := a.mgr.Create(ctx, tc.req)
		var e *api.Error
		if !errors.As(err, &e) || e.Code != api.Response_BAD_REQUEST || e.Field != tc.field {
			t.Errorf("%s: err %v, want BAD_REQUEST naming %q", tc.name, err, tc.field)
			continue
		}
		if links := linksIn(t, a); len(links) != 1 {
			t.Errorf("%s: links left in the sandbox: %v", tc.name, links)
		}
	}
	// After all the refusals a good request still works.
	ep, err := a.mgr.Create(ctx, vpnRequest("192.168.0.0", "255.255.255.0", "", "192.168.0.2", map[string]string{"node-a": "192.168.0.2"}))
	if err != nil {
		t.Fatal(err)
	}
	if ep.Kind() != api.EndpointUDPDatagram {
		t.Fatalf("endpoint %v", ep)
	}
	hosts, _ := os.ReadFile(a.sb.HostsPath())
	if want := "192.168.0.2\tnode-a"; !containsLine(string(hosts), want) {
		t.Fatalf("hosts file lacks %q:\n%s", want, hosts)
	}
	if _, err := a.mgr.Create(ctx, vpnRequest("192.168.0.0", "255.255.255.0", "", "192.168.0.2", nil)); err == nil {
		t.Fatal("a second CreateNetwork succeeded")
	}
}

func containsLine(s, line string) bool {
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		if s[:i] == line {
			return true
		}
		if i == len(s) {
			break
		}
		s = s[i+1:]
	}
	return false
}

// TestTwoFullCyclesLeaveNothing brings a VPN up and down twice in a row in
// this process: afterwards no goroutine (goleak in TestMain), fd, TAP or
// namespace may remain.
func TestTwoFullCyclesLeaveNothing(t *testing.T) {
	privtest.RequireRoot(t)
	before := privtest.OpenFDs(t)
	var names []string
	for cycle := range 2 {
		a := newActivity(t)
		names = append(names, a.sb.Name())
		ep, err := a.mgr.Create(context.Background(), vpnRequest("192.168.0.0", "255.255.255.0", "192.168.0.1", "192.168.0.2", nil))
		if err != nil {
			t.Fatalf("cycle %d: %v", cycle, err)
		}
		if links := linksIn(t, a); len(links) != 2 {
			t.Fatalf("cycle %d: links %v, want lo and vpn0", cycle, links)
		}
		// A datagram from the ExeUnit reaches the pump (and is dropped as
		// short): the endpoint is live.
		addr, _ := net.ResolveUDPAddr("udp4", ep.Addr())
		a.exeunit.WriteToUDP([]byte{1, 2, 3}, addr)
		deadline := time.Now().Add(5 * time.Second)
		for a.mgr.Stats().Ingress.Drops["short"] != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("cycle %d: the frame never reached the pump: %+v", cycle, a.mgr.Stats())
			}
			time.Sleep(10 * time.Millisecond)
		}
		a.close(t)
	}
	if after := privtest.OpenFDs(t); after != before {
		t.Fatalf("%d fds open before, %d after two cycles", before, after)
	}
	for _, n := range names {
		if _, err := os.Stat("/run/netns/" + n); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("netns %s left behind", n)
		}
	}
}
