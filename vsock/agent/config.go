// Package agent is gvpn-agent: the payload end of the gvpn bridge. It runs
// inside the payload VM or container, creates the VPN interface (a TAP,
// "vpn0") in its own network namespace, configures it the way Golem VPN
// expects, and pumps its frames to and from gvpn-runtime over the bridge
// (package vsock, wire format in docs/bridge.md).
//
// Two modes:
//
//   - managed (the default): the agent dials the runtime's control
//     connection, says hello, and is configured by configure requests; it
//     also runs and kills the payload's processes for the runtime
//     (RunProcess through the agent) and tears everything down on
//     shutdown;
//   - manual (--ip): the configuration comes from flags and there is no
//     control connection: for debugging, for a peer that is not a gvpn
//     runtime (QEMU's -netdev stream, another agent with --listen).
//
// Either way the payload may only speak as itself: the agent's pump drops
// (and counts) frames whose source MAC or IPv4 is not the interface's own,
// so a VM cannot poison the VPN's routing even with a rogue driver
// (gvpn-runtime checks again on its side).
//
// The code lives beside package vsock because it is the other end of that
// bridge; it shares the runtime's tap, netcfg and pump packages, so the
// agent and the netns sandbox set the interface up identically.
package agent

import (
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netns"

	"github.com/gvpn/gvpn/vsock"
)

// Config says how to run an agent.
type Config struct {
	// Bridge is the data address: dialled, or listened on with Listen.
	Bridge vsock.Addr
	// Control is the control address in managed mode; the zero Addr means
	// Bridge.Control().
	Control vsock.Addr
	// Listen makes the agent listen on Bridge instead of dialling it
	// (manual mode only: a runtime always listens itself).
	Listen bool
	// Manual, when set, is the interface configuration (manual mode: no
	// control connection). Its ID is ignored.
	Manual *vsock.Configure
	// HostsFile receives the hosts entries of a configuration; empty
	// means they are not written anywhere.
	HostsFile string
	// AgentID is sent in hello, for the runtime's logs; empty means the
	// hostname.
	AgentID string
	// NoVNetHdr keeps the bridge to plain frames: hello does not offer
	// superframes (docs/bridge.md §2.4), as an agent older than them would
	// not, and the agent segments and coalesces at its TAP.
	NoVNetHdr bool
	// NS is the network namespace of the interface; 0 means the agent's
	// own (netns.None()). Tests set it.
	NS netns.NsHandle
	// Backoff bounds the reconnect delays of both connections.
	Backoff vsock.BackoffOptions
	// StopTimeout is how long stopping waits after SIGTERM before it
	// SIGKILLs the payload's processes; zero means DefaultStopTimeout.
	StopTimeout time.Duration
	// DrainTimeout is how long an exited process's notice waits for its
	// output pipes to reach EOF; zero means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Log receives the agent's logs; nil discards them.
	Log *logrus.Entry
}
