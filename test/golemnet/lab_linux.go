//go:build linux

package golemnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
)

// shutdownTimeout bounds the wait for a runtime's Shutdown reply at Close;
// the runtime is SIGKILLed after it either way, as the ExeUnit does.
const shutdownTimeout = 20 * time.Second

// Lab is a whole Golem VPN on one machine: N provider nodes, each a real
// gvpn-runtime started and spoken to exactly as yagna's ExeUnit does
// (`test` once, then per node `deploy --`, `--vpn-endpoint udp://… start`,
// Hello, CreateNetwork with every node in the hosts map), joined by a Hub
// playing the Golem Net.
//
// Nodes, their names and addresses do not change after NewLab; a node
// whose runtime died stays listed (Status says it is not alive). All
// methods are safe for concurrent use.
type Lab struct {
	cfg     LabConfig
	plan    labPlan
	log     *logrus.Entry
	hub     *Hub
	workdir string
	ownDir  bool // workdir was made by NewLab
	nodes   []*LabNode
	byName  map[string]*LabNode

	closeOnce sync.Once
	closeErr  error
}

// LabNode is one provider node of a lab.
type LabNode struct {
	// Name is the node's name and hostname.
	Name string
	// IP is the node's VPN address; MoreIPs its addresses on the lab's
	// further networks (LabConfig.MoreNets), in that order.
	IP      netip.Addr
	MoreIPs []netip.Addr
	// Workdir is the node's activity work directory.
	Workdir string
	// Netns is the name of the runtime's sandbox network namespace
	// (`ip netns exec NETNS …` enters it); empty for a VM node.
	Netns string
	// ExeUnit speaks to the node's runtime. Kill it to crash the node.
	ExeUnit *ExeUnit
	// Hub is the node's place in the hub: its ExeUnit socket, faults and
	// counters.
	Hub *Node
	// RuntimeEndpoint is the runtime's data endpoint from its
	// CreateNetwork reply.
	RuntimeEndpoint netip.AddrPort
	// VM says the payload runs in a QEMU guest (busybox tools, no access
	// to the host's files) rather than in a network namespace.
	VM bool
	// Image says the payload's root is LabConfig.TaskPackage: it has the
	// image's tools (busybox in the lab's images), not the host's.
	Image bool
	// Ready is how long the node took from start to the CreateNetwork
	// reply: for a VM node, its boot until gvpn-agent configured vpn0.
	Ready time.Duration

	deployed DeployResult
}

// NewLab brings a lab up: it validates cfg, starts the hub, runs the
// runtime's `test` once, then brings every node up in parallel. ctx bounds
// the bring-up only. On error everything already started is torn down and
// the error names the node and the step that failed.
func NewLab(ctx context.Context, cfg LabConfig) (*Lab, error) {
	plan, err := cfg.plan()
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(cfg.Runtime); err != nil {
		return nil, fmt.Errorf("runtime binary: %w", err)
	} else if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("runtime binary %s is not an executable file", cfg.Runtime)
	}
	log := cfg.Log
	if log == nil {
		l := logrus.New()
		l.Out = io.Discard
		log = logrus.NewEntry(l)
	}
	l := &Lab{cfg: cfg, plan: plan, log: log, byName: make(map[string]*LabNode)}
	if cfg.Workdir == "" {
		if l.workdir, err = os.MkdirTemp("", "gvpn-lab-"); err != nil {
			return nil, err
		}
		l.ownDir = true
	} else {
		if l.workdir, err = filepath.Abs(cfg.Workdir); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(l.workdir, 0o755); err != nil {
			return nil, err
		}
	}
	l.hub = NewHub(log.WithField("component", "hub"))
	if err := l.up(ctx); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = fmt.Errorf("%w (and tearing down: %v)", err, cerr)
		}
		return nil, err
	}
	return l, nil
}

func (l *Lab) progress(node, step string) {
	if l.cfg.Progress != nil {
		l.cfg.Progress(node, step)
	}
}

func (l *Lab) up(ctx context.Context) error {
	for i, name := range l.plan.names {
		hn, err := l.hub.AddNode(name, l.plan.ips[i])
		if err != nil {
			return err
		}
		var more []netip.Addr
		for _, m := range l.plan.more {
			if err := l.hub.AddAddress(hn, m.ips[i]); err != nil {
				return err
			}
			more = append(more, m.ips[i])
		}
		wd := filepath.Join(l.workdir, name)
		n := &LabNode{
			Name:    name,
			IP:      l.plan.ips[i],
			MoreIPs: more,
			Workdir: wd,
			Netns:   netns.NameFor(l.plan.prefix, wd),
			Hub:     hn,
			VM:      i >= len(l.plan.names)-l.cfg.VMNodes,
			Image:   l.cfg.TaskPackage != "",
		}
		if n.VM {
			n.Netns = "" // the payload's network is the guest's
		}
		l.nodes = append(l.nodes, n)
		l.byName[name] = n
	}
	if err := l.hub.Start(); err != nil {
		return err
	}

	// The provider runs `test` once at startup, before any activity.
	l.progress("", "test")
	// The provider reads `test`'s output (it shows it when the test fails).
	selfLogs := NewTailBuffer(8 << 10)
	tc := l.exeUnitConfig(l.workdir)
	tc.Stderr = selfLogs
	if l.cfg.LogDir != "" {
		if f, err := os.Create(filepath.Join(l.cfg.LogDir, "test.log")); err == nil {
			defer f.Close()
			tc.Stderr = io.MultiWriter(selfLogs, f)
		}
	}
	if err := SelfTest(ctx, tc); err != nil {
		return fmt.Errorf("runtime self-test (`%s test`): %w%s", l.cfg.Runtime, err, selfLogs.LastLines(3))
	}

	var hosts map[string]string
	if !l.cfg.NoHosts {
		hosts = make(map[string]string, len(l.nodes))
		for _, n := range l.nodes {
			hosts[n.Name] = n.IP.String()
		}
	}
	errs := make([]error, len(l.nodes))
	var wg sync.WaitGroup
	for i, n := range l.nodes {
		wg.Go(func() { errs[i] = l.startNode(ctx, n, i, hosts) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err // the first node's failure in node order
		}
	}
	l.progress("", "ready")
	return nil
}

// exeUnitConfig is how the lab's ExeUnit stand-in runs a runtime: stderr
// on /dev/null as yagna's provider does (the runtime logs to its file),
// the lab's sandbox prefix, and the VPN counters as state events, which
// the lab's status reads.
func (l *Lab) exeUnitConfig(workdir string) ExeUnitConfig {
	args := append([]string{"--sandbox-prefix", l.plan.prefix, "--debug-state-events"}, l.cfg.RuntimeArgs...)
	cfg := ExeUnitConfig{Runtime: l.cfg.Runtime, Workdir: workdir, RuntimeArgs: args, TaskPackage: l.cfg.TaskPackage}
	if l.cfg.OwnProcessGroups {
		cfg.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	return cfg
}

// startNode plays the ExeUnit for one activity: deploy, start, Hello,
// CreateNetwork; then points the hub at the runtime's endpoint.
func (l *Lab) startNode(ctx context.Context, n *LabNode, index int, hosts map[string]string) error {
	fail := func(step string, err error) error {
		return fmt.Errorf("node %s: %s: %w%s", n.Name, step, err, n.logTail().LastLines(3))
	}
	cfg := l.exeUnitConfig(n.Workdir)
	cfg.Hostname = n.Name
	if n.VM {
		// A guest boots under TCG on a loaded machine: give it time.
		cfg.RuntimeArgs = append(append(cfg.RuntimeArgs, "--sandbox", "vm", "--agent-timeout", "120s"), l.cfg.VMArgs...)
	}
	cfg.VPNEndpoint = n.Hub.EndpointURL()

	if err := os.MkdirAll(n.Workdir, 0o755); err != nil {
		return fail("workdir", err)
	}
	if l.cfg.LogDir != "" {
		link := filepath.Join(l.cfg.LogDir, n.Name+".log")
		os.Remove(link)
		if err := os.Symlink(api.LogPath(n.Workdir), link); err != nil {
			return fail("log link", err)
		}
	}
	l.progress(n.Name, "deploy")
	dep, err := Deploy(ctx, cfg)
	if err != nil {
		return fail("deploy", err)
	}
	n.deployed = dep
	l.progress(n.Name, "start")
	started := time.Now()
	eu, err := Start(ctx, cfg)
	if err != nil {
		return fail("start", err)
	}
	n.ExeUnit = eu
	l.progress(n.Name, "CreateNetwork")
	ep, err := eu.CreateNetworks(ctx, l.vpnNetworks(index), hosts)
	if err != nil {
		return fail("CreateNetwork", err)
	}
	ap, err := ParseUDPEndpoint(ep)
	if err != nil {
		return fail("CreateNetwork reply", err)
	}
	if err := n.Hub.SetRuntimeEndpoint(ap); err != nil {
		return fail("CreateNetwork reply", err)
	}
	n.RuntimeEndpoint = ap
	n.Ready = time.Since(started)
	l.log.WithFields(logrus.Fields{"node": n.Name, "ip": n.IP, "netns": n.Netns,
		"pid": eu.Pid(), "endpoint": ap}).Info("lab: node up")
	l.progress(n.Name, "up")
	return nil
}

// vpnNetworks are node i's Deploy net entries as the ExeUnit passes them:
// the network address (not the node's), the dotted mask, the node's own
// address, the gateway of the lab's ExeUnit version; with several
// networks, in an order that differs from node to node, as the ExeUnit's
// hash map gives them.
func (l *Lab) vpnNetworks(i int) []VPNNetwork {
	entry := func(pfx netip.Prefix, mask string, ip netip.Addr) VPNNetwork {
		v := VPNNetwork{Addr: pfx.Addr().String(), Mask: mask, IfAddr: ip.String()}
		if l.cfg.Gateway == GatewayFirstHost {
			v.Gateway = pfx.Addr().Next().String()
		}
		return v
	}
	nets := []VPNNetwork{entry(l.plan.net, l.plan.mask, l.plan.ips[i])}
	for _, m := range l.plan.more {
		nets = append(nets, entry(m.net, m.mask, m.ips[i]))
	}
	k := i % len(nets)
	return append(nets[k:], nets[:k]...)
}

// Net returns the lab's VPN.
func (l *Lab) Net() netip.Prefix { return l.plan.net }

// SandboxPrefix returns the prefix of the nodes' network namespace names.
func (l *Lab) SandboxPrefix() string { return l.plan.prefix }

// Hub returns the hub that joins the nodes.
func (l *Lab) Hub() *Hub { return l.hub }

// Nodes returns the nodes in order.
func (l *Lab) Nodes() []*LabNode { return slices.Clone(l.nodes) }

// Node returns the node called name, or nil.
func (l *Lab) Node(name string) *LabNode { return l.byName[name] }

// Lookup returns the node called name, or an error wrapping ErrUnknownNode
// that lists the nodes there are.
func (l *Lab) Lookup(name string) (*LabNode, error) {
	if n := l.byName[name]; n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("%w %q (nodes: %s)", ErrUnknownNode, name, strings.Join(l.plan.names, ", "))
}

// Exec runs argv to its end in the node's sandbox through RunProcess, as
// an ExeUnit's Run command would, and returns its output and return code.
// argv[0] is looked up in PATH like execvp does.
func (l *Lab) Exec(ctx context.Context, node string, argv ...string) (Result, error) {
	p, err := l.Spawn(ctx, node, argv...)
	if err != nil {
		return Result{}, err
	}
	return p.Wait(ctx)
}

// Install copies the program src into the node's default volume, as a
// requestor uploads its program, and returns its path in the sandbox (the
// payload sees none of the host's /tmp, /root or /home).
func (l *Lab) Install(node, src, name string) (string, error) {
	n, err := l.Lookup(node)
	if err != nil {
		return "", err
	}
	return Install(n.Workdir, n.deployed, src, name)
}

// Volume returns where the node's default volume is: its directory on the
// host and its path in the sandbox (the only place, with /tmp, where a
// payload may write, e.g. a download to check from the host).
func (l *Lab) Volume(node string) (hostDir, path string, err error) {
	n, err := l.Lookup(node)
	if err != nil {
		return "", "", err
	}
	name, path, err := DefaultVolume(n.deployed)
	if err != nil {
		return "", "", err
	}
	return filepath.Join(n.Workdir, name), path, nil
}

// Spawn starts argv in the node's sandbox through RunProcess and returns
// once it runs (servers, long transfers).
func (l *Lab) Spawn(ctx context.Context, node string, argv ...string) (*Proc, error) {
	n, err := l.Lookup(node)
	if err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, errors.New("no command given")
	}
	if n.ExeUnit == nil {
		return nil, fmt.Errorf("node %s has no runtime", n.Name)
	}
	return n.ExeUnit.Spawn(ctx, argv[0], argv[1:]...)
}

// WaitListening waits until a TCP socket listens on port in the node's
// network namespace (IPv4 or IPv6, any address), polling the kernel's
// socket tables from inside the sandbox. Servers started with Spawn are
// ready when it returns nil.
func (l *Lab) WaitListening(ctx context.Context, node string, port uint16) error {
	for {
		// cat exits non-zero when IPv6 is off (no tcp6); its output counts.
		res, err := l.Exec(ctx, node, "cat", "/proc/net/tcp", "/proc/net/tcp6")
		if err != nil {
			return fmt.Errorf("node %s: waiting for a listener on port %d: %w", node, port, err)
		}
		if TCPListening(res.Stdout, port) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s: nothing listens on TCP port %d: %w", node, port, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// RuntimeStats returns the node's last VPN counters reported by its
// runtime (the "gvpn.vpn" RuntimeStatus state events) and how many such
// events arrived so far; events == 0 means none yet.
func (n *LabNode) RuntimeStats() (stats api.VPNStats, events int) {
	if n.ExeUnit == nil {
		return stats, 0
	}
	var last []byte
	for _, st := range n.ExeUnit.States() {
		if s := st.GetState(); s != nil && s.GetName() == api.VPNStateName {
			last = s.GetValue()
			events++
		}
	}
	if last != nil && json.Unmarshal(last, &stats) != nil {
		stats = api.VPNStats{}
	}
	return stats, events
}

// LogTail returns the end of the node's runtime log file.
func (n *LabNode) LogTail() string { return n.logTail().String() }

func (n *LabNode) logTail() *TailBuffer {
	t := NewTailBuffer(8 << 10)
	t.Write([]byte(RuntimeLog(n.Workdir)))
	return t
}

// NodeStatus is a snapshot of one node for status displays.
type NodeStatus struct {
	Name    string
	IP      netip.Addr
	Netns   string
	Workdir string
	// VM and Ready are the LabNode's.
	VM    bool
	Ready time.Duration
	// Pid is the runtime's process id; Alive is false once it exited.
	Pid   int
	Alive bool
	// Endpoint is the node's ExeUnit socket (what --vpn-endpoint names),
	// RuntimeEndpoint the runtime's side.
	Endpoint, RuntimeEndpoint netip.AddrPort
	Fault                     Fault
	// Hub are the hub's counters for the node.
	Hub NodeStats
	// Runtime are the runtime's last reported VPN counters; RuntimeEvents
	// says how many reports arrived (0: none yet).
	Runtime       api.VPNStats
	RuntimeEvents int
	// Payload is what the node's payload used, read from its cgroup and
	// disk (nil without a cgroup); Granted the limits the lab's runtime
	// arguments gave it.
	Payload *limits.Usage
	Granted limits.Limits
}

// Status returns a snapshot of every node, in order.
func (l *Lab) Status() []NodeStatus {
	hub := map[string]NodeStats{}
	for _, s := range l.hub.Stats() {
		hub[s.Name] = s
	}
	out := make([]NodeStatus, 0, len(l.nodes))
	for _, n := range l.nodes {
		s := NodeStatus{
			Name:            n.Name,
			IP:              n.IP,
			Netns:           n.Netns,
			Workdir:         n.Workdir,
			VM:              n.VM,
			Ready:           n.Ready,
			Endpoint:        n.Hub.Addr(),
			RuntimeEndpoint: n.RuntimeEndpoint,
			Fault:           n.Hub.Fault(),
			Hub:             hub[n.Name],
		}
		if n.ExeUnit != nil {
			s.Pid = n.ExeUnit.Pid()
			s.Alive = !n.ExeUnit.Exited()
		}
		s.Runtime, s.RuntimeEvents = n.RuntimeStats()
		s.Granted = limits.FromArgs(l.cfg.RuntimeArgs)
		if n.Netns != "" && limits.Exists(n.Netns) {
			if u, err := limits.UsageOf(n.Netns); err == nil {
				u.DiskBytes, _ = limits.DiskUsed(n.Workdir)
				s.Payload = &u
			}
		}
		out = append(out, s)
	}
	return out
}

// Close tears the lab down the way the ExeUnit ends activities: Shutdown
// to every runtime (in parallel), then SIGKILL; then the hub closes, and
// the sandboxes of runtimes that died without cleaning up (killed nodes)
// are removed. It returns an error if a sandbox could not be removed. It
// is idempotent; later calls return the first result.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.close() })
	return l.closeErr
}

func (l *Lab) close() error {
	l.progress("", "shutdown")
	var wg sync.WaitGroup
	for _, n := range l.nodes {
		if n.ExeUnit == nil {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			wasDead := n.ExeUnit.Exited()
			err := n.ExeUnit.Shutdown(ctx)
			if err != nil && !wasDead && !errors.Is(err, ErrRuntimeGone) {
				l.log.WithError(err).WithField("node", n.Name).Warn("lab: Shutdown failed; the runtime was killed")
			}
		})
	}
	wg.Wait()
	var errs []error
	if err := l.hub.Close(); err != nil {
		errs = append(errs, err)
	}
	// A runtime that was killed (or did not finish its teardown before the
	// SIGKILL) leaves its sandbox behind: remove it as the next runtime
	// for the same workdir would.
	for _, n := range l.nodes {
		if err := netns.Cleanup(l.plan.prefix, n.Workdir, l.log); err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
		}
	}
	if left, err := netns.List(l.plan.prefix); err == nil {
		for _, n := range l.nodes {
			if slices.Contains(left, n.Netns) {
				errs = append(errs, fmt.Errorf("node %s: sandbox %s is still there after teardown", n.Name, n.Netns))
			}
		}
	}
	// Keep the logs whose paths the user may have been given.
	if l.cfg.LogDir != "" {
		for _, n := range l.nodes {
			if err := keepLog(api.LogPath(n.Workdir), filepath.Join(l.cfg.LogDir, n.Name+".log")); err != nil {
				errs = append(errs, fmt.Errorf("node %s: keep its log: %w", n.Name, err))
			}
		}
	}
	if l.ownDir {
		os.RemoveAll(l.workdir)
	} else {
		for _, n := range l.nodes {
			os.RemoveAll(n.Workdir)
		}
	}
	l.progress("", "closed")
	return errors.Join(errs...)
}

// keepLog replaces the link at dst with a copy of the file src.
func keepLog(src, dst string) error {
	b, err := os.ReadFile(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil // the runtime never got to log
	}
	if err != nil {
		return err
	}
	os.Remove(dst)
	return os.WriteFile(dst, b, 0o600)
}
