package labcli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/test/golemnet"
)

const upUsage = `gvpn-lab up — keep a lab running in the foreground until Ctrl-C (or SIGTERM).

Usage:
  gvpn-lab up [--nodes N] [--net CIDR] [flags]

Nodes are named node-a, node-b, … (or --hostnames) and get the addresses
.2, .3, … of the network; every node knows every other by name. While the
lab runs, other terminals reach it with exec, status and fault. Ctrl-C
shuts every runtime down the way the ExeUnit does and leaves nothing behind.

Examples:
  sudo gvpn-lab up                              # 3 nodes on 192.168.0.0/24
  sudo gvpn-lab up --nodes 5 --net 10.7.0.0/24
  sudo gvpn-lab up --hostnames web,db --gateway first-host
  sudo gvpn-lab up --runtime-arg=--log-level=debug   # chatty runtime logs
  sudo gvpn-lab up --nodes 3 --vm-nodes 1        # node-c is a QEMU guest (make vm-image)
  sudo gvpn-lab up --docker --nodes 4 --agent-nodes 1  # every node a container (make images first)

With --docker every node is a privileged container (the ExeUnit stand-in and
gvpn-runtime) and the hub one more, on a Docker network of their own; frames
cross it as UDP. Containers and the network carry the labels gvpn.lab=<id>
and gvpn.node=<node> (hub: gvpn.node=hub); Ctrl-C removes them, and a lab
started on the same state dir removes what a crashed one left.

Flags:
`

// labFlags are the flags of the commands that run a lab (demo, up).
type labFlags struct {
	moreNets    multiFlag
	noHosts     bool
	logDir      string
	runtime     string
	net         string
	gateway     string
	prefix      string
	stateDir    string
	logLevel    string
	runtimeArgs multiFlag
}

func up(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("up", upUsage, stdout)
	nodes := fs.Int("nodes", 3, "number of provider `nodes` (1-64)")
	hostnames := fs.String("hostnames", "", "comma-separated node `names` (default node-a, node-b, …)")
	vmNodes := fs.Int("vm-nodes", 0, "how many of the nodes (the last ones) run their payload in a QEMU guest\n(gvpn-runtime --sandbox vm; make vm-image first)")
	var lf labFlags
	lf.add(fs.FlagSet)
	var df dockerFlags
	df.add(fs)
	if _, code, ok := parseFlags(fs, args, stderr, 0); !ok {
		return code
	}
	if *hostnames != "" && !flagSet(fs, "nodes") {
		*nodes = len(strings.Split(*hostnames, ","))
	}
	cfg, err := lf.config(*nodes, *hostnames)
	if err != nil {
		return fail(stderr, "up", err)
	}
	if *vmNodes < 0 || *vmNodes > cfg.Nodes {
		return fail(stderr, "up", usagef("--vm-nodes %d: want 0 to --nodes (%d)", *vmNodes, cfg.Nodes))
	}
	cfg.VMNodes = *vmNodes
	// One `up` per state dir: the control socket is its address.
	lab, lock, log, err := openLab(fs, &lf, &df, cfg, "--vm-nodes", nil, stderr, stderr)
	if err != nil {
		return fail(stderr, "up", err)
	}
	defer lock.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stderr, "gvpn-lab: starting %d node%s on %s …\n", cfg.Nodes, pluralS(cfg.Nodes), cfg.Net.Masked())
	info, err := lab.Start(ctx, func(node, step string) {
		if node != "" {
			log.WithFields(logrus.Fields{"node": node, "step": step}).Debug("bring-up")
		}
	})
	if err != nil {
		if logs := lab.Cleanup(keepAll); logs != "" {
			err = fmt.Errorf("%w (runtime logs: %s)", err, logs)
		}
		return fail(stderr, "up", err)
	}
	srv, err := listenControl(socketPath(lf.stateDir), &controlServer{log: log,
		status: func() StatusJSON {
			st := lab.Status(context.Background())
			st.Running = true
			return st
		},
		setFault: func(req ctlRequest) ctlReply { return lab.Fault(context.Background(), req) },
		exec:     lab.ServeExec,
	})
	if err != nil {
		lab.Close()
		lab.Cleanup(keepAll)
		return fail(stderr, "up", err)
	}
	printBanner(stdout, lab, info, cfg.Net.Masked(), lf.stateDir)

	<-ctx.Done()
	stop() // a second Ctrl-C kills gvpn-lab at once; local runtimes still see stdin EOF
	fmt.Fprintln(stderr, "gvpn-lab: stopping the lab …")
	srv.Close()
	if err := lab.Close(); err != nil {
		return fail(stderr, "up", fmt.Errorf("teardown: %w (runtime logs: %s)", err, lab.Cleanup(keepAll)))
	}
	os.Remove(lock.Name()) // still held: no other up can be between this and the state dir's removal
	msg := "gvpn-lab: lab stopped; " + info.Gone
	if logs := lab.Cleanup(keepLogs); logs != "" {
		msg += "; the runtime logs are in " + logs
	}
	fmt.Fprintln(stderr, msg)
	return 0
}

// openLab is what demo and up do once their own flags are checked: it
// checks the Docker flags against cfg (vmFlag is the flag that asked for
// cfg's VM nodes), that this is root, makes the back-end the flags ask for
// (tools: the programs the command runs in the nodes; a Docker lab writes
// the build of its image to buildLog) and takes the state dir's lock: one
// lab per state dir. The caller closes the lock; log is gvpn-lab's own.
func openLab(fs *cmdFlags, lf *labFlags, df *dockerFlags, cfg golemnet.LabConfig, vmFlag string, tools []string,
	buildLog, stderr io.Writer) (lab labBackend, lock *os.File, log *logrus.Entry, err error) {
	subnet, err := df.check(fs, cfg.Nodes)
	if err != nil {
		return nil, nil, nil, err
	}
	if df.docker && cfg.VMNodes > 0 {
		return nil, nil, nil, usagef("%s and --docker together: a Docker lab has no VM nodes yet", vmFlag)
	}
	if df.docker && len(cfg.MoreNets) > 0 {
		return nil, nil, nil, usagef("--also-net and --docker together: a Docker lab's nodes join one network yet")
	}
	log, err = newLog(lf.logLevel, stderr)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := requireRoot("the lab creates network namespaces and TAP devices"); err != nil {
		return nil, nil, nil, err
	}
	if df.docker {
		lab = newDockerLab(newDockerLabConfig(cfg, df, subnet, lf.stateDir, "", log), df, buildLog)
	} else {
		local, err := newLocalLab(cfg, lf, strings.TrimPrefix(fs.Name(), "gvpn-lab "), tools, log)
		if err != nil {
			return nil, nil, nil, err
		}
		lab = local
	}
	if lock, err = lockStateDir(lf.stateDir); err != nil {
		return nil, nil, nil, err
	}
	return lab, lock, log, nil
}

func (f *labFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&f.net, "net", golemnet.DefaultLabNet, "the VPN, an IPv4 `CIDR`")
	fs.StringVar(&f.gateway, "gateway", "", "gateway in CreateNetwork: \"\" (newer ExeUnits) or \"first-host\" (≤ v0.17.6)")
	fs.Var(&f.moreNets, "also-net", "a further VPN every node joins, an IPv4 `CIDR`; repeatable (one CreateNetwork carries them all)")
	fs.BoolVar(&f.noHosts, "no-hosts", false, "send CreateNetwork without hosts, as stock requestors do (reach nodes by IP)")
	fs.StringVar(&f.runtime, "runtime", "", "gvpn-runtime `binary` (default: next to gvpn-lab, else in PATH)")
	fs.StringVar(&f.prefix, "sandbox-prefix", golemnet.DefaultLabSandboxPrefix, "`prefix` of the nodes' network namespace names")
	fs.StringVar(&f.stateDir, "state-dir", DefaultStateDir, "`dir` for the control socket and work dirs (removed when the lab stops)")
	fs.StringVar(&f.logDir, "log-dir", DefaultLogDir, "`dir` under which each lab keeps its runtimes' logs (kept after it stops)")
	fs.StringVar(&f.logLevel, "log-level", "warn", "gvpn-lab's own log `level` on stderr (the runtimes log to files)")
	fs.Var(&f.runtimeArgs, "runtime-arg", "extra argument for every runtime invocation, repeatable (like the ExeUnit's)")
}

// config validates the flags into a LabConfig (Runtime still unset).
func (f *labFlags) config(nodes int, hostnames string) (golemnet.LabConfig, error) {
	pfx, err := netip.ParsePrefix(f.net)
	if err != nil {
		return golemnet.LabConfig{}, usagef("--net %q is not a CIDR like 192.168.0.0/24", f.net)
	}
	if !pfx.Addr().Is4() {
		return golemnet.LabConfig{}, usagef("--net %s: only IPv4 networks (Golem VPN is IPv4-only)", f.net)
	}
	cfg := golemnet.LabConfig{
		Runtime:       "-", // checked later
		Nodes:         nodes,
		Net:           pfx,
		Gateway:       golemnet.GatewayMode(f.gateway),
		NoHosts:       f.noHosts,
		SandboxPrefix: f.prefix,
		// Counters reach `status` and the demo's summary every second.
		RuntimeArgs: append([]string{"--stats-interval", "1s"}, f.runtimeArgs...),
	}
	if hostnames != "" {
		cfg.Hostnames = strings.Split(hostnames, ",")
	}
	for _, m := range f.moreNets {
		p, err := netip.ParsePrefix(m)
		if err != nil || !p.Addr().Is4() {
			return cfg, usagef("--also-net %q is not an IPv4 CIDR like 10.20.0.0/16", m)
		}
		cfg.MoreNets = append(cfg.MoreNets, p)
	}
	if cfg.Nodes > 0 && golemnet.LabCapacity(pfx.Masked()) < cfg.Nodes {
		room := golemnet.LabCapacity(pfx.Masked())
		return cfg, usagef("--net %s is too small for %d nodes: it has room for %d (.0, .1 and the broadcast address are reserved)", f.net, cfg.Nodes, room)
	}
	if err := cfg.Validate(); err != nil {
		msg := strings.TrimPrefix(err.Error(), golemnet.ErrLabConfig.Error()+": ")
		return cfg, usagef("%s", msg)
	}
	if !validPrefix(f.prefix) {
		return cfg, usagef("--sandbox-prefix %q: use letters, digits and '-', at most 24 characters", f.prefix)
	}
	return cfg, nil
}

func validPrefix(p string) bool {
	if p == "" || len(p) > 24 {
		return false
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// lockStateDir makes the state dir if needed and takes the lock that
// makes one `up` per state dir.
func lockStateDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "up.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("a lab is already running with state dir %s (see `gvpn-lab status`; stop it with Ctrl-C)", dir)
		}
		return nil, err
	}
	return f, nil
}

func printBanner(w io.Writer, lab labBackend, info labInfo, network netip.Prefix, stateDir string) {
	prog := progName()
	sd := ""
	if stateDir != DefaultStateDir {
		sd = " --state-dir " + stateDir
	}
	nodes := lab.Nodes()
	fmt.Fprintf(w, "gvpn-lab: %d node%s up on %s%s — Ctrl-C to stop\n\n", len(nodes), pluralS(len(nodes)), network, info.Where)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tIP\tSANDBOX\tREADY AFTER\tSHELL IN ITS NETWORK (its /etc/hosts is not the payload's: use IPs)")
	for _, n := range nodes {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%.1fs\t%s\n", n.Name, n.IP, n.Sandbox, n.Ready.Seconds(), n.Shell)
	}
	tw.Flush()
	a, b := nodes[0].Name, nodes[0].Name
	if len(nodes) > 1 {
		b = nodes[1].Name
	}
	// The payload sees no host /tmp, /root or /home: the web server is
	// uploaded into the node like a requestor's program.
	self, _ := os.Executable()
	if inside, err := lab.Install(a, self, "gvpn-lab"); err == nil {
		self = inside
	}
	fmt.Fprintln(w, "\nTry, in another terminal (commands run in the node through RunProcess):")
	tw = tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, l := range append([]tryLine{
		{"exec", fmt.Sprintf("%s -- ping -c 3 %s", b, a), ""},
		{"exec", a + " -- ip addr show vpn0", ""},
		{"exec", fmt.Sprintf("%s -- %s serve-http", a, self), "# a web server on " + a + " …"},
		{"exec", fmt.Sprintf("%s -- curl -s http://%s:8080/", b, a), "# … fetched by name from " + b},
		{"fault", a + " --latency 50ms", "# or --cut, --loss 0.1, --restore"},
	}, append(info.Hints, tryLine{"status", "", ""})...) {
		fmt.Fprintf(tw, "  %s\t%s\n", strings.TrimSpace(prog+" "+l.cmd+sd+" "+l.args), l.comment)
	}
	tw.Flush()
	for _, n := range info.Notes {
		fmt.Fprintf(w, "  %s\n", n)
	}
	fmt.Fprintf(w, "\nRuntime logs: %s\n", info.Logs)
}

// nodesJSON converts the lab's status snapshot.
func nodesJSON(st []golemnet.NodeStatus) []NodeJSON {
	out := make([]NodeJSON, 0, len(st))
	for _, s := range st {
		n := NodeJSON{
			Name:            s.Name,
			IP:              s.IP.String(),
			Netns:           s.Netns,
			VM:              s.VM,
			ReadySeconds:    s.Ready.Seconds(),
			RuntimePid:      s.Pid,
			Alive:           s.Alive,
			ExeUnitEndpoint: s.Endpoint.String(),
			Fault:           faultJSON(s.Fault),
			Hub: HubJSON{
				RxFrames: s.Hub.RxFrames, RxBytes: s.Hub.RxBytes,
				TxFrames: s.Hub.TxFrames, TxBytes: s.Hub.TxBytes,
				Drops: s.Hub.DropMap(),
			},
		}
		if s.RuntimeEndpoint.IsValid() {
			n.RuntimeEndpoint = s.RuntimeEndpoint.String()
		}
		if s.RuntimeEvents > 0 {
			r := s.Runtime
			n.Runtime = &r
		}
		if u := s.Payload; u != nil {
			n.Payload = &PayloadJSON{CPUSeconds: u.CPUSeconds, CPUCores: s.Granted.CPUCores,
				PeakMemBytes: u.PeakMemBytes, MemBytes: s.Granted.MemBytes, OOMKills: u.OOMKills, Pids: u.Pids,
				DiskBytes: u.DiskBytes, StorageBytes: s.Granted.StorageBytes}
		}
		out = append(out, n)
	}
	return out
}

func faultJSON(f golemnet.Fault) FaultJSON {
	return FaultJSON{Cut: f.Cut, LatencyMs: float64(f.Latency) / float64(time.Millisecond), Loss: f.Loss}
}

// controlServer serves the control protocol: of an `up` lab on the state
// dir's socket, and in the Docker lab of each node's and the hub's
// container.
type controlServer struct {
	ln     net.Listener
	path   string
	log    *logrus.Entry
	status func() StatusJSON
	// setFault answers a fault request.
	setFault func(ctlRequest) ctlReply
	// exec runs an exec request: the connection's later lines are the
	// client's signals, and ctx ends when the server closes.
	exec func(ctx context.Context, c net.Conn, sc *bufio.Scanner, enc *json.Encoder, req ctlRequest)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]bool
}

// listenControl serves the control protocol on the unix socket path (any
// socket there is taken to be stale) with the handlers in s (log, status,
// setFault, exec).
func listenControl(path string, s *controlServer) (*controlServer, error) {
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	s.ln, s.path, s.conns = ln, path, map[net.Conn]bool{}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Go(s.accept)
	return s, nil
}

func (s *controlServer) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Go(func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.handle(c)
		})
	}
}

// Close stops accepting, ends running execs (their commands are killed
// with the lab) and waits for every handler.
func (s *controlServer) Close() {
	s.ln.Close()
	s.cancel()
	s.mu.Lock()
	for c := range s.conns {
		c.SetReadDeadline(time.Now()) // unblock handlers waiting on their client
	}
	s.mu.Unlock()
	s.wg.Wait()
	os.Remove(s.path)
}

func (s *controlServer) handle(c net.Conn) {
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), maxControlLine)
	enc := json.NewEncoder(c)
	if !sc.Scan() {
		return
	}
	req, err := decodeRequest(sc.Bytes())
	if err != nil {
		enc.Encode(ctlReply{Error: err.Error(), Code: 2})
		return
	}
	switch req.Op {
	case "status":
		st := s.status()
		enc.Encode(ctlReply{Status: &st})
	case "fault":
		enc.Encode(s.setFault(req))
	case "exec":
		s.exec(s.ctx, c, sc, enc, req)
	default:
		enc.Encode(ctlReply{Error: fmt.Sprintf("op %q must follow an exec", req.Op), Code: 2})
	}
}

// hubFault sets a node's fault in the hub that lookup finds it in.
func hubFault(lookup func(string) (*golemnet.LabNode, error), req ctlRequest, log *logrus.Entry) ctlReply {
	// A container fault means nothing to a node that is a local runtime
	// on the hub: refuse it rather than answer with the unchanged fault
	// (the client would exit 0 having done nothing).
	if req.Docker != "" {
		return ctlReply{Error: localDockerFault(req.Docker), Code: 2}
	}
	n, err := lookup(req.Node)
	if err != nil {
		return ctlReply{Error: err.Error(), Code: 2}
	}
	f := n.Hub.Fault()
	if req.Restore {
		f = golemnet.Fault{}
	}
	if req.Cut != nil {
		f.Cut = *req.Cut
	}
	if req.LatencyMs != nil {
		f.Latency = time.Duration(*req.LatencyMs * float64(time.Millisecond))
	}
	if req.Loss != nil {
		f.Loss = *req.Loss
	}
	n.Hub.SetFault(f)
	log.WithFields(logrus.Fields{"node": n.Name, "fault": faultJSON(n.Hub.Fault()).String()}).Info("fault set")
	fj := faultJSON(n.Hub.Fault())
	return ctlReply{Fault: &fj}
}

// localDockerFault explains why a --docker lab fault was refused by a
// local lab, with the local equivalent where there is one.
func localDockerFault(fault string) string {
	msg := fmt.Sprintf("--%s is a fault of a --docker lab's containers; this lab's nodes are local runtimes", fault)
	switch fault {
	case "partition":
		return msg + ": --cut isolates a node on the hub"
	case "heal":
		return msg + ": --uncut (or --restore) joins it again"
	}
	return msg + " (start the lab with --docker for it)"
}
