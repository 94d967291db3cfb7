package contract

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// sandboxPrefix starts the name of every sandbox (and of every namespace
// the test makes), so that leftovers are recognisable.
const sandboxPrefix = "gvt-ct-"

// node is one provider node: an ExeUnit stand-in driving a gvpn-runtime of
// one kind, attached to the hub.
type node struct {
	name, ip string
	// gateway is what this node's ExeUnit puts in CreateNetwork: releases
	// up to 0.17.6 the network's first host, newer ones "".
	gateway string
	workdir string
	// sandbox is the runtime's name for the activity's sandbox: its
	// network namespace, its /run/gvpn directory, its cgroup.
	sandbox string
	// payloadNS is the namespace the test made for an agent's payload.
	payloadNS string
	hub       *golemnet.Node
	eu        *golemnet.ExeUnit
	deployed  golemnet.DeployResult
	logs      *golemnet.TailBuffer
}

// The network of the suite, as yapapi sends it: the network's address,
// the default mask, each node's nodeIp.
const (
	netAddr = "192.168.21.0"
	netMask = "255.255.255.0"
)

// twoNodes deploys and starts node-a and node-b of kind k, as the ExeUnit
// does, joins them through the hub with the CreateNetwork each one's
// ExeUnit sends (node-a's an older release's, with a gateway; node-b's a
// newer one's, without), and shuts them down when t ends.
func twoNodes(t *testing.T, k kind) []*node {
	t.Helper()
	launchNode := k.prepare(t)
	quiet := logrus.New()
	quiet.SetOutput(os.Stderr)
	quiet.SetLevel(logrus.WarnLevel)
	hub := golemnet.NewHub(logrus.NewEntry(quiet))
	t.Cleanup(func() { hub.Close() })
	nodes := []*node{
		{name: "node-a", ip: "192.168.21.2", gateway: "192.168.21.1"},
		{name: "node-b", ip: "192.168.21.3"},
	}
	for _, n := range nodes {
		hn, err := hub.AddNode(n.name, netip.MustParseAddr(n.ip))
		if err != nil {
			t.Fatal(err)
		}
		n.hub = hn
	}
	if err := hub.Start(); err != nil {
		t.Fatal(err)
	}
	ctx := privtest.Context(t, 60*time.Second)
	for _, n := range nodes {
		n.start(t, ctx, launchNode(t, n))
	}
	// Both at once: a VM's CreateNetwork waits for its guest to boot.
	errs := make(chan error, len(nodes))
	joinCtx := privtest.Context(t, 5*time.Minute)
	for _, n := range nodes {
		go func() { errs <- n.join(joinCtx) }()
	}
	for range nodes {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// start deploys the node and starts its runtime in service mode (which
// says Hello).
func (n *node) start(t *testing.T, ctx context.Context, l launch) {
	t.Helper()
	n.workdir = filepath.Join(t.TempDir(), n.name)
	n.sandbox = netns.NameFor(sandboxPrefix, n.workdir)
	n.logs = golemnet.NewTailBuffer(256 << 10)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stderr of %s's runtime:\n%s\nits log file:\n%s", n.name, n.logs.String(), golemnet.RuntimeLog(n.workdir))
		}
	})
	cfg := golemnet.ExeUnitConfig{
		Runtime:     runtimeBin,
		Workdir:     n.workdir,
		Hostname:    n.name,
		TaskPackage: l.taskPackage,
		RuntimeArgs: append([]string{"--sandbox-prefix", sandboxPrefix, "--log-level", "debug",
			"--stats-interval", "250ms", "--debug-state-events"}, l.args...),
		VPNEndpoint: n.hub.EndpointURL(),
		Stderr:      n.logs,
	}
	dep, err := golemnet.Deploy(ctx, cfg)
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	n.deployed = dep
	eu, err := golemnet.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("%s: start: %v", n.name, err)
	}
	n.eu = eu
	t.Cleanup(func() {
		eu.Shutdown(context.Background())
		n.checkGone(t)
	})
}

// join sends the node's CreateNetwork, with no hosts (as stock SDKs
// deploy), and points the hub at the endpoint it answers.
func (n *node) join(ctx context.Context) error {
	ep, err := n.eu.CreateNetwork(ctx, golemnet.VPNNetwork{Addr: netAddr, Mask: netMask, Gateway: n.gateway, IfAddr: n.ip}, nil)
	if err != nil {
		return errors.New(n.name + ": CreateNetwork: " + err.Error())
	}
	addr, err := golemnet.ParseUDPEndpoint(ep)
	if err != nil {
		return err
	}
	n.hub.SetRuntimeEndpoint(addr)
	return nil
}

// sh runs a busybox shell script in the node's payload and fails the test
// unless it exits 0.
func (n *node) sh(t *testing.T, ctx context.Context, script string) string {
	t.Helper()
	return n.run(t, ctx, busybox, "sh", "-c", script)
}

func (n *node) run(t *testing.T, ctx context.Context, bin string, args ...string) string {
	t.Helper()
	out, err := n.eu.Output(ctx, bin, args...)
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	return out
}

// stats returns the latest VPN counters the node's runtime reported (zero
// before the first report).
func (n *node) stats(t *testing.T) api.VPNStats {
	t.Helper()
	st, _ := n.eu.VPNStats()
	return st
}

// checkGone checks that nothing of the node is left on the host after its
// Shutdown: no namespace, socket directory, mount or cgroup of its
// sandbox, no process that names it (QEMU names its socket directory), and
// for an agent no process and no vpn0 in the payload's namespace.
func (n *node) checkGone(t *testing.T) {
	t.Helper()
	var left []string
	deadline := time.Now().Add(15 * time.Second)
	for {
		left = n.leftovers()
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, l := range left {
		t.Errorf("%s: left after Shutdown: %s", n.name, l)
	}
}

func (n *node) leftovers() []string {
	var left []string
	for _, p := range []string{filepath.Join("/run/netns", n.sandbox), filepath.Join("/run/gvpn", n.sandbox)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			left = append(left, p)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, n.sandbox) || strings.Contains(l, " "+n.workdir+"/") {
			left = append(left, "mount "+l)
		}
	}
	if limits.Exists(n.sandbox) {
		left = append(left, "the cgroup of "+n.sandbox)
	}
	for _, pid := range processesNaming(n.sandbox, n.workdir) {
		left = append(left, "process "+strconv.Itoa(pid))
	}
	if n.payloadNS != "" {
		if out, _ := exec.Command("ip", "netns", "pids", n.payloadNS).Output(); len(bytes.TrimSpace(out)) > 0 {
			left = append(left, "processes in "+n.payloadNS+": "+string(out))
		}
		if out, _ := exec.Command("ip", "-n", n.payloadNS, "-o", "link", "show", "vpn0").Output(); len(out) > 0 {
			left = append(left, "vpn0 in "+n.payloadNS)
		}
	}
	return left
}

// processesNaming returns the host processes whose command line contains
// one of names.
func processesNaming(names ...string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, name := range names {
			if bytes.Contains(cmd, []byte(name)) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}
