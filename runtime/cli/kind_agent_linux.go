package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/network"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/runtime/sandbox/agent"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/runtime/volume"
	"github.com/gvpn/gvpn/vsock"
)

// agentKind runs the payload in a VM or container that --agent-command
// starts, with gvpn-agent inside, reached over a bridge
// (runtime/sandbox/agent).
var agentKind = &kind{
	name:  "agent",
	about: "agent (a VM or container started by\n--agent-command, with gvpn-agent inside)",
	flags: func(fs *flag.FlagSet, o *Options) {
		fs.StringVar(&o.AgentCommand, "agent-command", "", "agent sandbox: shell `command` that starts the payload with gvpn-agent inside;\nit gets GVPN_BRIDGE and GVPN_CONTROL and must stay in the foreground")
		fs.StringVar(&o.Bridge, "bridge", "", "agent sandbox: bridge data `address` to listen on, unix:///path or vsock://any:PORT\n(default unix:///run/gvpn/<sandbox name>/bridge.sock)")
		fs.StringVar(&o.BridgeControl, "bridge-control", "", "agent sandbox: control `address` to listen on (default: derived from --bridge)")
		fs.BoolVar(&o.BridgePlain, "bridge-plain", false, "agent sandbox: never ask gvpn-agent for superframes on the bridge (plain frames, the agent\nsegments at its TAP), as runtimes before them did; for comparisons and old peers' tests")
		fs.DurationVar(&o.AgentTimeout, "agent-timeout", 30*time.Second, "agent and vm sandboxes: how long (a `duration`) to wait for the agent's hello (a VM's boot)\nand for each of its answers (vm sandbox: 2m unless given)")
	},
	flagNames: []string{"agent-command", "bridge", "bridge-control", "bridge-plain", "agent-timeout"},
	validate: func(o *Options) error {
		if o.AgentTimeout <= 0 {
			return errors.New("--agent-timeout: must be positive")
		}
		for _, f := range []struct{ name, v string }{{"bridge", o.Bridge}, {"bridge-control", o.BridgeControl}} {
			if f.v == "" {
				continue
			}
			if _, err := vsock.ParseAddr(f.v); err != nil {
				return fmt.Errorf("--%s: %w", f.name, err)
			}
		}
		return nil
	},
	image: imageIgnored,
	// The agent command's launcher decides what the payload sees; no
	// workdir directory would reach it.
	volumes: func(*Options, volume.List) (volume.List, error) { return volume.List{}, nil },
	open: func(o *Options, a openArgs) (sandbox.Sandbox, network.Attacher, int) {
		box, err := openAgentSandbox(o, a.hostname, a.limits, a.logOut, a.log)
		if err != nil {
			a.log.WithError(err).Error("cannot start the agent sandbox")
			return nil, nil, 1
		}
		if !o.checkEnforced(box.Unenforced(), a.log) {
			box.Close()
			return nil, nil, 1
		}
		return box, box, 0
	},
}

// openAgentSandbox starts the payload for --sandbox agent: it listens on
// the bridge (by default a unix socket in /run/gvpn/<sandbox name>/, the
// directory the netns sandbox would use for this workdir), runs
// --agent-command and waits for the agent's hello. The command's output
// (the agent's logs among it) goes to logOut with the runtime's log.
func openAgentSandbox(o *Options, hostname string, lim limits.Limits, logOut io.Writer, log *logrus.Entry) (*agent.Box, error) {
	if o.AgentCommand == "" {
		return nil, fmt.Errorf("--sandbox agent needs --agent-command (the command that starts the payload with gvpn-agent inside)")
	}
	cfg := agent.Config{
		Launch: agent.Launch{
			Command: o.AgentCommand,
			Dir:     o.Workdir,
			Output:  logOut,

			LimitsName: netns.NameFor(o.SandboxPrefix, o.Workdir),
			Limits:     lim,
			Workdir:    o.Workdir,

			RequireLimits: o.RequireLimits,
		},
		Timeout:   o.AgentTimeout,
		NoVNetHdr: o.BridgePlain,
		Log:       log,
	}
	if o.Bridge == "" {
		dir := filepath.Join("/run/gvpn", netns.NameFor(o.SandboxPrefix, o.Workdir))
		cfg.Bridge = vsock.Addr{Scheme: vsock.SchemeUnix, Path: filepath.Join(dir, "bridge.sock")}
		cfg.SocketDir = dir
	} else {
		a, err := vsock.ParseAddr(o.Bridge)
		if err != nil {
			return nil, fmt.Errorf("--bridge: %w", err)
		}
		cfg.Bridge = a
	}
	if o.BridgeControl != "" {
		a, err := vsock.ParseAddr(o.BridgeControl)
		if err != nil {
			return nil, fmt.Errorf("--bridge-control: %w", err)
		}
		cfg.Control = a
	}
	if hostname != "" {
		cfg.Launch.Env = append(cfg.Launch.Env, agent.EnvHostname+"="+hostname)
	}
	// A SIGTERM while the payload boots must not leave it behind.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	box, err := agent.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	log.WithFields(logrus.Fields{"bridge": box.Bridge().String(), "control": box.Control().String()}).Info("agent sandbox ready")
	return box, nil
}
