package labcli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/gvpn/gvpn/test/golemnet"
)

// labBackend is one kind of lab: local (each node's payload in a network
// namespace of this host, the hub in this process) or Docker (each node
// and the hub a container). demo and up are written once over it.
//
// The contract:
//   - Start brings up the hub and the nodes the back-end was made for (of
//     the kinds its config asks: plain, VM, image, agent), driving each
//     runtime as yagna's ExeUnit does — test, deploy, start, Hello,
//     CreateNetwork with the networks, hosts map (or none) and gateway
//     asked for, the runtimes' deploy output forwarded — and returns once
//     every runtime is up. It bounds its own bring-up time. On error it has
//     torn down what it made; Close is still safe.
//   - Nodes lists the nodes in order, once Start succeeded.
//   - Spawn starts argv in a node's payload through RunProcess; ServeExec
//     runs a control connection's exec request the same way, streaming the
//     output to the client and its signals to the command.
//   - Install makes the program src runnable in a node's payload and
//     returns the path to run it by.
//   - Status reads every node's state and counters (the hub's and the
//     runtime's).
//   - Fault applies a fault request. A fault the back-end cannot do is
//     refused with a reply of Code 2 that says so (a container fault on a
//     local lab); nothing changes then.
//   - Close shuts every runtime down as the ExeUnit does and removes every
//     process, namespace, container and network the lab made; it is
//     idempotent. Cleanup then removes the lab's files, keeping what keep
//     says, and returns where the runtimes' logs are ("" if not kept).
type labBackend interface {
	Start(ctx context.Context, progress func(node, step string)) (labInfo, error)
	Nodes() []labNode
	Spawn(ctx context.Context, node string, argv ...string) (labProc, error)
	ServeExec(ctx context.Context, c net.Conn, sc *bufio.Scanner, enc *json.Encoder, req ctlRequest)
	Install(node, src, name string) (string, error)
	Status(ctx context.Context) StatusJSON
	Fault(ctx context.Context, req ctlRequest) ctlReply
	Close() error
	Cleanup(keep keepFiles) (logs string)
}

// labProc is a command running in a node's payload.
type labProc interface {
	// Wait returns the command's output and return code once it ended.
	Wait(ctx context.Context) (golemnet.Result, error)
	// Stop kills the command if it still runs.
	Stop()
}

// labInfo is what a started lab says of itself, in its own words.
type labInfo struct {
	// Up says what came up, for the demo's first step.
	Up string
	// Where ends the banner's first line: where the nodes run.
	Where string
	// Gone says what teardown leaves behind: nothing, in its own terms.
	Gone string
	// Logs is where the runtimes' logs are while the lab runs.
	Logs string
	// Hints are further gvpn-lab commands for the banner's "Try" list,
	// Notes further lines for it (other tools' commands).
	Hints []tryLine
	Notes []string
}

// tryLine is a gvpn-lab command the banner suggests: the command, its
// arguments (after the state dir flag, if any) and a comment.
type tryLine struct{ cmd, args, comment string }

// labNode is one node of a started lab.
type labNode struct {
	Name string
	IP   netip.Addr
	// VM: the payload runs in a QEMU guest; Image: in a task package's
	// root. Either way it has busybox's tools, not the host's.
	VM, Image bool
	// Sandbox is where the payload runs (a namespace, a container).
	Sandbox string
	// Shell is a command that opens a shell beside the payload.
	Shell string
	Ready time.Duration
}

// busybox reports whether n's payload has busybox's tools rather than the
// host's (or the lab image's).
func (n labNode) busybox() bool { return n.VM || n.Image }

// keepFiles says what of a lab's files Cleanup keeps.
type keepFiles int

const (
	keepNothing keepFiles = iota // a passing demo: nobody was shown a path
	keepLogs                     // a lab that stopped cleanly: the logs whose path it printed
	keepAll                      // a failure: work dirs and logs, to debug
)

// labExec runs argv in a node's payload to its end.
func labExec(ctx context.Context, b labBackend, node string, argv ...string) (golemnet.Result, error) {
	p, err := b.Spawn(ctx, node, argv...)
	if err != nil {
		return golemnet.Result{}, err
	}
	defer p.Stop()
	return p.Wait(ctx)
}

// waitListening waits until a TCP socket listens on port in the node's
// payload, reading the kernel's socket tables from inside it.
func waitListening(ctx context.Context, b labBackend, node string, port uint16) error {
	for {
		// cat exits non-zero when IPv6 is off (no tcp6); its output counts.
		res, err := labExec(ctx, b, node, "cat", "/proc/net/tcp", "/proc/net/tcp6")
		if err != nil {
			return fmt.Errorf("node %s: waiting for a listener on port %d: %w", node, port, err)
		}
		if golemnet.TCPListening(res.Stdout, port) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s: nothing listens on TCP port %d: %w", node, port, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// iperf measures TCP throughput from node cli to node srv.
func iperf(ctx context.Context, b labBackend, cli, srv string, seconds int) (IperfRunResult, error) {
	port := strconv.Itoa(demoIperfPort)
	proc, err := b.Spawn(ctx, srv, "iperf3", "-s", "-1", "-p", port)
	if err != nil {
		return IperfRunResult{}, fmt.Errorf("%s: iperf3 -s: %w", srv, err)
	}
	defer proc.Stop()
	if err := waitListening(ctx, b, srv, demoIperfPort); err != nil {
		return IperfRunResult{}, err
	}
	res, err := labExec(ctx, b, cli, "iperf3", "-c", srv, "-p", port, "-t", strconv.Itoa(seconds), "-J")
	if err != nil {
		return IperfRunResult{}, fmt.Errorf("%s: iperf3 -c: %w", cli, err)
	}
	r, perr := ParseIperf3(res.Stdout)
	if perr != nil {
		return IperfRunResult{}, fmt.Errorf("%s → %s: exit %d: %v", cli, srv, res.ReturnCode, perr)
	}
	return IperfRunResult{From: cli, To: srv, Protocol: "tcp", Seconds: r.Seconds, BitsPerSecond: r.BitsPerSecond, Retransmits: r.Retransmits}, nil
}
