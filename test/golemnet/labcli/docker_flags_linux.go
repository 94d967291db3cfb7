package labcli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"

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
		ID: id, Names: names, IPs: vpnAddrs(net, len(names)), Net: net.Masked(), Gateway: cfg.Gateway, NoHosts: cfg.NoHosts,
		Subnet: subnet, Image: image, Dir: filepath.Join(stateDir, "docker", id), AgentNodes: f.agentNodes,
		SandboxPrefix: cfg.SandboxPrefix, RuntimeArgs: cfg.RuntimeArgs, Log: log,
	}
}
