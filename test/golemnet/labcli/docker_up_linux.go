package labcli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/test/dockerlab"
	"github.com/gvpn/gvpn/test/golemnet"
)

// dockerFlags are the flags of up and demo for the lab in containers.
type dockerFlags struct {
	docker     bool
	subnet     string
	agentNodes int
	image      string
	labID      string
	images     imageFlags
	// imageIsPackage: --image without --docker named a task package
	// (demo), not a lab image.
	imageIsPackage bool
}

func (f *dockerFlags) add(fs *cmdFlags) {
	fs.BoolVar(&f.docker, "docker", false, "run every node and the hub in a container of its own, joined by a Docker network")
	fs.StringVar(&f.subnet, "docker-subnet", DefaultDockerSubnet, "--docker: the Docker network's IPv4 `CIDR` (hub .2, nodes .10 onward)")
	fs.IntVar(&f.agentNodes, "agent-nodes", 0, "--docker: how many of the last `nodes` run their payload in a container of its own (gvpn-agent over a unix socket)")
	fs.StringVar(&f.image, "image", "", "--docker: use this lab `image` instead of building (or reusing) it like gvpn-lab images;\nwithout --docker (demo only): a task package file every node deploys with, as the ExeUnit\npasses a requestor's image (--task-package)")
	fs.StringVar(&f.labID, "lab-id", "", "--docker: the lab's `id` (label gvpn.lab, prefix of container names; default derived from --state-dir)")
	f.images.add(fs)
}

// check validates the Docker flags against the number of nodes.
func (f *dockerFlags) check(fs *cmdFlags, nodes int) (netip.Prefix, error) {
	if !f.docker {
		for _, name := range []string{"docker-subnet", "agent-nodes", "image", "lab-id", "bin", "dockerfile", "cache-dir"} {
			if flagSet(fs, name) && !(name == "image" && f.imageIsPackage) {
				return netip.Prefix{}, usagef("--%s needs --docker", name)
			}
		}
		return netip.Prefix{}, nil
	}
	sn, err := netip.ParsePrefix(f.subnet)
	if err != nil || !sn.Addr().Is4() || sn.Bits() > 24 || sn.Bits() < 8 {
		return sn, usagef("--docker-subnet %q: want an IPv4 CIDR from /8 to /24, like %s", f.subnet, DefaultDockerSubnet)
	}
	if dockerNodeFirst+nodes > 254 {
		return sn, usagef("--docker: at most %d nodes", 254-dockerNodeFirst)
	}
	if f.agentNodes < 0 || f.agentNodes > nodes {
		return sn, usagef("--agent-nodes %d: want 0 to %d (the number of nodes)", f.agentNodes, nodes)
	}
	if f.labID != "" && !validPrefix(f.labID) {
		return sn, usagef("--lab-id %q: use letters, digits and '-', at most 24 characters", f.labID)
	}
	return sn.Masked(), nil
}

// dockerImage returns the lab image: --image as given (it must exist), or
// built or reused as `gvpn-lab images` does.
func (f *dockerFlags) dockerImage(ctx context.Context, d dockerlab.CLI, progress io.Writer) (string, error) {
	if err := d.Ping(ctx); err != nil {
		return "", err
	}
	if f.image != "" {
		if !d.Exists(ctx, "image", f.image) {
			return "", fmt.Errorf("--image %s: no such image (build it with make images)", f.image)
		}
		return f.image, nil
	}
	cfg, err := f.images.config(progress)
	if err != nil {
		return "", err
	}
	im, err := dockerlab.Build(ctx, d, cfg)
	return im.Lab, err
}

// newDockerLabConfig builds the lab's config from the validated flags.
func newDockerLabConfig(cfg golemnet.LabConfig, f *dockerFlags, subnet netip.Prefix, stateDir, image string, log *logrus.Entry) dockerLabConfig {
	names := cfg.Hostnames
	if len(names) == 0 {
		for i := range cfg.Nodes {
			names = append(names, golemnet.LabNodeName(i))
		}
	}
	id := f.labID
	if id == "" {
		id = dockerLabID(stateDir)
	}
	net := cfg.Net
	if !net.IsValid() {
		net = netip.MustParsePrefix(golemnet.DefaultLabNet)
	}
	return dockerLabConfig{
		ID: id, Names: names, IPs: vpnAddrs(net, len(names)), Net: net.Masked(), Gateway: cfg.Gateway,
		Subnet: subnet, Image: image, Dir: filepath.Join(stateDir, "docker", id), AgentNodes: f.agentNodes,
		SandboxPrefix: cfg.SandboxPrefix, RuntimeArgs: cfg.RuntimeArgs, Log: log,
	}
}

func upDocker(cfg golemnet.LabConfig, lf *labFlags, f *dockerFlags, subnet netip.Prefix, log *logrus.Entry, stdout, stderr io.Writer) int {
	lock, err := lockStateDir(lf.stateDir)
	if err != nil {
		return fail(stderr, "up", err)
	}
	defer lock.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d := dockerlab.CLI{}
	image, err := f.dockerImage(ctx, d, stderr)
	if err != nil {
		return fail(stderr, "up", err)
	}
	dc := newDockerLabConfig(cfg, f, subnet, lf.stateDir, image, log)
	dc.Progress = func(node, step string) {
		if node != "" {
			log.WithFields(logrus.Fields{"node": node, "step": step}).Debug("bring-up")
		}
	}
	fmt.Fprintf(stderr, "gvpn-lab: starting %d node container%s and the hub on Docker network %s (%s) …\n",
		len(dc.Names), pluralS(len(dc.Names)), dc.ID, subnet)
	bringUp, cancel := context.WithTimeout(ctx, 3*time.Minute)
	lab, err := newDockerLab(bringUp, d, dc)
	cancel()
	if err != nil {
		return fail(stderr, "up", err)
	}
	srv, err := listenControl(socketPath(lf.stateDir), &controlServer{log: log,
		status:   func() StatusJSON { return lab.status(context.Background()) },
		setFault: func(req ctlRequest) ctlReply { return lab.fault(context.Background(), req) },
		proxy:    lab.proxyExec,
	})
	if err != nil {
		lab.Close()
		return fail(stderr, "up", err)
	}
	printDockerBanner(stdout, lab, lf.stateDir)

	<-ctx.Done()
	stop()
	fmt.Fprintln(stderr, "gvpn-lab: stopping the lab (docker stop, then removing containers and network) …")
	srv.Close()
	if err := lab.Close(); err != nil {
		return fail(stderr, "up", fmt.Errorf("teardown: %w", err))
	}
	os.RemoveAll(dc.Dir)
	fmt.Fprintln(stderr, "gvpn-lab: lab stopped; no container or network left")
	return 0
}

func printDockerBanner(w io.Writer, lab *dockerLab, stateDir string) {
	prog := progName()
	sd := ""
	if stateDir != DefaultStateDir {
		sd = " --state-dir " + stateDir
	}
	fmt.Fprintf(w, "gvpn-lab: %d node%s up in containers on %s (Docker network %s, %s) — Ctrl-C to stop\n\n",
		len(lab.nodes), pluralS(len(lab.nodes)), lab.cfg.Net, lab.network, lab.cfg.Subnet)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tIP\tCONTAINER\tDOCKER ADDRESS\tKIND\tREADY AFTER")
	for _, n := range lab.nodes {
		kind := "privileged node"
		if n.Agent {
			kind = "payload in " + n.Payload
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%.1fs\n", n.Name, n.IP, n.Container, n.Addr, kind, n.Ready.Seconds())
	}
	fmt.Fprintf(tw, "  hub\t-\t%s\t%s\tGolem Net\t\n", lab.hub.Container, lab.hub.Addr)
	tw.Flush()
	a, b := lab.nodes[0].Name, lab.nodes[0].Name
	if len(lab.nodes) > 1 {
		b = lab.nodes[1].Name
	}
	fmt.Fprintln(w, "\nTry, in another terminal:")
	tw = tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, l := range [][2]string{
		{fmt.Sprintf("exec%s %s -- ping -c 3 %s", sd, b, a), ""},
		{fmt.Sprintf("fault%s %s --partition", sd, a), "# --heal, --pause, --unpause, --kill, --restart"},
		{fmt.Sprintf("status%s", sd), ""},
	} {
		fmt.Fprintf(tw, "  %s %s\t%s\n", prog, l[0], l[1])
	}
	tw.Flush()
	fmt.Fprintf(w, "  docker ps --filter label=%s=%s\n", dockerlab.LabelLab, lab.cfg.ID)
	fmt.Fprintf(w, "  docker exec -it %s bash\n", lab.nodes[0].Container)
	fmt.Fprintf(w, "\nRuntime logs: %s/<node>/logs\n", lab.cfg.Dir)
}
