package labcli

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/dockerlab"
	"github.com/gvpn/gvpn/test/golemnet"
)

// DefaultDockerSubnet is the Docker lab's network unless --docker-subnet
// says otherwise: far from Docker's own pools (172.17-172.30 and
// 192.168.x) and from the VPN's default.
const DefaultDockerSubnet = "172.31.211.0/24"

// Addresses on the Docker network: the hub first, then the nodes.
const (
	dockerHubHost   = 2  // .2
	dockerNodeFirst = 10 // .10, .11, …
)

// dockerLabConfig says what lab to run in containers.
type dockerLabConfig struct {
	// ID names the lab: the gvpn.lab label, the prefix of its containers'
	// and network's names.
	ID      string
	Names   []string
	IPs     []netip.Addr
	Net     netip.Prefix
	Gateway golemnet.GatewayMode
	// NoHosts sends CreateNetwork without the hosts map.
	NoHosts bool
	Subnet  netip.Prefix
	Image   string
	// Dir holds one directory per container, mounted at the same path in
	// it (control socket, runtime logs, an agent node's bridge).
	Dir string
	// AgentNodes is how many of the last nodes run their payload in a
	// container of its own, reached over the agent bridge.
	AgentNodes    int
	SandboxPrefix string
	RuntimeArgs   []string
	Log           *logrus.Entry
	// Progress, if set, hears about each step (node "" for lab-wide ones).
	Progress func(node, step string)
}

// dockerLab is a lab whose nodes and hub are containers.
type dockerLab struct {
	cfg      dockerLabConfig
	flags    *dockerFlags
	buildLog io.Writer
	d        dockerlab.CLI
	network  string
	hub      dockerMember
	nodes    []*dockerMember
	byName   map[string]*dockerMember
	started  time.Time

	mu      sync.Mutex
	closing bool
	events  *exec.Cmd
	evDone  chan struct{}
}

// dockerMember is one container of the lab.
type dockerMember struct {
	Name      string
	IP        netip.Addr // VPN address (nodes)
	Container string
	Addr      netip.Addr // Docker network address
	Dir       string
	Agent     bool
	Payload   string // an agent node's payload container
	// Ready is how long the node took from docker run to answering with
	// its runtime up.
	Ready time.Duration

	mu          sync.Mutex
	partitioned bool
	lost        time.Time
}

// dockerLabID derives a lab's id from its state dir: one lab per state dir,
// so whatever carries the id and is not this run's is a crashed run's.
func dockerLabID(stateDir string) string {
	abs, _ := filepath.Abs(stateDir)
	sum := sha256.Sum256([]byte(abs))
	return "gvpn-lab-" + hex.EncodeToString(sum[:])[:8]
}

func (l *dockerLab) progress(node, step string) {
	if l.cfg.Progress != nil {
		l.cfg.Progress(node, step)
	}
}

func (l *dockerLab) label() string { return dockerlab.LabelLab + "=" + l.cfg.ID }

// newDockerLab makes a Docker lab back-end for cfg. Start builds (or
// reuses) the lab image as flags say, writing the build's output to
// buildLog, unless cfg.Image names one.
func newDockerLab(cfg dockerLabConfig, flags *dockerFlags, buildLog io.Writer) *dockerLab {
	return &dockerLab{cfg: cfg, flags: flags, buildLog: buildLog, network: cfg.ID, byName: map[string]*dockerMember{}}
}

// Start removes what a crashed lab of the same id left, then creates the
// network, the hub and the nodes, and waits until every node's runtime is
// up. On error everything is removed again.
func (l *dockerLab) Start(ctx context.Context, progress func(node, step string)) (labInfo, error) {
	l.cfg.Progress = progress
	if l.cfg.Image == "" {
		image, err := l.flags.dockerImage(ctx, l.d, l.buildLog)
		if err != nil {
			return labInfo{}, err
		}
		l.cfg.Image = image
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if c, n, err := l.d.RemoveLabeled(ctx, l.label()); err != nil {
		return labInfo{}, fmt.Errorf("removing a crashed lab's leftovers: %w", err)
	} else if c+n > 0 {
		l.cfg.Log.WithFields(logrus.Fields{"containers": c, "networks": n}).Warn("removed what a crashed lab left")
	}
	l.started = time.Now()
	if err := l.up(ctx); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = fmt.Errorf("%w (and tearing down: %v)", err, cerr)
		}
		return labInfo{}, err
	}
	a := l.nodes[0]
	return labInfo{
		Up: fmt.Sprintf("%s; %d node container%s + hub on %s; ready after %s",
			l.cfg.Image, len(l.nodes), pluralS(len(l.nodes)), l.cfg.Subnet, l.readyTimes()),
		Where: fmt.Sprintf(" in containers (Docker network %s, %s)", l.network, l.cfg.Subnet),
		Gone:  "every node's runtime shut down; no container or network left",
		Logs:  filepath.Join(l.cfg.Dir, "<node>", "logs"),
		Hints: []tryLine{{"fault", a.Name + " --partition", "# --heal, --pause, --unpause, --kill, --restart"}},
		Notes: []string{
			fmt.Sprintf("docker ps --filter label=%s=%s", dockerlab.LabelLab, l.cfg.ID),
			fmt.Sprintf("docker exec -it %s bash          # the node's container, beside its ExeUnit", a.Container),
		},
	}, nil
}

func (l *dockerLab) Nodes() []labNode {
	out := make([]labNode, 0, len(l.nodes))
	for _, n := range l.nodes {
		ln := labNode{Name: n.Name, IP: n.IP, Sandbox: n.Container, Ready: n.Ready,
			Shell: fmt.Sprintf("docker exec -it %s ip netns exec %s bash", n.Container, netns.NameFor(l.cfg.SandboxPrefix, dockerNodeWorkdir))}
		if n.Agent {
			ln.Sandbox, ln.Shell = n.Payload+" (gvpn-agent)", "docker exec -it "+n.Payload+" bash"
		}
		out = append(out, ln)
	}
	return out
}

// Install finds the program in the node's payload: the lab image carries
// gvpn-lab, so there is nothing to upload.
func (l *dockerLab) Install(node, _, name string) (string, error) {
	if _, err := l.Lookup(node); err != nil {
		return "", err
	}
	if name != "gvpn-lab" {
		return "", fmt.Errorf("node %s: the lab image carries gvpn-lab only, not %s", node, name)
	}
	return name, nil
}

// Cleanup removes the lab's directory (control sockets, runtime logs)
// unless keep is keepAll: its logs live in the state dir, which a lab
// that stopped leaves empty.
func (l *dockerLab) Cleanup(keep keepFiles) string {
	if keep == keepAll {
		return l.cfg.Dir
	}
	os.RemoveAll(l.cfg.Dir)
	os.Remove(filepath.Dir(l.cfg.Dir))               // the state dir's docker/, if empty
	os.Remove(filepath.Dir(filepath.Dir(l.cfg.Dir))) // the state dir, if empty
	return ""
}

func (l *dockerLab) up(ctx context.Context) error {
	cfg := l.cfg
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return err
	}
	base := cfg.Subnet.Masked().Addr().As4()
	at := func(host int) netip.Addr {
		b := base
		b[3] += byte(host)
		return netip.AddrFrom4(b)
	}
	l.hub = dockerMember{Name: "hub", Container: cfg.ID + "-hub", Addr: at(dockerHubHost), Dir: filepath.Join(cfg.Dir, "hub")}
	for i, name := range cfg.Names {
		m := &dockerMember{Name: name, IP: cfg.IPs[i], Container: cfg.ID + "-" + name, Addr: at(dockerNodeFirst + i),
			Dir: filepath.Join(cfg.Dir, name), Agent: i >= len(cfg.Names)-cfg.AgentNodes}
		if m.Agent {
			m.Payload = m.Container + "-payload"
		}
		l.nodes = append(l.nodes, m)
		l.byName[name] = m
	}
	for _, m := range append([]*dockerMember{&l.hub}, l.nodes...) {
		os.RemoveAll(m.Dir)
		if err := os.MkdirAll(filepath.Join(m.Dir, "bridge"), 0o755); err != nil {
			return err
		}
	}

	if _, note := dockerlab.PrivilegedArgs(); note != "" {
		cfg.Log.Warn(note)
	}
	l.progress("", "network")
	if _, err := l.d.Run(ctx, "network", "create", "--driver", "bridge", "--internal",
		"--subnet", cfg.Subnet.String(), "--label", l.label(), "--label", dockerlab.LabelNode+"=hub", l.network); err != nil {
		return err
	}
	if err := l.watchEvents(); err != nil {
		return err
	}
	l.progress("hub", "docker run")
	hubArgs := []string{"docker-hub", "--dir", l.hub.Dir, "--net", cfg.Net.String()}
	for _, n := range l.nodes {
		hubArgs = append(hubArgs, "--node", fmt.Sprintf("%s=%s@%s", n.Name, n.IP, n.Addr))
	}
	if err := l.run(ctx, &l.hub, "hub", nil, hubArgs); err != nil {
		return err
	}
	if err := waitSocket(ctx, l.hub.Dir); err != nil {
		return fmt.Errorf("hub: %w%s", err, l.containerLogs(l.hub.Container))
	}

	errs := make([]error, len(l.nodes))
	var wg sync.WaitGroup
	for i, n := range l.nodes {
		wg.Go(func() { errs[i] = l.startNode(ctx, n, i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// run starts one container of the lab.
func (l *dockerLab) run(ctx context.Context, m *dockerMember, role string, extra, cmd []string) error {
	args := []string{"run", "-d", "--name", m.Container, "--hostname", m.Name, "--init",
		"--network", l.network, "--ip", m.Addr.String(),
		"--label", l.label(), "--label", dockerlab.LabelNode + "=" + m.Name, "--label", dockerlab.LabelRole + "=" + role,
		"-v", m.Dir + ":" + m.Dir}
	args = append(append(args, extra...), l.cfg.Image, "gvpn-lab")
	_, err := l.d.Run(ctx, append(args, cmd...)...)
	return err
}

func (l *dockerLab) startNode(ctx context.Context, n *dockerMember, i int) error {
	t0 := time.Now()
	args := []string{"docker-node", "--name", n.Name, "--ip", n.IP.String(), "--net", l.cfg.Net.String(),
		"--gateway", string(l.cfg.Gateway), "--golem-net", netip.AddrPortFrom(l.hub.Addr, uint16(dockerHubPortBase+i)).String(),
		"--dir", n.Dir, "--sandbox-prefix", l.cfg.SandboxPrefix}
	if !l.cfg.NoHosts {
		for j, o := range l.nodes {
			args = append(args, "--host", o.Name+"="+l.cfg.IPs[j].String())
		}
	}
	for _, a := range l.cfg.RuntimeArgs {
		args = append(args, "--runtime-arg="+a)
	}
	// A node may create namespaces and TAPs: it is privileged, as the
	// provider host an ExeUnit runs on is. /run is its own each start.
	priv, _ := dockerlab.PrivilegedArgs()
	extra := append(priv, "--tmpfs", "/run")
	if n.Agent {
		dockerBin, err := exec.LookPath("docker")
		if err != nil {
			return err
		}
		// The runtime starts the payload container itself, through the
		// host's engine; the bridge socket lives in the shared directory
		// so that the payload container can mount it.
		bridge := filepath.Join(n.Dir, "bridge", "bridge.sock")
		extra = append(extra, "-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", dockerBin+":/usr/local/bin/docker:ro")
		args = append(args, "--runtime-arg=--sandbox=agent", "--runtime-arg=--bridge=unix://"+bridge,
			"--runtime-arg=--agent-command="+l.payloadCommand(n))
	}
	l.progress(n.Name, "docker run")
	if err := l.run(ctx, n, "node", extra, args); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	l.progress(n.Name, "runtime")
	if err := l.waitNode(ctx, n); err != nil {
		return err
	}
	n.Ready = time.Since(t0)
	l.cfg.Log.WithFields(logrus.Fields{"node": n.Name, "container": n.Container, "address": n.Addr,
		"ip": n.IP, "ready": n.Ready.Round(time.Millisecond)}).Info("lab: node up")
	l.progress(n.Name, "up")
	return nil
}

// payloadCommand is an agent node's --agent-command: a container of its
// own, without a network of its own and unprivileged, with gvpn-agent
// dialling the runtime's bridge socket (GVPN_BRIDGE, GVPN_CONTROL).
func (l *dockerLab) payloadCommand(n *dockerMember) string {
	dir := filepath.Join(n.Dir, "bridge")
	return fmt.Sprintf("docker rm -f %[1]s >/dev/null 2>&1; exec docker run --rm --name %[1]s --hostname %[2]s --init "+
		"--label %[3]s --label %[4]s=%[2]s --label %[5]s=payload "+
		"--network none --cap-add NET_ADMIN --device /dev/net/tun "+
		"-e GVPN_BRIDGE -e GVPN_CONTROL -e GVPN_HOSTNAME -v %[6]s:%[6]s %[7]s gvpn-agent",
		n.Payload, n.Name, l.label(), dockerlab.LabelNode, dockerlab.LabelRole, dir, l.cfg.Image)
}

// waitSocket waits until a control socket in dir answers status.
func waitSocket(ctx context.Context, dir string) error {
	for {
		if _, err := memberCall(dir, ctlRequest{Op: "status"}, 2*time.Second); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no answer on %s: %w", filepath.Join(dir, ControlSocketName), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitNode waits until the node's runtime answers (after CreateNetwork),
// or its container stopped.
func (l *dockerLab) waitNode(ctx context.Context, n *dockerMember) error {
	for {
		r, err := memberCall(n.Dir, ctlRequest{Op: "status"}, 2*time.Second)
		if err == nil && r.Status != nil && len(r.Status.Nodes) == 1 && r.Status.Nodes[0].Alive {
			return nil
		}
		if st, _ := l.d.Run(ctx, "inspect", "--format", "{{.State.Status}}", n.Container); st == "exited" || st == "dead" {
			return fmt.Errorf("node %s: its container stopped during bring-up%s", n.Name, l.containerLogs(n.Container))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s: not up: %w%s", n.Name, ctx.Err(), l.containerLogs(n.Container))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// containerLogs quotes the last lines a container wrote, for errors.
func (l *dockerLab) containerLogs(name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "logs", "--tail", "5", name)
	out, _ := cmd.CombinedOutput()
	if s := strings.TrimSpace(string(out)); s != "" {
		return " | container log: " + strings.ReplaceAll(s, "\n", " | ")
	}
	return ""
}

// memberCall sends one request to a container's control socket and
// returns the first reply line; an Error reply is an error.
func memberCall(dir string, req ctlRequest, timeout time.Duration) (ctlReply, error) {
	c, err := net.DialTimeout("unix", filepath.Join(dir, ControlSocketName), timeout)
	if err != nil {
		return ctlReply{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	cc := newCtlConn(c)
	if err := cc.send(req); err != nil {
		return ctlReply{}, err
	}
	r, err := cc.next()
	if err == nil && r.Error != "" {
		err = errors.New(r.Error)
	}
	return r, err
}

// watchEvents follows the engine's events for the lab's containers and
// logs what happens to them: a node that dies is reported lost.
func (l *dockerLab) watchEvents() error {
	cmd := exec.Command("docker", "events", "--filter", "label="+l.label(), "--filter", "type=container",
		"--format", "{{json .}}")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("docker events: %w", err)
	}
	l.events, l.evDone = cmd, make(chan struct{})
	go func() {
		defer close(l.evDone)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev struct {
				Action string `json:"Action"`
				Actor  struct {
					Attributes map[string]string `json:"Attributes"`
				} `json:"Actor"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			l.event(ev.Action, ev.Actor.Attributes)
		}
	}()
	return nil
}

func (l *dockerLab) event(action string, attrs map[string]string) {
	l.mu.Lock()
	closing := l.closing
	l.mu.Unlock()
	name := attrs[dockerlab.LabelNode]
	if attrs[dockerlab.LabelRole] == "payload" {
		name += " (payload container)"
	}
	log := l.cfg.Log.WithFields(logrus.Fields{"node": name, "container": attrs["name"]})
	m := l.byName[attrs[dockerlab.LabelNode]]
	switch action {
	case "die":
		if closing {
			return
		}
		if m != nil && attrs[dockerlab.LabelRole] == "node" {
			m.mu.Lock()
			m.lost = time.Now()
			m.mu.Unlock()
		}
		log.WithField("exit_code", attrs["exitCode"]).Warn("lab: container died: the node is lost until it restarts (gvpn-lab fault NODE --restart)")
	case "start":
		if m != nil && attrs[dockerlab.LabelRole] == "node" {
			m.mu.Lock()
			wasLost := !m.lost.IsZero()
			m.lost = time.Time{}
			m.mu.Unlock()
			if wasLost {
				log.Warn("lab: container started again: the node rejoins with its address")
			}
		}
	case "pause", "unpause", "kill", "restart":
		if !closing {
			log.Info("lab: container " + action)
		}
	}
}

// Lookup returns the node called name.
func (l *dockerLab) Lookup(name string) (*dockerMember, error) {
	if n := l.byName[name]; n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("%w %q (nodes: %s)", golemnet.ErrUnknownNode, name, strings.Join(l.cfg.Names, ", "))
}

// Fault sets a hub fault (cut, latency, loss: through the hub container's
// control socket) or does one of dockerFaults to the node's container.
func (l *dockerLab) Fault(ctx context.Context, req ctlRequest) ctlReply {
	n, err := l.Lookup(req.Node)
	if err != nil {
		return ctlReply{Error: err.Error(), Code: 2}
	}
	if req.Docker == "" {
		r, err := memberCall(l.hub.Dir, req, 10*time.Second)
		if err != nil {
			return ctlReply{Error: "hub: " + err.Error(), Code: 1}
		}
		return r
	}
	var args []string
	switch req.Docker {
	case "partition":
		args = []string{"network", "disconnect", "--force", l.network, n.Container}
	case "heal":
		args = []string{"network", "connect", "--ip", n.Addr.String(), l.network, n.Container}
	case "pause", "unpause", "kill":
		args = []string{req.Docker, n.Container}
	case "restart":
		args = []string{"restart", "--time", "10", n.Container}
	default:
		return ctlReply{Error: fmt.Sprintf("unknown fault %q (want one of %s)", req.Docker, strings.Join(dockerFaults, ", ")), Code: 2}
	}
	if _, err := l.d.Run(ctx, args...); err != nil {
		return ctlReply{Error: err.Error(), Code: 1}
	}
	n.mu.Lock()
	switch req.Docker {
	case "partition":
		n.partitioned = true
	case "heal":
		n.partitioned = false
	}
	n.mu.Unlock()
	msg := req.Docker
	if req.Docker == "restart" {
		t0 := time.Now()
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := l.waitNode(wctx, n)
		cancel()
		if err != nil {
			return ctlReply{Error: err.Error(), Code: 1}
		}
		msg = fmt.Sprintf("restarted; runtime up again as %s after %s", n.IP, time.Since(t0).Round(100*time.Millisecond))
	}
	l.cfg.Log.WithFields(logrus.Fields{"node": n.Name, "container": n.Container}).Info("fault: " + msg)
	return ctlReply{Done: msg}
}

// Status merges what Docker, the hub and each node say.
func (l *dockerLab) Status(ctx context.Context) StatusJSON {
	st := StatusJSON{Pid: os.Getpid(), Network: l.cfg.Net.String(), SandboxPrefix: l.cfg.SandboxPrefix,
		Started: l.started, Logs: l.cfg.Dir,
		Docker: &LabDockerJSON{LabID: l.cfg.ID, Network: l.network, Subnet: l.cfg.Subnet.String(), Image: l.cfg.Image,
			Hub: l.hub.Container, HubAddr: l.hub.Addr.String()}}
	states := l.containerStates(ctx)
	hub := map[string]NodeJSON{}
	if r, err := memberCall(l.hub.Dir, ctlRequest{Op: "status"}, 2*time.Second); err == nil && r.Status != nil {
		for _, n := range r.Status.Nodes {
			hub[n.Name] = n
		}
	}
	replies := make([]*StatusJSON, len(l.nodes))
	var wg sync.WaitGroup
	for i, n := range l.nodes {
		if states[n.Container].state != "running" {
			continue // a paused node would not answer
		}
		wg.Go(func() {
			if r, err := memberCall(n.Dir, ctlRequest{Op: "status"}, 2*time.Second); err == nil && r.Status != nil && len(r.Status.Nodes) == 1 {
				replies[i] = r.Status
			}
		})
	}
	wg.Wait()
	for i, n := range l.nodes {
		nj := NodeJSON{Name: n.Name, IP: n.IP.String()}
		if r := replies[i]; r != nil {
			nj = r.Nodes[0]
		}
		if h, ok := hub[n.Name]; ok {
			nj.Hub, nj.Fault = h.Hub, h.Fault
		}
		nj.ReadySeconds = n.Ready.Seconds()
		cs := states[n.Container]
		dj := &NodeDockerJSON{Container: n.Container, State: cs.state, Address: cs.addr, Payload: n.Payload}
		n.mu.Lock()
		if n.partitioned && cs.addr == "" && cs.state == "running" {
			dj.State = "partitioned"
		}
		if !n.lost.IsZero() {
			dj.Lost = n.lost.UTC().Format(time.RFC3339)
		}
		n.mu.Unlock()
		if cs.state != "running" {
			nj.Alive = false
		}
		nj.Docker = dj
		st.Nodes = append(st.Nodes, nj)
	}
	return st
}

type containerState struct{ state, addr string }

// containerStates inspects every container of the lab in one call.
func (l *dockerLab) containerStates(ctx context.Context) map[string]containerState {
	names := []string{l.hub.Container}
	for _, n := range l.nodes {
		names = append(names, n.Container)
	}
	format := `{{.Name}} {{.State.Status}} {{with index .NetworkSettings.Networks "` + l.network + `"}}{{.IPAddress}}{{end}}`
	out, _ := l.d.Run(ctx, append([]string{"inspect", "--format", format}, names...)...)
	return parseStates(out)
}

// parseStates reads containerStates' lines: "/NAME STATE [ADDRESS]".
func parseStates(out string) map[string]containerState {
	m := map[string]containerState{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			cs := containerState{state: f[1]}
			if len(f) >= 3 {
				cs.addr = f[2]
			}
			if name := strings.TrimPrefix(f[0], "/"); name != "" {
				m[name] = cs
			}
		}
	}
	return m
}

// ServeExec passes an exec request to the node's control socket and the
// conversation through both ways: the node's ExeUnit runs the command
// through RunProcess; the client's signals reach it; either side going
// away ends it (the node kills a command whose client left).
func (l *dockerLab) ServeExec(ctx context.Context, c net.Conn, sc *bufio.Scanner, enc *json.Encoder, req ctlRequest) {
	n, err := l.Lookup(req.Node)
	if err != nil {
		enc.Encode(ctlReply{Error: err.Error(), Code: 2})
		return
	}
	nc, err := net.DialTimeout("unix", filepath.Join(n.Dir, ControlSocketName), 5*time.Second)
	if err != nil {
		enc.Encode(ctlReply{Error: fmt.Sprintf("node %s does not answer (is its container running? see gvpn-lab status): %v", n.Name, err), Code: 1})
		return
	}
	defer nc.Close()
	line, _ := json.Marshal(req)
	if _, err := nc.Write(append(line, '\n')); err != nil {
		enc.Encode(ctlReply{Error: err.Error(), Code: 1})
		return
	}
	go func() {
		for sc.Scan() {
			if _, err := nc.Write(append(sc.Bytes(), '\n')); err != nil {
				break
			}
		}
		nc.Close() // the client left (or the lab is closing)
	}()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	io.Copy(c, nc)
}

// Close stops every container the way `docker stop` does (SIGTERM: the
// nodes shut their runtimes down as the ExeUnit does, the payload
// containers go with them), then removes every container and the network
// of the lab. It is idempotent.
func (l *dockerLab) Close() error {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return nil
	}
	l.closing = true
	l.mu.Unlock()
	l.progress("", "shutdown")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var names []string
	for _, n := range l.nodes {
		names = append(names, n.Container)
	}
	if len(names) > 0 {
		l.d.Run(ctx, append([]string{"stop", "--time", "10"}, names...)...)
	}
	_, _, err := l.d.RemoveLabeled(ctx, l.label())
	if l.events != nil {
		l.events.Process.Kill()
		l.events.Wait()
		<-l.evDone
	}
	if cs, ns, lerr := l.d.Labeled(ctx, l.label()); lerr == nil && len(cs)+len(ns) > 0 {
		err = errors.Join(err, fmt.Errorf("left behind: containers %v, networks %v", cs, ns))
	}
	l.progress("", "closed")
	return err
}

// nodeIP returns the VPN address of node i of a plan.
func vpnAddrs(pfx netip.Prefix, n int) []netip.Addr {
	ip := pfx.Masked().Addr().Next() // .1 stays free
	out := make([]netip.Addr, 0, n)
	for range n {
		ip = ip.Next()
		out = append(out, ip)
	}
	return out
}

// dockerReadyTimes formats the nodes' start-to-ready times.
func (l *dockerLab) readyTimes() string {
	var parts []string
	for _, n := range l.nodes {
		parts = append(parts, n.Name+" "+strconv.FormatFloat(n.Ready.Seconds(), 'f', 1, 64)+"s")
	}
	return strings.Join(parts, ", ")
}

// dockerProc is a command running in a Docker lab node, through the
// node's control socket (its ExeUnit's RunProcess).
type dockerProc struct {
	node string
	c    net.Conn
	cc   *ctlConn
}

// Spawn starts argv in the node and returns once the runtime runs it.
func (l *dockerLab) Spawn(ctx context.Context, node string, argv ...string) (labProc, error) {
	n, err := l.Lookup(node)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", filepath.Join(n.Dir, ControlSocketName))
	if err != nil {
		return nil, fmt.Errorf("node %s does not answer: %w", node, err)
	}
	p := &dockerProc{node: node, c: c, cc: newCtlConn(c)}
	if err := p.cc.send(ctlRequest{Op: "exec", Node: node, Argv: argv}); err != nil {
		c.Close()
		return nil, err
	}
	return p, nil
}

// Wait reads the command's output until it ends.
func (p *dockerProc) Wait(ctx context.Context) (golemnet.Result, error) {
	var res golemnet.Result
	stop := context.AfterFunc(ctx, func() { p.c.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		r, err := p.cc.next()
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return res, fmt.Errorf("%s: %w", p.node, err)
		}
		res.Stdout = append(res.Stdout, r.Stdout...)
		res.Stderr = append(res.Stderr, r.Stderr...)
		switch {
		case r.Error != "":
			return res, errors.New(r.Error)
		case r.Exit != nil:
			res.ReturnCode = *r.Exit
			return res, nil
		}
	}
}

// Stop ends the command (the node kills a command whose client left).
func (p *dockerProc) Stop() { p.c.Close() }
