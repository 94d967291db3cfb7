package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/payload"
	"github.com/gvpn/gvpn/test/privtest"
)

// vpnNode is one provider node: an ExeUnit stand-in driving a real
// gvpn-runtime, attached to the hub.
type vpnNode struct {
	name string
	ip   string
	eu   *golemnet.ExeUnit
	hub  *golemnet.Node
	dir  string
	// payload is this test binary, as the payload sees it: copied into
	// the node's default volume (the host's /tmp, where go test keeps
	// it, is not visible in the sandbox).
	payload string
}

// twoNodes brings up node-a (192.168.0.2) and node-b (192.168.0.3) on
// 192.168.0.0/24 joined through the hub, with no gateway, as newer
// ExeUnits send it (test/contract checks both kinds of ExeUnit).
func twoNodes(t *testing.T, extraArgs ...string) (*golemnet.Hub, []*vpnNode) {
	t.Helper()
	return startNodes(t, true, extraArgs...)
}

// startNodes is twoNodes; named=false sends what stock SDKs send: no
// hostname to deploy, no hosts in CreateNetwork.
func startNodes(t *testing.T, named bool, extraArgs ...string) (*golemnet.Hub, []*vpnNode) {
	t.Helper()
	privtest.RequireRoot(t)
	ctx := privtest.Context(t, 60*time.Second)
	hub := quietHub(t)
	nodes := []*vpnNode{{name: "node-a", ip: "192.168.0.2"}, {name: "node-b", ip: "192.168.0.3"}}
	var hosts map[string]string
	if named {
		hosts = map[string]string{}
	}
	for _, n := range nodes {
		if named {
			hosts[n.name] = n.ip
		}
		hn, err := hub.AddNode(n.name, netip.MustParseAddr(n.ip))
		if err != nil {
			t.Fatal(err)
		}
		n.hub = hn
	}
	if err := hub.Start(); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		cfg, _ := exeunitConfig(t, n.name)
		if named {
			cfg.Hostname = n.name
		}
		cfg.VPNEndpoint = n.hub.EndpointURL()
		cfg.RuntimeArgs = append(cfg.RuntimeArgs, "--stats-interval", "200ms", "--debug-state-events")
		cfg.RuntimeArgs = append(cfg.RuntimeArgs, extraArgs...)
		n.dir = cfg.Workdir
		dep, err := golemnet.Deploy(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		n.payload = installPayload(t, cfg.Workdir, dep)
		eu, err := golemnet.Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		n.eu = eu
		t.Cleanup(func() {
			eu.Shutdown(context.Background())
			sandboxGone(t, cfg.Workdir)
		})
		ep, err := eu.CreateNetwork(ctx, golemnet.VPNNetwork{Addr: "192.168.0.0", Mask: "255.255.255.0", IfAddr: n.ip}, hosts)
		if err != nil {
			t.Fatal(err)
		}
		addr, err := golemnet.ParseUDPEndpoint(ep)
		if err != nil {
			t.Fatal(err)
		}
		n.hub.SetRuntimeEndpoint(addr)
	}
	return hub, nodes
}

// installPayload copies this test binary into the node's default volume
// and returns its path in the sandbox.
func installPayload(t *testing.T, workdir string, dep golemnet.DeployResult) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, err := golemnet.Install(workdir, dep, self, "gvt-payload")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// run runs a command on a node and fails the test unless it exits 0.
func (n *vpnNode) run(t *testing.T, ctx context.Context, bin string, args ...string) string {
	t.Helper()
	out, err := n.eu.Output(ctx, bin, args...)
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	return out
}

// stats returns the latest VPN counters the node's runtime reported (zero
// before the first report).
func (n *vpnNode) stats(t *testing.T) api.VPNStats {
	t.Helper()
	st, _ := n.eu.VPNStats()
	return st
}

// waitStats polls the node's counters until ok accepts them.
func (n *vpnNode) waitStats(t *testing.T, what string, ok func(api.VPNStats) bool) api.VPNStats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := n.stats(t)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: counters never showed %s: %+v", n.name, what, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTwoNodesTalkOverTheVPN: what the netns sandbox's VPN does beyond
// the contract every kind keeps (test/contract, which checks vpn0, the
// gateway's route, ping and TCP both ways by address): names from
// CreateNetwork's hosts, no IPv6, the MTU's exact boundary, UDP, and
// counters that add up after 8 MB.
func TestTwoNodesTalkOverTheVPN(t *testing.T) {
	_, nodes := twoNodes(t)
	a, b := nodes[0], nodes[1]
	ctx := privtest.Context(t, 90*time.Second)

	// No IPv6 on the VPN (below MTU 1280 the kernel drops it from the
	// link altogether): no link-local address, no ND chatter.
	if v6 := a.run(t, ctx, "/sbin/ip", "-6", "-o", "addr", "show", "dev", "vpn0"); strings.TrimSpace(v6) != "" {
		t.Fatalf("IPv6 on vpn0: %q", v6)
	}
	if out := b.run(t, ctx, "/bin/ping", "-c", "1", "-W", "2", "node-a"); !strings.Contains(out, "192.168.0.2") {
		t.Fatalf("ping node-a did not resolve to 192.168.0.2: %s", out)
	}

	// MTU boundary: 1192 bytes of ICMP data + 8 + 20 = 1220 passes with
	// DF; one byte more cannot leave the interface.
	a.run(t, ctx, "/bin/ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1192", "192.168.0.3")
	res, err := a.eu.Run(ctx, "/bin/ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1193", "192.168.0.3")
	if err != nil {
		t.Fatal(err)
	}
	if res.ReturnCode == 0 || !strings.Contains(string(res.Stdout)+string(res.Stderr), "1220") {
		t.Fatalf("1193-byte ping with DF: rc %d, %s %s; want a clean 'message too long, mtu=1220'", res.ReturnCode, res.Stdout, res.Stderr)
	}

	// HTTP: 8 MB served by node-a, fetched by node-b by hostname, checked
	// by hash.
	const size = 8 << 20
	httpFetch(t, ctx, a, b, "node-a", size)

	// UDP both ways.
	echo, err := b.eu.Spawn(ctx, "/usr/bin/env", payload.Env+"=udp-echo", b.payload, "0.0.0.0:9000")
	if err != nil {
		t.Fatal(err)
	}
	waitUDP(t, ctx, b, "9000")
	if out := a.run(t, ctx, "/usr/bin/env", payload.Env+"=udp-ping", a.payload, "node-b:9000", "200"); !strings.Contains(out, "echoed") {
		t.Fatalf("udp: %s", out)
	}
	b.eu.KillProcess(ctx, echo.Pid, 15)

	// Lower bounds that hold whatever TCP does with its ACKs: a sent the
	// whole body in frames of at most the MTU, and received at least the
	// 200 UDP echoes.
	st := a.waitStats(t, "traffic", func(s api.VPNStats) bool {
		return s.Egress.Bytes > size && s.Egress.Frames > size/1220 && s.Ingress.Frames >= 200
	})
	if !st.Up || st.Address != "192.168.0.2" {
		t.Fatalf("stats %+v", st)
	}
	for _, n := range nodes {
		if err := n.eu.ProtocolError(); err != nil {
			t.Fatal(err)
		}
	}
}

// httpFetch serves size bytes from srv (the payload's http-serve mode on
// port 8080) and has cli fetch them with curl from host, checked by hash.
func httpFetch(t *testing.T, ctx context.Context, srv, cli *vpnNode, host string, size int) {
	t.Helper()
	p, err := srv.eu.Spawn(ctx, "/usr/bin/env", payload.Env+"=http-serve", srv.payload, "0.0.0.0:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.eu.KillProcess(ctx, p.Pid, 15)
	waitListening(t, ctx, srv, "8080")
	out := cli.run(t, ctx, "/bin/sh", "-c", fmt.Sprintf("curl -sS --fail --max-time 30 http://%s:8080/bytes/%d | sha256sum", host, size))
	if got := strings.Fields(out)[0]; got != payload.Hash(size) {
		t.Fatalf("HTTP body hash %s, want %s", got, payload.Hash(size))
	}
}

// waitListening waits until a TCP port listens on the node.
func waitListening(t *testing.T, ctx context.Context, n *vpnNode, port string) {
	t.Helper()
	n.run(t, ctx, "/bin/sh", "-c", "for i in $(seq 100); do ss -ltn | grep -q ':"+port+" ' && exit 0; sleep 0.05; done; exit 1")
}

func waitUDP(t *testing.T, ctx context.Context, n *vpnNode, port string) {
	t.Helper()
	n.run(t, ctx, "/bin/sh", "-c", "for i in $(seq 100); do ss -lun | grep -q ':"+port+" ' && exit 0; sleep 0.05; done; exit 1")
}

func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// TestRuntimesWiredByHand joins two runtimes with no ExeUnit and no hub:
// each one's pinned data endpoint is the other's --vpn-endpoint. It also
// asks one for its counters with SIGUSR1.
func TestRuntimesWiredByHand(t *testing.T) {
	privtest.RequireRoot(t)
	ctx := privtest.Context(t, 60*time.Second)
	addrA, addrB := freeUDPPort(t), freeUDPPort(t)
	var eus [2]*golemnet.ExeUnit
	var workdirA string
	for i, n := range []struct{ name, ip, local, peer string }{
		{"node-a", "10.99.0.1", addrA, addrB},
		{"node-b", "10.99.0.2", addrB, addrA},
	} {
		cfg, _ := exeunitConfig(t, n.name)
		if i == 0 {
			workdirA = cfg.Workdir
		}
		cfg.VPNEndpoint = "udp://" + n.peer
		cfg.RuntimeArgs = append(cfg.RuntimeArgs, "--debug-local-endpoint", n.local)
		golemnet.Deploy(ctx, cfg)
		eu, err := golemnet.Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { eu.Shutdown(context.Background()) })
		ep, err := eu.CreateNetwork(ctx, golemnet.VPNNetwork{Addr: "10.99.0.0", Mask: "255.255.255.0", IfAddr: n.ip}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ep.Addr() != n.local {
			t.Fatalf("%s replied endpoint %s, want the pinned %s", n.name, ep.Addr(), n.local)
		}
		eus[i] = eu
	}
	a := &vpnNode{name: "node-a", eu: eus[0]}
	a.run(t, ctx, "/bin/ping", "-c", "3", "-i", "0.2", "-W", "2", "10.99.0.2")

	syscall.Kill(eus[0].Pid(), syscall.SIGUSR1)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(golemnet.RuntimeLog(workdirA), "counters (SIGUSR1)") {
		if time.Now().After(deadline) {
			t.Fatal("no counters logged on SIGUSR1")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// In the log file, with the kernel's drop counters beside gvpn's.
	if line := lineWith(golemnet.RuntimeLog(workdirA), "counters (SIGUSR1)"); !strings.Contains(line, "egress_frames=") ||
		strings.Contains(line, "egress_frames=0 ") || !strings.Contains(line, "egress_kernel_tap_tx_dropped=") ||
		!strings.Contains(line, "ingress_kernel_udp_rcvbuf_full=") {
		t.Fatalf("SIGUSR1 counters line: %s", line)
	}
}

func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// quietHub returns a hub that logs warnings only and closes with the test.
func quietHub(t *testing.T) *golemnet.Hub {
	quiet := logrus.New()
	quiet.SetOutput(os.Stderr)
	quiet.SetLevel(logrus.WarnLevel)
	hub := golemnet.NewHub(logrus.NewEntry(quiet))
	t.Cleanup(func() { hub.Close() })
	return hub
}

// A provider that runs the ExeUnit in a one-CPU cgroup gives the runtime
// GOMAXPROCS=1 (Go derives it from the cgroup's CPU limit): the sandbox,
// the pump and the processes must work there too. The sandbox's starter
// once respawned itself on the main thread forever in exactly this case.
func TestOnOneCPU(t *testing.T) {
	t.Setenv("GOMAXPROCS", "1") // the runtimes' environment, not this process's
	_, nodes := twoNodes(t)
	a, b := nodes[0], nodes[1]
	ctx := privtest.Context(t, 60*time.Second)
	a.run(t, ctx, "/bin/ping", "-c", "3", "-i", "0.2", "-W", "2", "192.168.0.3")
	b.run(t, ctx, "/bin/ping", "-c", "3", "-i", "0.2", "-W", "2", "192.168.0.2")
}
