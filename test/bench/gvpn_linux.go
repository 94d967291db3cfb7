package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/netcfg/nsthread"
	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/golemnet"
)

// statsInterval is how often the runtimes report their VPN counters
// (--stats-interval); Finish waits a few of them for the last report.
const statsInterval = 200 * time.Millisecond

// gvpnBed is the system under test: two gvpn runtimes launched exactly as
// the ExeUnit launches them (deploy, start, Hello, CreateNetwork), their
// data endpoints joined by the golemnet hub running in this process, and
// payload commands started in their sandboxes through RunProcess.
type gvpnBed struct {
	cfg *config
	// agent: each runtime runs --sandbox agent, its payload gvpn-agent in a
	// namespace of payloads (the agent path: TAP ↔ agent ↔ bridge ↔ runtime).
	agent    bool
	payloads *nsPair
	tmp      string
	hub      *golemnet.Hub
	nodes    [2]*gvpnNode
	// rcvbuf0 is the host's UDP RcvbufErrors when the runtimes came up.
	rcvbuf0 uint64
}

type gvpnNode struct {
	name, ip string
	agentPid int // the agent's process (agent path), 0 before it is found
	cfg      golemnet.ExeUnitConfig
	eu       *golemnet.ExeUnit
	hn       *golemnet.Node
	logs     *golemnet.TailBuffer
}

func setupGVPN(ctx context.Context, cfg *config, res *scenarioResult) (tb testbed, err error) {
	return setupRuntimes(ctx, cfg, res, false)
}

// setupAgent is the agent path: the same two runtimes and hub, each
// runtime's payload a gvpn-agent in its own namespace, joined by the bridge
// (a unix socket), as in a container or VM sandbox.
func setupAgent(ctx context.Context, cfg *config, res *scenarioResult) (tb testbed, err error) {
	return setupRuntimes(ctx, cfg, res, true)
}

func setupRuntimes(ctx context.Context, cfg *config, res *scenarioResult, agent bool) (tb testbed, err error) {
	tmp, err := os.MkdirTemp("", "gvb-gvpn-")
	if err != nil {
		return nil, err
	}
	hubLog := logrus.New()
	hubLog.SetOutput(os.Stderr)
	hubLog.SetLevel(logrus.WarnLevel)
	b := &gvpnBed{cfg: cfg, agent: agent, tmp: tmp, hub: golemnet.NewHub(logrus.NewEntry(hubLog))}
	defer func() {
		if err != nil {
			b.dumpLogs()
			b.Close()
		}
	}()
	if agent {
		if b.payloads, err = newNSPair(ctx, cfg, "p", res); err != nil {
			return nil, err
		}
	}

	hosts := map[string]string{}
	for i, ip := range []string{addrA, addrB} {
		n := &gvpnNode{name: fmt.Sprintf("node-%c", 'a'+i), ip: ip, logs: golemnet.NewTailBuffer(64 << 10)}
		b.nodes[i] = n
		hosts[n.name] = n.ip
		if n.hn, err = b.hub.AddNode(n.name, netip.MustParseAddr(ip)); err != nil {
			return nil, err
		}
	}
	if err := b.hub.Start(); err != nil {
		return nil, err
	}
	for i, n := range b.nodes {
		n.cfg = golemnet.ExeUnitConfig{
			Runtime:  cfg.Runtime,
			Workdir:  filepath.Join(tmp, n.name),
			Hostname: n.name,
			RuntimeArgs: []string{
				"--sandbox-prefix", namePrefix,
				"--stats-interval", statsInterval.String(), "--debug-state-events", "--log-stderr",
				"--log-level", "warn",
			},
			VPNEndpoint: n.hn.EndpointURL(),
			Stderr:      n.logs,
			// Own process group: Ctrl-C reaches only this tool, which then
			// shuts the runtimes down in order, as the ExeUnit would.
			SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
		}
		if agent {
			hostsFile := filepath.Join(tmp, n.name+".hosts")
			if err := os.WriteFile(hostsFile, []byte("127.0.0.1\tlocalhost\n"), 0o644); err != nil {
				return nil, err
			}
			n.cfg.RuntimeArgs = append(n.cfg.RuntimeArgs, "--sandbox", "agent", "--agent-timeout", "30s",
				"--agent-command", fmt.Sprintf("exec %s netns exec %s %s --hosts-file %s --log-level warn",
					cfg.Tools.IP, b.payloads.ns[i], cfg.Agent, hostsFile))
		} else {
			res.Netns = append(res.Netns, netns.NameFor(namePrefix, n.cfg.Workdir))
		}
		if _, err := golemnet.Deploy(ctx, n.cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", n.name, err)
		}
		if n.eu, err = golemnet.Start(ctx, n.cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", n.name, err)
		}
		res.Pids = append(res.Pids, n.eu.Pid())
		ep, err := n.eu.CreateNetwork(ctx, golemnet.VPNNetwork{Addr: vpnNet, Mask: vpnMsk, IfAddr: n.ip}, hosts)
		if err != nil {
			return nil, fmt.Errorf("%s: CreateNetwork: %w", n.name, err)
		}
		addr, err := golemnet.ParseUDPEndpoint(ep)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.name, err)
		}
		if err := n.hn.SetRuntimeEndpoint(addr); err != nil {
			return nil, fmt.Errorf("%s: %w", n.name, err)
		}
	}
	if b.rcvbuf0, err = readUDPRcvbufErrors(); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *gvpnBed) ServerIP() string { return addrB }
func (b *gvpnBed) LinkName() string { return netcfg.DefaultName } // the runtime's --tap-name default

// Run implements testbed through RunProcess; a command still running when
// ctx ends is killed with KillProcess.
func (b *gvpnBed) Run(ctx context.Context, node int, argv ...string) (cmdResult, error) {
	eu := b.nodes[node].eu
	p, err := eu.Spawn(ctx, argv[0], argv[1:]...)
	if err != nil {
		return cmdResult{}, err
	}
	r, err := p.Wait(ctx)
	if err != nil {
		kctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		eu.KillProcess(kctx, p.Pid, syscall.SIGKILL)
		cancel()
		return cmdResult{Stdout: r.Stdout, Stderr: r.Stderr, RC: -1}, err
	}
	return cmdResult{Stdout: r.Stdout, Stderr: r.Stderr, RC: int(r.ReturnCode)}, nil
}

// Start implements testbed through RunProcess.
func (b *gvpnBed) Start(ctx context.Context, node int, argv ...string) (background, error) {
	eu := b.nodes[node].eu
	p, err := eu.Spawn(ctx, argv[0], argv[1:]...)
	if err != nil {
		return nil, err
	}
	return &gvpnProc{eu: eu, p: p}, nil
}

// Sample implements testbed: the CPU of both runtime processes and of this
// process (which runs the hub), and the frames the hub received.
func (b *gvpnBed) Sample() (sample, error) {
	var s sample
	for _, n := range b.nodes {
		cpu, err := processCPU(n.eu.Pid())
		if err != nil {
			return s, fmt.Errorf("%s runtime: %w", n.name, err)
		}
		s.CPU = append(s.CPU, roleCPU{Role: "runtime " + n.name, Seconds: cpu})
		if b.agent {
			if n.agentPid == 0 {
				n.agentPid = childOf(n.eu.Pid())
			}
			cpu, err := processCPU(n.agentPid)
			if err != nil {
				return s, fmt.Errorf("%s agent: %w", n.name, err)
			}
			s.CPU = append(s.CPU, roleCPU{Role: "agent " + n.name, Seconds: cpu})
		}
	}
	cpu, err := processCPU(os.Getpid())
	if err != nil {
		return s, err
	}
	s.CPU = append(s.CPU, roleCPU{Role: "hub (in the bench process)", Seconds: cpu})
	for _, ns := range b.hub.Stats() {
		s.Frames += ns.RxFrames
	}
	return s, nil
}

// gvpnCounters are the datapath's own counters over the whole scenario.
type gvpnCounters struct {
	Nodes [2]gvpnNodeCounters
	// UDPRcvbufErrors is the host's UDP receive-buffer overflow count over
	// the scenario (all sockets of the host namespace; nothing else on the
	// machine should be busy).
	UDPRcvbufErrors uint64
}

type gvpnNodeCounters struct {
	Name string
	// Runtime counters, as the runtime's last gvpn.vpn RuntimeStatus said.
	Egress, Ingress api.VPNDirStats
	// Hub counters for the node: frames received from and sent to its
	// runtime, and drops charged to it.
	Hub golemnet.NodeStats
}

// Finish implements finisher: it collects the runtimes' and the hub's
// counters once the runtimes had time to report their last ones.
func (b *gvpnBed) Finish(ctx context.Context, res *scenarioResult) error {
	select {
	case <-time.After(3 * statsInterval):
	case <-ctx.Done():
		return ctx.Err()
	}
	c := &gvpnCounters{}
	hub := b.hub.Stats()
	for i, n := range b.nodes {
		st, err := n.eu.VPNStats()
		if err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
		c.Nodes[i] = gvpnNodeCounters{Name: n.name, Egress: st.Egress, Ingress: st.Ingress}
		for _, h := range hub {
			if h.Name == n.name {
				c.Nodes[i].Hub = h
			}
		}
		if err := n.eu.ProtocolError(); err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
	}
	rb, err := readUDPRcvbufErrors()
	if err != nil {
		return err
	}
	c.UDPRcvbufErrors = rb - b.rcvbuf0
	res.GVPN = c
	return nil
}

// Close implements testbed: Shutdown each runtime as the ExeUnit does (then
// SIGKILL), check that its sandbox is gone, close the hub.
func (b *gvpnBed) Close() error {
	var errs []error
	for _, n := range b.nodes {
		if n == nil || n.cfg.Workdir == "" {
			continue
		}
		if n.eu != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			if err := n.eu.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("%s: Shutdown: %w", n.name, err))
			}
			cancel()
			if !n.eu.Exited() {
				errs = append(errs, fmt.Errorf("%s: runtime pid %d still running", n.name, n.eu.Pid()))
			}
			n.eu = nil
		}
		name := netns.NameFor(namePrefix, n.cfg.Workdir)
		if _, err := os.Lstat(filepath.Join(nsthread.RunDir, name)); !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("%s: the runtime left its sandbox %s behind", n.name, name))
			if err := netns.Cleanup(namePrefix, n.cfg.Workdir, nil); err != nil {
				errs = append(errs, err)
			}
		}
		n.cfg.Workdir = ""
	}
	if err := b.hub.Close(); err != nil && !errors.Is(err, golemnet.ErrClosed) {
		errs = append(errs, fmt.Errorf("hub: %w", err))
	}
	if b.payloads != nil {
		if err := b.payloads.close(); err != nil {
			errs = append(errs, err)
		}
		b.payloads = nil
	}
	if err := os.RemoveAll(b.tmp); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		b.dumpLogs()
	}
	return errors.Join(errs...)
}

// childOf returns the first child process of pid (the agent its runtime
// started), or 0.
func childOf(pid int) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		var c int
		if _, err := fmt.Sscan(string(b), &c); err == nil && c > 0 {
			return c
		}
	}
	return 0
}

// dumpLogs prints the tail of each runtime's stderr (after a failure).
func (b *gvpnBed) dumpLogs() {
	for _, n := range b.nodes {
		if n != nil && n.logs.Len() > 0 {
			b.cfg.logf("stderr of runtime %s (tail):\n%s", n.name, n.logs.String())
		}
	}
}

// gvpnProc is a payload command left running in a sandbox.
type gvpnProc struct {
	eu   *golemnet.ExeUnit
	p    *golemnet.Proc
	once sync.Once
}

func (g *gvpnProc) Wait(ctx context.Context) error {
	_, err := g.p.Wait(ctx)
	return err
}

func (g *gvpnProc) Stop() {
	g.once.Do(func() {
		if g.p.Exited() || g.eu.Exited() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.eu.KillProcess(ctx, g.p.Pid, syscall.SIGKILL)
		g.p.Wait(ctx)
	})
}
