package integration

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// TestAsYagnaRunsIt runs two runtimes exactly as a real provider does:
// stderr on /dev/null (the provider nulls the ExeUnit's, which the runtime
// inherits), `deploy --` with no --hostname, `start` with its arguments
// right after it and no "--", a CreateNetwork without hosts that carries two
// networks at once, in different orders on the two nodes, with the gateway
// of yagna v0.17.6 on one node (the network's first host, which is node-a's
// own address on one network) and of master on the other (""). Both
// networks must carry ping both ways; the log file must tell the story; and
// the host's /etc/hosts must not change by one byte.
func TestAsYagnaRunsIt(t *testing.T) {
	privtest.RequireRoot(t)
	ctx := privtest.Context(t, 90*time.Second)
	hostsBefore, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	hub := quietHub(t)

	type node struct {
		name     string
		ips      [2]string // on 192.168.0.0/24 and on 10.20.0.0/16
		nets     []golemnet.VPNNetwork
		hub      *golemnet.Node
		workdir  string
		exeunit  *golemnet.ExeUnit
		vpnNodes *vpnNode
	}
	nodes := []*node{
		{name: "node-a", ips: [2]string{"192.168.0.1", "10.20.0.2"}, nets: []golemnet.VPNNetwork{
			// v0.17.6: the gateway is the first host, here node-a itself.
			{Addr: "192.168.0.0", Mask: "255.255.255.0", Gateway: "192.168.0.1", IfAddr: "192.168.0.1"},
			{Addr: "10.20.0.0", Mask: "255.255.0.0", Gateway: "10.20.0.1", IfAddr: "10.20.0.2"},
		}},
		{name: "node-b", ips: [2]string{"192.168.0.3", "10.20.0.3"}, nets: []golemnet.VPNNetwork{
			// master: no gateway; the other order.
			{Addr: "10.20.0.0", Mask: "255.255.0.0", Gateway: "", IfAddr: "10.20.0.3"},
			{Addr: "192.168.0.0", Mask: "255.255.255.0", Gateway: "", IfAddr: "192.168.0.3"},
		}},
	}
	for _, n := range nodes {
		if n.hub, err = hub.AddNode(n.name, netip.MustParseAddr(n.ips[0])); err != nil {
			t.Fatal(err)
		}
		// The Deploy's nodes map of the second network.
		if err := hub.AddAddress(n.hub, netip.MustParseAddr(n.ips[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := hub.Start(); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		n.workdir = filepath.Join(t.TempDir(), n.name)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("log file of %s:\n%s", n.name, golemnet.RuntimeLog(n.workdir))
			}
		})
		cfg := golemnet.ExeUnitConfig{
			Runtime:     runtimeBin,
			Workdir:     n.workdir,
			RuntimeArgs: []string{"--sandbox-prefix", testPrefix}, // a --runtime-arg
			VPNEndpoint: n.hub.EndpointURL(),
			StartArgs:   []string{"start-entrypoint"},
			Stderr:      nil, // /dev/null
		}
		if _, err := golemnet.Deploy(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		if n.exeunit, err = golemnet.Start(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		eu := n.exeunit
		t.Cleanup(func() { eu.Shutdown(context.Background()) })
		ep, err := n.exeunit.CreateNetworks(ctx, n.nets, nil)
		if err != nil {
			t.Fatalf("%s: CreateNetwork: %v", n.name, err)
		}
		ap, err := golemnet.ParseUDPEndpoint(ep)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.hub.SetRuntimeEndpoint(ap); err != nil {
			t.Fatal(err)
		}
		n.vpnNodes = &vpnNode{name: n.name, eu: n.exeunit}
	}

	// Ping over both networks, both ways.
	for i, n := range nodes {
		peer := nodes[1-i]
		for _, ip := range peer.ips {
			n.vpnNodes.run(t, ctx, "/bin/ping", "-c", "2", "-i", "0.2", "-W", "2", ip)
		}
	}

	for _, n := range nodes {
		if err := n.exeunit.Shutdown(ctx); err != nil {
			t.Errorf("%s: Shutdown: %v", n.name, err)
		}
		sandboxGone(t, n.workdir)
		log := golemnet.RuntimeLog(n.workdir)
		for _, want := range []string{"CreateNetwork done", "networks=2", "final VPN counters", "teardown complete"} {
			if !strings.Contains(log, want) {
				t.Errorf("%s: the log file lacks %q", n.name, want)
			}
		}
	}
	if log := golemnet.RuntimeLog(nodes[0].workdir); !strings.Contains(log, "is this node's own address: no gateway route") {
		t.Errorf("node-a: the ignored v0.17.6 gateway is not logged")
	}
	if hostsAfter, _ := os.ReadFile("/etc/hosts"); !bytes.Equal(hostsBefore, hostsAfter) {
		t.Errorf("the host's /etc/hosts changed:\nbefore:\n%s\nafter:\n%s", hostsBefore, hostsAfter)
	}
}

// TestSelfTestLeavesNothing: the provider runs `test` at every start; it
// must leave no namespace and no directory of its own in /run.
func TestSelfTestLeavesNothing(t *testing.T) {
	privtest.RequireRoot(t)
	const prefix = "gvt-it9st-"
	stdout, stderr, code := runCLI(t, "--sandbox-prefix", prefix, "test")
	if code != 0 || stdout != "" || !strings.Contains(stderr, "checks passed") {
		t.Fatalf("test: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	for _, pattern := range []string{"/run/netns/" + prefix + "*", "/run/gvpn/" + prefix + "*", "/run/*" + prefix + "*"} {
		if left, _ := filepath.Glob(pattern); len(left) > 0 {
			t.Errorf("left in /run after test: %v", left)
		}
	}
}

// FileCapabilities are the capabilities docs/provider.md tells operators to
// give gvpn-runtime when the provider does not run as root.
const FileCapabilities = "cap_net_admin,cap_sys_admin,cap_sys_chroot,cap_dac_override+ep"

// TestFileCapabilitiesSuffice runs a copy of the runtime as an
// unprivileged user (nobody) with only FileCapabilities, the whole way a
// provider would: test, deploy, start, CreateNetwork, a payload pinging its
// own VPN address, Shutdown.
func TestFileCapabilitiesSuffice(t *testing.T) {
	privtest.RequireRoot(t)
	setcap, err := exec.LookPath("setcap")
	if err != nil {
		t.Skip("setcap is not installed (make deps installs libcap2-bin)")
	}
	ctx := privtest.Context(t, 60*time.Second)
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // nobody must reach the binary
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "gvpn-runtime")
	b, err := os.ReadFile(runtimeBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(setcap, FileCapabilities, bin).CombinedOutput(); err != nil {
		t.Fatalf("setcap: %v %s", err, out)
	}
	const nobody = 65534
	workdir := filepath.Join(dir, "activity")
	if err := os.Mkdir(workdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(workdir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	cfg := golemnet.ExeUnitConfig{
		Runtime:     bin,
		Workdir:     workdir,
		RuntimeArgs: []string{"--sandbox-prefix", testPrefix},
		SysProcAttr: &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}},
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log file:\n%s", golemnet.RuntimeLog(workdir))
		}
	})
	var testOut bytes.Buffer
	tc := cfg
	tc.Stderr = &testOut
	if err := golemnet.SelfTest(ctx, tc); err != nil {
		t.Fatalf("test as nobody with %s: %v\n%s", FileCapabilities, err, testOut.String())
	}
	if _, err := golemnet.Deploy(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	exeunit, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer exeunit.Close()
	cfg.VPNEndpoint = "udp://" + exeunit.LocalAddr().String()
	eu, err := golemnet.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eu.Shutdown(context.Background()) })
	if _, err := eu.CreateNetwork(ctx, golemnet.VPNNetwork{Addr: "10.77.0.0", Mask: "255.255.255.0", IfAddr: "10.77.0.2"}, nil); err != nil {
		t.Fatalf("CreateNetwork as nobody: %v", err)
	}
	n := &vpnNode{name: "nobody", eu: eu}
	n.run(t, ctx, "/bin/ping", "-c", "1", "-W", "2", "10.77.0.2")
	if err := eu.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	sandboxGone(t, workdir)
}
