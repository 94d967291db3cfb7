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

	"github.com/gvpn/gvpn/runtime/api"
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
	subnet, err := df.check(fs, *nodes)
	if err != nil {
		return fail(stderr, "up", err)
	}
	if df.docker && *vmNodes > 0 {
		return fail(stderr, "up", usagef("--vm-nodes and --docker together: a Docker lab has no VM nodes yet"))
	}
	log, err := newLog(lf.logLevel, stderr)
	if err != nil {
		return fail(stderr, "up", err)
	}
	if err := requireRoot("the lab creates network namespaces and TAP devices"); err != nil {
		return fail(stderr, "up", err)
	}
	if df.docker {
		return upDocker(cfg, &lf, &df, subnet, log, stdout, stderr)
	}
	if cfg.Runtime, err = findRuntime(lf.runtime); err != nil {
		return fail(stderr, "up", err)
	}

	// One `up` per state dir: the control socket is its address.
	lock, err := lockStateDir(lf.stateDir)
	if err != nil {
		return fail(stderr, "up", err)
	}
	defer lock.Close()
	cleanStaleRuns(lf.stateDir, log)

	names := cfg.Hostnames
	if len(names) == 0 {
		for i := range cfg.Nodes {
			names = append(names, golemnet.LabNodeName(i))
		}
	}
	rd, err := newRunDir(lf.stateDir, lf.logDir, "up", cfg.SandboxPrefix, names)
	if err != nil {
		return fail(stderr, "up", err)
	}
	cfg.Workdir = rd.nodesDir()
	cfg.LogDir = rd.logsDir()
	cfg.Log = log
	cfg.OwnProcessGroups = true
	cfg.Progress = func(node, step string) {
		if node != "" {
			log.WithFields(logrus.Fields{"node": node, "step": step}).Debug("bring-up")
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stderr, "gvpn-lab: starting %d node%s on %s …\n", cfg.Nodes, pluralS(cfg.Nodes), cfg.Net.Masked())
	bringUp, cancel := context.WithTimeout(ctx, 2*time.Minute)
	lab, err := golemnet.NewLab(bringUp, cfg)
	cancel()
	if err != nil {
		rd.close(false)
		return fail(stderr, "up", fmt.Errorf("%w (runtime logs: %s)", err, rd.logsDir()))
	}
	started := time.Now()
	srv, err := serveControl(lf.stateDir, lab, log, func() StatusJSON {
		return StatusJSON{
			Running:       true,
			Pid:           os.Getpid(),
			Network:       lab.Net().String(),
			SandboxPrefix: lab.SandboxPrefix(),
			Started:       started,
			Logs:          rd.logsDir(),
			Nodes:         nodesJSON(lab.Status()),
		}
	})
	if err != nil {
		lab.Close()
		rd.close(false)
		return fail(stderr, "up", err)
	}
	printBanner(stdout, lab, lf.stateDir, rd.logsDir())

	<-ctx.Done()
	stop() // a second Ctrl-C kills gvpn-lab at once; the runtimes still see stdin EOF
	fmt.Fprintln(stderr, "gvpn-lab: stopping the lab …")
	srv.Close()
	if err := lab.Close(); err != nil {
		rd.close(false)
		return fail(stderr, "up", fmt.Errorf("teardown: %w (runtime logs: %s)", err, rd.logsDir()))
	}
	os.Remove(lock.Name()) // still held: no other up can be between this and the state dir's removal
	rd.close(true)
	fmt.Fprintf(stderr, "gvpn-lab: lab stopped; nothing left behind but the runtime logs in %s\n", rd.logsDir())
	return 0
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

func printBanner(w io.Writer, lab *golemnet.Lab, stateDir, logs string) {
	prog := progName()
	sd := ""
	if stateDir != DefaultStateDir {
		sd = " --state-dir " + stateDir
	}
	nodes := lab.Nodes()
	fmt.Fprintf(w, "gvpn-lab: %d node%s up on %s — Ctrl-C to stop\n\n", len(nodes), pluralS(len(nodes)), lab.Net())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tIP\tNETNS\tSHELL IN ITS NETWORK (uses the host's /etc/hosts: use IPs)")
	for _, n := range nodes {
		if n.VM {
			fmt.Fprintf(tw, "  %s\t%s\t(QEMU guest)\t%s exec %s -- sh -c '…' (busybox; no interactive shell)\n", n.Name, n.IP, progName(), n.Name)
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\tip netns exec %s bash\n", n.Name, n.IP, n.Netns, n.Netns)
	}
	tw.Flush()
	a, b := nodes[0].Name, nodes[0].Name
	if len(nodes) > 1 {
		b = nodes[1].Name
	}
	// The payload sees no host /tmp, /root or /home: the web server is
	// uploaded into the node's volume like a requestor's program.
	self, _ := os.Executable()
	if inside, err := lab.Install(a, self, "gvpn-lab"); err == nil {
		self = inside
	}
	fmt.Fprintln(w, "\nTry, in another terminal (commands run in the node through RunProcess):")
	tw = tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, l := range [][2]string{
		{fmt.Sprintf("exec%s %s -- ping -c 3 %s", sd, b, a), ""},
		{fmt.Sprintf("exec%s %s -- ip addr show vpn0", sd, a), ""},
		{fmt.Sprintf("exec%s %s -- %s serve-http", sd, a, self), "# a web server on " + a + " …"},
		{fmt.Sprintf("exec%s %s -- curl -s http://%s:8080/", sd, b, a), "# … fetched by name from " + b},
		{fmt.Sprintf("fault%s %s --latency 50ms", sd, a), "# or --cut, --loss 0.1, --restore"},
		{fmt.Sprintf("status%s", sd), ""},
	} {
		fmt.Fprintf(tw, "  %s %s\t%s\n", prog, l[0], l[1])
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRuntime logs: %s\n", logs)
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

// nodeFinder finds a node whose ExeUnit runs the commands of exec.
type nodeFinder interface {
	Lookup(name string) (*golemnet.LabNode, error)
}

// controlServer serves the control socket of an `up` lab (and, in the
// Docker lab, of each node's and the hub's container).
type controlServer struct {
	ln     net.Listener
	path   string
	lab    nodeFinder
	log    *logrus.Entry
	status func() StatusJSON
	// setFault answers a fault request.
	setFault func(ctlRequest) ctlReply
	// proxy, if set, runs exec requests instead of lab (the Docker lab
	// passes them to the node's container).
	proxy func(ctx context.Context, c net.Conn, sc *bufio.Scanner, enc *json.Encoder, req ctlRequest)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]bool
}

func serveControl(stateDir string, lab *golemnet.Lab, log *logrus.Entry, status func() StatusJSON) (*controlServer, error) {
	return listenControl(socketPath(stateDir), &controlServer{lab: lab, log: log, status: status,
		setFault: func(req ctlRequest) ctlReply { return hubFault(lab.Lookup, req, log) }})
}

// listenControl serves the control protocol on the unix socket path (any
// socket there is taken to be stale) with the handlers in s (lab or proxy,
// log, status, setFault).
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
		if s.proxy != nil {
			s.proxy(s.ctx, c, sc, enc, req)
			return
		}
		s.exec(c, sc, enc, req)
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

// outQueue carries a command's output from the ExeUnit's reader goroutine
// (which must never block) to the connection's writer. Past maxQueued
// bytes, output is dropped and the client told so.
type outQueue struct {
	mu      sync.Mutex
	items   []ctlReply
	bytes   int
	dropped int
	ready   chan struct{}
}

const maxQueued = 32 << 20

func (q *outQueue) push(stdout, stderr []byte) {
	q.mu.Lock()
	if q.bytes+len(stdout)+len(stderr) > maxQueued {
		q.dropped += len(stdout) + len(stderr)
	} else {
		q.items = append(q.items, ctlReply{Stdout: stdout, Stderr: stderr})
		q.bytes += len(stdout) + len(stderr)
	}
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *outQueue) take() ([]ctlReply, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	items, dropped := q.items, q.dropped
	q.items, q.bytes, q.dropped = nil, 0, 0
	return items, dropped
}

func (s *controlServer) exec(c net.Conn, sc *bufio.Scanner, enc *json.Encoder, req ctlRequest) {
	n, err := s.lab.Lookup(req.Node)
	if err != nil {
		enc.Encode(ctlReply{Error: err.Error(), Code: 2})
		return
	}
	if n.ExeUnit == nil || n.ExeUnit.Exited() {
		enc.Encode(ctlReply{Error: fmt.Sprintf("node %s: its runtime is not running", n.Name), Code: 1})
		return
	}
	q := &outQueue{ready: make(chan struct{}, 1)}
	p, err := n.ExeUnit.SpawnStream(s.ctx, q.push, req.Argv[0], req.Argv[1:]...)
	if err != nil {
		code, msg := 1, err.Error()
		var ce *golemnet.CallError
		if errors.As(err, &ce) {
			msg = ce.Message
			if ce.Code == api.Response_NOT_FOUND {
				code = 127 // as a shell says "command not found"
			}
		}
		enc.Encode(ctlReply{Error: fmt.Sprintf("%s: %s", n.Name, msg), Code: code})
		return
	}
	log := s.log.WithFields(logrus.Fields{"node": n.Name, "pid": p.Pid, "argv": req.Argv})
	log.Info("exec started")

	exited := make(chan golemnet.Result, 1)
	go func() {
		r, _ := p.Wait(s.ctx)
		exited <- r
	}()
	// The client's later lines are signals; its going away kills the
	// command, as a terminal closing would.
	clientGone := make(chan struct{})
	go func() {
		defer close(clientGone)
		for sc.Scan() {
			r, err := decodeRequest(sc.Bytes())
			if err != nil || r.Op != "signal" {
				continue
			}
			if err := n.ExeUnit.KillProcess(s.ctx, p.Pid, syscall.Signal(r.Signal)); err != nil {
				log.WithError(err).Debug("signal not delivered")
			}
		}
	}()
	flush := func() bool {
		items, dropped := q.take()
		for _, it := range items {
			if enc.Encode(it) != nil {
				return false
			}
		}
		if dropped > 0 {
			msg := fmt.Sprintf("[gvpn-lab: %d bytes of output dropped: the client reads too slowly]\n", dropped)
			return enc.Encode(ctlReply{Stderr: []byte(msg)}) == nil
		}
		return true
	}
	for {
		select {
		case <-q.ready:
			if !flush() {
				s.kill(n, p.Pid)
			}
		case <-clientGone:
			clientGone = nil
			if !p.Exited() {
				log.Info("client went away: killing the command")
				s.kill(n, p.Pid)
			}
		case r := <-exited:
			flush()
			if s.ctx.Err() != nil && !p.Exited() {
				enc.Encode(ctlReply{Error: "the lab is shutting down", Code: 1})
				return
			}
			rc := r.ReturnCode
			log.WithField("rc", rc).Info("exec finished")
			enc.Encode(ctlReply{Exit: &rc})
			return
		}
	}
}

func (s *controlServer) kill(n *golemnet.LabNode, pid uint64) {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	n.ExeUnit.KillProcess(ctx, pid, syscall.SIGKILL)
}
