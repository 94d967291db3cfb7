package labcli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/pump"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/golemnet"
)

// The programs inside the Docker lab's containers. They are gvpn-lab
// subcommands, not for users: `gvpn-lab up --docker` starts them.
//
//	docker-node  a provider node: plays the ExeUnit for one gvpn-runtime
//	             (test, deploy, start, Hello, CreateNetwork, RunProcess)
//	             and relays its frames to the hub over the Docker network
//	docker-hub   the Golem Net: a Hub whose nodes' sockets listen on the
//	             Docker network, one port per node
//
// Both serve the control protocol on DIR/control.sock, DIR being a host
// directory mounted at the same path, so that the lab reaches them even
// while their container is cut off the Docker network.

// Ports of the Docker lab, on the containers' Docker addresses.
const (
	// dockerRelayPort is a node's ExeUnit relay: frames from the hub.
	dockerRelayPort = 7000
	// dockerHubPortBase + i is node i's socket in the hub.
	dockerHubPortBase = 7100
)

// dockerNodeWorkdir is the activity work directory inside a node.
const dockerNodeWorkdir = "/var/lib/gvpn-lab/work"

func dockerNode(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("docker-node", "gvpn-lab docker-node — a Docker lab node (started by gvpn-lab up --docker)\n\nFlags:\n", stdout)
	name := fs.String("name", "", "node `name` (hostname)")
	ipFlag := fs.String("ip", "", "the node's VPN `address`")
	netFlag := fs.String("net", "", "the VPN, a `CIDR`")
	gateway := fs.String("gateway", "", "gateway mode of CreateNetwork")
	hub := fs.String("golem-net", "", "the hub's socket for this node, `ADDR:PORT`")
	dir := fs.String("dir", "", "host `dir` shared with the lab (control socket, logs)")
	prefix := fs.String("sandbox-prefix", golemnet.DefaultLabSandboxPrefix, "`prefix` of the sandbox namespace names")
	var hosts, runtimeArgs multiFlag
	fs.Var(&hosts, "host", "NAME=IP of the hosts map, repeatable")
	fs.Var(&runtimeArgs, "runtime-arg", "extra runtime argument, repeatable")
	if _, code, ok := parseFlags(fs, args, stderr, 0); !ok {
		return code
	}
	ip, err1 := netip.ParseAddr(*ipFlag)
	pfx, err2 := netip.ParsePrefix(*netFlag)
	hubAddr, err3 := netip.ParseAddrPort(*hub)
	if *name == "" || *dir == "" || errors.Join(err1, err2, err3) != nil {
		return fail(stderr, "docker-node", usagef("needs --name, --ip, --net, --golem-net and --dir (%v)", errors.Join(err1, err2, err3)))
	}
	hostMap := map[string]string{}
	for _, h := range hosts {
		k, v, ok := strings.Cut(h, "=")
		if !ok {
			return fail(stderr, "docker-node", usagef("--host %q: want NAME=IP", h))
		}
		hostMap[k] = v
	}
	log, err := newLog("info", stderr)
	if err != nil {
		return fail(stderr, "docker-node", err)
	}
	log = log.WithField("node", *name)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	n := &dockerNodeProc{name: *name, ip: ip, net: pfx.Masked(), gateway: golemnet.GatewayMode(*gateway),
		hosts: hostMap, hub: hubAddr, dir: *dir, prefix: *prefix, runtimeArgs: runtimeArgs, log: log}
	if err := n.run(ctx); err != nil {
		return fail(stderr, "docker-node", err)
	}
	return 0
}

type dockerNodeProc struct {
	name        string
	ip          netip.Addr
	net         netip.Prefix
	gateway     golemnet.GatewayMode
	hosts       map[string]string
	hub         netip.AddrPort
	dir         string
	prefix      string
	runtimeArgs []string
	log         *logrus.Entry

	node    *golemnet.LabNode
	relay   *nodeRelay
	started time.Time
}

// Lookup finds this node (the only one) for exec.
func (n *dockerNodeProc) Lookup(name string) (*golemnet.LabNode, error) {
	if name != n.name {
		return nil, fmt.Errorf("%w %q (this is %s)", golemnet.ErrUnknownNode, name, n.name)
	}
	return n.node, nil
}

func (n *dockerNodeProc) run(ctx context.Context) error {
	n.started = time.Now()
	logs := filepath.Join(n.dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	// A restarted container finds its last run's work directory.
	netns.Cleanup(n.prefix, dockerNodeWorkdir, n.log)
	os.RemoveAll(dockerNodeWorkdir)
	logFile, err := os.OpenFile(filepath.Join(logs, "runtime.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "---- %s: node %s starting\n", time.Now().UTC().Format(time.RFC3339), n.name)
	// The runtime runs with stderr unused, as under yagna, and logs to its
	// work directory; its log joins this one when the node stops.
	defer func() {
		if b, err := os.ReadFile(api.LogPath(dockerNodeWorkdir)); err == nil {
			logFile.Write(b)
		}
	}()

	relay, err := newNodeRelay(n.hub)
	if err != nil {
		return err
	}
	n.relay = relay
	defer relay.Close()

	cfg := golemnet.ExeUnitConfig{
		Runtime:  "/usr/local/bin/" + RuntimeName,
		Workdir:  dockerNodeWorkdir,
		Hostname: n.name,
		// The counters as state events, as the local lab's runtimes send
		// them: status and the demo read them.
		RuntimeArgs: append([]string{"--sandbox-prefix", n.prefix, "--debug-state-events"}, n.runtimeArgs...),
		VPNEndpoint: "udp://" + relay.LocalAddr().String(),
		Stderr:      logFile,
	}
	if self, err := os.Executable(); err == nil {
		cfg.Runtime = filepath.Join(filepath.Dir(self), RuntimeName)
	}
	step := func(s string) { n.log.WithField("step", s).Info("bring-up") }
	step("test")
	test := cfg
	test.Workdir = filepath.Join(dockerNodeWorkdir, "test")
	if err := os.MkdirAll(test.Workdir, 0o755); err != nil {
		return err
	}
	if err := golemnet.SelfTest(ctx, test); err != nil {
		return fmt.Errorf("runtime self-test: %w", err)
	}
	step("deploy")
	if _, err := golemnet.Deploy(ctx, cfg); err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	step("start")
	eu, err := golemnet.Start(ctx, cfg)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		eu.Shutdown(sctx)
	}()
	step("CreateNetwork")
	vn := golemnet.VPNNetwork{Addr: n.net.Addr().String(), Mask: net.IP(net.CIDRMask(n.net.Bits(), 32)).String(), IfAddr: n.ip.String()}
	if n.gateway == golemnet.GatewayFirstHost {
		vn.Gateway = n.net.Addr().Next().String()
	}
	ep, err := eu.CreateNetwork(ctx, vn, n.hosts)
	if err != nil {
		return fmt.Errorf("CreateNetwork: %w", err)
	}
	rt, err := golemnet.ParseUDPEndpoint(ep)
	if err != nil {
		return fmt.Errorf("CreateNetwork reply: %w", err)
	}
	if err := relay.SetRuntime(rt); err != nil {
		return fmt.Errorf("relay to %s: %w", rt, err)
	}
	n.node = &golemnet.LabNode{Name: n.name, IP: n.ip, Workdir: dockerNodeWorkdir,
		Netns: netns.NameFor(n.prefix, dockerNodeWorkdir), ExeUnit: eu, RuntimeEndpoint: rt}

	srv, err := listenControl(filepath.Join(n.dir, ControlSocketName), &controlServer{log: n.log, status: n.status,
		setFault: func(ctlRequest) ctlReply {
			return ctlReply{Error: "faults are set through the lab (gvpn-lab fault), not a node", Code: 2}
		},
		exec: func(ctx context.Context, _ net.Conn, sc *bufio.Scanner, enc *json.Encoder, req ctlRequest) {
			streamExec(ctx, n.log, n.Lookup, sc, enc, req)
		}})
	if err != nil {
		return err
	}
	defer srv.Close()
	n.log.WithFields(logrus.Fields{"ip": n.ip, "runtime_pid": eu.Pid(), "golem_net": n.hub}).Info("node up")

	if err := eu.Wait(ctx); ctx.Err() == nil {
		return fmt.Errorf("the runtime exited (%v); the node stops", err)
	}
	n.log.Info("stopping: Shutdown to the runtime")
	return nil
}

// shutdownGrace bounds a node's Shutdown at SIGTERM; docker stop gives
// ten seconds before SIGKILL.
const shutdownGrace = 8 * time.Second

func (n *dockerNodeProc) status() StatusJSON {
	st := golemnet.NodeStatus{Name: n.name, IP: n.ip, Netns: n.node.Netns, Workdir: dockerNodeWorkdir,
		Endpoint: n.relay.LocalAddr(), RuntimeEndpoint: n.node.RuntimeEndpoint}
	st.Pid = n.node.ExeUnit.Pid()
	st.Alive = !n.node.ExeUnit.Exited()
	st.Runtime, st.RuntimeEvents = n.node.RuntimeStats()
	up, down, lost := n.relay.Counters()
	st.Hub = golemnet.NodeStats{Name: n.name, RxFrames: up, TxFrames: down}
	nodes := nodesJSON([]golemnet.NodeStatus{st})
	if lost > 0 {
		nodes[0].Hub.Drops = map[string]uint64{"relay_send_failed": lost}
	}
	return StatusJSON{Pid: os.Getpid(), Network: n.net.String(), SandboxPrefix: n.prefix, Started: n.started,
		Logs: filepath.Join(n.dir, "logs"), Nodes: nodes}
}

// nodeRelay is the ExeUnit's side of a node's frames: the data socket the
// runtime is given (--vpn-endpoint, on loopback) and the node's link to the
// Golem Net (the hub, over the Docker network). Once the runtime's endpoint
// is known, a pump joins the two as datagram links, as the runtime joins
// its TAP and its endpoint: frames pass unchanged and one per datagram on
// the wire, but many per system call (GRO in, GSO out). Each link takes
// datagrams from its peer only, so only the hub may send frames in.
type nodeRelay struct {
	local, up *net.UDPConn
	hub       netip.AddrPort

	mu     sync.Mutex
	pump   *pump.Pump // nil until SetRuntime
	closed bool
}

func newNodeRelay(hub netip.AddrPort) (*nodeRelay, error) {
	local, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	up, err := net.ListenUDP("udp4", &net.UDPAddr{Port: dockerRelayPort})
	if err != nil {
		local.Close()
		return nil, fmt.Errorf("relay socket :%d: %w", dockerRelayPort, err)
	}
	for _, c := range []*net.UDPConn{local, up} {
		c.SetReadBuffer(golemnet.SocketBuffer)
		c.SetWriteBuffer(golemnet.SocketBuffer)
	}
	return &nodeRelay{local: local, up: up, hub: hub}, nil
}

// LocalAddr is the ExeUnit data socket the runtime sends to.
func (r *nodeRelay) LocalAddr() netip.AddrPort { return r.local.LocalAddr().(*net.UDPAddr).AddrPort() }

// SetRuntime starts relaying between the runtime's endpoint rt and the hub.
// It is called once, with the CreateNetwork reply; frames the runtime sent
// before are dropped.
func (r *nodeRelay) SetRuntime(rt netip.AddrPort) error {
	toRuntime, err := link.NewDatagram(r.local, rt)
	if err != nil {
		return err
	}
	toHub, err := link.NewDatagram(r.up, r.hub)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.pump != nil {
		return errors.New("relay: closed or already started")
	}
	r.pump = pump.Start(pump.Config{Iface: toRuntime, Uplink: toHub})
	return nil
}

// Counters returns frames relayed to the hub and to the runtime, and the
// frames whose send the kernel refused. Datagrams to an unreachable hub
// (the node cut off the Docker network) are lost without a trace, as on a
// real network: the hub's counters show them missing.
func (r *nodeRelay) Counters() (up, down, lost uint64) {
	r.mu.Lock()
	p := r.pump
	r.mu.Unlock()
	if p == nil {
		return 0, 0, 0
	}
	st := p.Stats()
	return st.Egress.Frames, st.Ingress.Frames, st.Egress.Drops[pump.WriteFailed] + st.Ingress.Drops[pump.WriteFailed]
}

func (r *nodeRelay) Close() {
	r.mu.Lock()
	r.closed = true
	p := r.pump
	r.mu.Unlock()
	if p != nil {
		p.Close() // closes both links and their sockets
		return
	}
	r.local.Close()
	r.up.Close()
}

func dockerHub(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("docker-hub", "gvpn-lab docker-hub — the Docker lab's Golem Net (started by gvpn-lab up --docker)\n\nFlags:\n", stdout)
	dir := fs.String("dir", "", "host `dir` shared with the lab (control socket)")
	netFlag := fs.String("net", "", "the VPN, a `CIDR`")
	var nodes multiFlag
	fs.Var(&nodes, "node", "NAME=VPN-IP@DOCKER-IP: a node, in order (node i listens on port 7100+i), repeatable")
	if _, code, ok := parseFlags(fs, args, stderr, 0); !ok {
		return code
	}
	if *dir == "" || len(nodes) == 0 {
		return fail(stderr, "docker-hub", usagef("needs --dir and --node"))
	}
	log, err := newLog("info", stderr)
	if err != nil {
		return fail(stderr, "docker-hub", err)
	}
	hub := golemnet.NewHub(log.WithField("component", "hub"))
	defer hub.Close()
	lab := &hubLab{byName: map[string]*golemnet.LabNode{}}
	for i, spec := range nodes {
		name, rest, ok1 := strings.Cut(spec, "=")
		vpn, dockerIP, ok2 := strings.Cut(rest, "@")
		ip, err1 := netip.ParseAddr(vpn)
		dip, err2 := netip.ParseAddr(dockerIP)
		if !ok1 || !ok2 || err1 != nil || err2 != nil {
			return fail(stderr, "docker-hub", usagef("--node %q: want NAME=VPN-IP@DOCKER-IP", spec))
		}
		hn, err := hub.AddNodeOn(name, ip, netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(dockerHubPortBase+i)))
		if err != nil {
			return fail(stderr, "docker-hub", err)
		}
		if err := hn.SetRuntimeEndpoint(netip.AddrPortFrom(dip, dockerRelayPort)); err != nil {
			return fail(stderr, "docker-hub", err)
		}
		n := &golemnet.LabNode{Name: name, IP: ip, Hub: hn}
		lab.byName[name] = n
		lab.nodes = append(lab.nodes, n)
	}
	if err := hub.Start(); err != nil {
		return fail(stderr, "docker-hub", err)
	}
	started := time.Now()
	srv, err := listenControl(filepath.Join(*dir, ControlSocketName), &controlServer{log: log,
		status: func() StatusJSON {
			var st []golemnet.NodeStatus
			stats := map[string]golemnet.NodeStats{}
			for _, s := range hub.Stats() {
				stats[s.Name] = s
			}
			for _, n := range lab.nodes {
				rt, _ := n.Hub.RuntimeEndpoint()
				st = append(st, golemnet.NodeStatus{Name: n.Name, IP: n.IP, Endpoint: n.Hub.Addr(),
					RuntimeEndpoint: rt, Fault: n.Hub.Fault(), Hub: stats[n.Name]})
			}
			return StatusJSON{Pid: os.Getpid(), Network: *netFlag, Started: started, Nodes: nodesJSON(st)}
		},
		setFault: func(req ctlRequest) ctlReply { return hubFault(lab.Lookup, req, log) },
		exec: func(_ context.Context, _ net.Conn, _ *bufio.Scanner, enc *json.Encoder, _ ctlRequest) {
			enc.Encode(ctlReply{Error: "the hub runs no commands: exec goes to a node", Code: 2})
		}})
	if err != nil {
		return fail(stderr, "docker-hub", err)
	}
	defer srv.Close()
	log.WithField("nodes", len(nodes)).Info("hub up")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return 0
}

// hubLab is the hub container's nodes, for faults.
type hubLab struct {
	nodes  []*golemnet.LabNode
	byName map[string]*golemnet.LabNode
}

func (h *hubLab) Lookup(name string) (*golemnet.LabNode, error) {
	n := h.byName[name]
	if n == nil {
		names := make([]string, 0, len(h.byName))
		for k := range h.byName {
			names = append(names, k)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("%w %q (nodes: %s)", golemnet.ErrUnknownNode, name, strings.Join(names, ", "))
	}
	return n, nil
}
