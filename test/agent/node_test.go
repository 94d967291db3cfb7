package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// logWriter collects a process's stderr for the test log on failure.
type logWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// payloadNS is a network namespace made by the test to stand for a
// payload VM or container, with its own hosts file that `ip netns exec`
// bind-mounts over /etc/hosts (/etc/netns/NAME/hosts).
type payloadNS struct {
	name  string
	hosts string
}

func newPayloadNS(t *testing.T) payloadNS {
	t.Helper()
	name, hosts := privtest.NewNetnsWithHosts(t, nsPrefix)
	return payloadNS{name: name, hosts: hosts}
}

// agentCommand is the --agent-command that starts gvpn-agent inside ns.
// The agent dials GVPN_BRIDGE unless extra says otherwise.
func (ns payloadNS) agentCommand(extra ...string) string {
	return strings.Join(append([]string{"exec ip netns exec", ns.name, agentBin,
		"--hosts-file", ns.hosts, "--log-level debug"}, extra...), " ")
}

// node is one provider node: an ExeUnit stand-in driving a gvpn-runtime in
// agent mode, whose payload is gvpn-agent in its own namespace.
type node struct {
	name, ip string
	ns       payloadNS
	eu       *golemnet.ExeUnit
	hub      *golemnet.Node
	workdir  string
	logs     *logWriter
	// bridgeDir holds the runtime's sockets: /run/gvpn/<sandbox name>
	// unless the node was given its own --bridge.
	bridgeDir string
}

type nodeOpts struct {
	// runtimeBridge, when set, is the runtime's --bridge address; agentArgs
	// are added to the agent command (e.g. its own --bridge, through a
	// proxy).
	runtimeBridge string
	agentArgs     []string
	// runtimeArgs are added to the runtime's flags.
	runtimeArgs []string
}

// twoNodes brings up node-a (192.168.7.2) and node-b (192.168.7.3) on
// 192.168.7.0/24 through the hub, each with its own payload namespace.
func twoNodes(t *testing.T, optsA nodeOpts) (*golemnet.Hub, []*node) {
	t.Helper()
	privtest.RequireRoot(t)
	quiet := logrus.New()
	quiet.SetOutput(os.Stderr)
	quiet.SetLevel(logrus.WarnLevel)
	hub := golemnet.NewHub(logrus.NewEntry(quiet))
	t.Cleanup(func() { hub.Close() })
	nodes := []*node{{name: "node-a", ip: "192.168.7.2"}, {name: "node-b", ip: "192.168.7.3"}}
	hosts := map[string]string{}
	for _, n := range nodes {
		hosts[n.name] = n.ip
		hn, err := hub.AddNode(n.name, netip.MustParseAddr(n.ip))
		if err != nil {
			t.Fatal(err)
		}
		n.hub = hn
	}
	if err := hub.Start(); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		var o nodeOpts
		if i == 0 {
			o = optsA
		}
		startNode(t, n, o)
		ep, err := n.eu.CreateNetwork(privtest.Context(t, 30*time.Second), golemnet.VPNNetwork{
			Addr: "192.168.7.0", Mask: "255.255.255.0", IfAddr: n.ip}, hosts)
		if err != nil {
			t.Fatalf("%s: CreateNetwork: %v", n.name, err)
		}
		addr, err := golemnet.ParseUDPEndpoint(ep)
		if err != nil {
			t.Fatal(err)
		}
		n.hub.SetRuntimeEndpoint(addr)
	}
	return hub, nodes
}

// startNode deploys and starts the node's runtime in agent mode, with the
// hub's endpoint for it when it has one.
func startNode(t *testing.T, n *node, o nodeOpts) {
	t.Helper()
	n.ns = newPayloadNS(t)
	n.logs = &logWriter{}
	n.workdir = filepath.Join(t.TempDir(), n.name)
	logs := n.logs
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stderr of %s's runtime (and its agent):\n%s", n.name, logs.String())
		}
	})
	args := []string{"--sandbox-prefix", nsPrefix, "--log-level", "debug", "--stats-interval", "200ms", "--debug-state-events",
		"--sandbox", "agent", "--agent-timeout", "20s",
		"--agent-command", n.ns.agentCommand(o.agentArgs...)}
	args = append(args, o.runtimeArgs...)
	n.bridgeDir = filepath.Join("/run/gvpn", netns.NameFor(nsPrefix, n.workdir))
	if o.runtimeBridge != "" {
		args = append(args, "--bridge", o.runtimeBridge)
		n.bridgeDir = ""
	}
	cfg := golemnet.ExeUnitConfig{
		Runtime:     runtimeBin,
		Workdir:     n.workdir,
		Hostname:    n.name,
		RuntimeArgs: args,
		Stderr:      logs,
	}
	if n.hub != nil {
		cfg.VPNEndpoint = n.hub.EndpointURL()
	}
	ctx := privtest.Context(t, 60*time.Second)
	if _, err := golemnet.Deploy(ctx, cfg); err != nil {
		t.Fatal(err)
	}
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

// run runs a command in the node's payload and fails the test unless it
// exits 0.
func (n *node) run(t *testing.T, ctx context.Context, bin string, args ...string) string {
	t.Helper()
	out, err := n.eu.Output(ctx, bin, args...)
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	return out
}

func (n *node) sh(t *testing.T, ctx context.Context, script string) string {
	t.Helper()
	return n.run(t, ctx, "/bin/sh", "-c", script)
}

// stats returns the latest VPN counters the node's runtime reported (zero
// before the first report).
func (n *node) stats(t *testing.T) api.VPNStats {
	t.Helper()
	st, _ := n.eu.VPNStats()
	return st
}

// agentPIDs lists the gvpn-agent processes in the node's namespace.
func (n *node) agentPIDs(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", n.ns.name).Output()
	if err != nil {
		return nil
	}
	var pids []string
	for _, pid := range strings.Fields(string(out)) {
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		if strings.TrimSpace(string(comm)) == "gvpn-agent" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// checkGone checks that after Shutdown nothing of the payload is left: no
// process in its namespace, no interface but lo, no socket.
func (n *node) checkGone(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("ip", "netns", "pids", n.ns.name).Output()
		if strings.TrimSpace(string(out)) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: processes left in %s after Shutdown: %s", n.name, n.ns.name, out)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := exec.Command("ip", "-n", n.ns.name, "-o", "link", "show").CombinedOutput(); err != nil {
		t.Errorf("%s: ip link: %v %s", n.name, err, out)
	} else if strings.Contains(string(out), "vpn0") {
		t.Errorf("%s: vpn0 left after Shutdown:\n%s", n.name, out)
	}
	if n.bridgeDir != "" {
		if _, err := os.Stat(n.bridgeDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: socket directory %s left after Shutdown (%v)", n.name, n.bridgeDir, err)
		}
	}
}

// proxy sits between an agent and its runtime (one per socket: data and
// control) and can cut every connection through it, as a lost vsock or a
// restarted container network would.
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	cuts   int
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, listen, target string) *proxy {
	t.Helper()
	l, err := net.Listen("unix", listen)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		l.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("unix", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(in, out)
		go pipe(out, in)
	}
}

// cut closes every connection through the proxy and reports how many
// there were.
func (p *proxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	for c := range p.conns {
		c.Close()
	}
	p.cuts++
	return n
}

func (p *proxy) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func hostsHash(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return "unreadable: " + err.Error()
	}
	return fmt.Sprintf("%x", b)
}
