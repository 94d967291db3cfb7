package cli

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/sandbox/agent"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/vsock"
)

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
		Command:   o.AgentCommand,
		Dir:       o.Workdir,
		Timeout:   o.AgentTimeout,
		NoVNetHdr: o.BridgePlain,
		Output:    logOut,
		Log:       log,

		LimitsName: netns.NameFor(o.SandboxPrefix, o.Workdir),
		Limits:     lim,
		Workdir:    o.Workdir,

		RequireLimits: o.RequireLimits,
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
		cfg.Env = append(cfg.Env, agent.EnvHostname+"="+hostname)
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
