package labcli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const execUsage = `gvpn-lab exec — run a command in a node of the running lab.

Usage:
  gvpn-lab exec [--state-dir DIR] NODE [--] CMD [ARG...]

The command runs in NODE's sandbox through the runtime's RunProcess, the
path an ExeUnit's Run command takes: in the node's network namespace, with
its hostname and its /etc/hosts (every node's name resolves). Its output
streams back live; gvpn-lab exits with its return code. There is no stdin
and no terminal: for a shell use "ip netns exec NETNS bash" (see status).
Ctrl-C is passed on to the command.

Examples:
  sudo gvpn-lab exec node-b -- ping -c 3 node-a
  sudo gvpn-lab exec node-a -- ip -br addr
  sudo gvpn-lab exec node-c -- curl -s http://node-a:8080/
  sudo gvpn-lab exec node-b -- iperf3 -c node-a -t 5     # with iperf3 -s on node-a

Flags:
`

func execCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("exec", execUsage, stdout)
	stateDir := fs.String("state-dir", DefaultStateDir, "state `dir` of the lab (as given to up)")
	// Flags end at NODE: everything after it is the command's.
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.help()
			return 0
		}
		return fail(stderr, "exec", usagef("%v (see gvpn-lab exec --help)", err))
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return fail(stderr, "exec", usagef("missing NODE and command (e.g. gvpn-lab exec node-b -- ping -c 3 node-a)"))
	}
	node, argv := rest[0], rest[1:]
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 {
		return fail(stderr, "exec", usagef("missing the command to run on %s (e.g. gvpn-lab exec %s -- ip addr)", node, node))
	}
	if err := requireRoot("the lab's control socket is root's"); err != nil {
		return fail(stderr, "exec", err)
	}
	c, err := dialLab(*stateDir)
	if err != nil {
		return fail(stderr, "exec", err)
	}
	defer c.Close()
	cc := newCtlConn(c)
	if err := cc.send(ctlRequest{Op: "exec", Node: node, Argv: argv}); err != nil {
		return fail(stderr, "exec", err)
	}

	// Signals go to the command; a third one gives up on it.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	stopSignals := make(chan struct{})
	defer close(stopSignals)
	go func() {
		n := 0
		for {
			select {
			case <-stopSignals:
				return
			case s := <-sigs:
				n++
				sig := s.(syscall.Signal)
				if n == 2 {
					sig = syscall.SIGKILL
				}
				if n >= 3 {
					c.Close()
					return
				}
				cc.send(ctlRequest{Op: "signal", Signal: int(sig)})
			}
		}
	}()

	for {
		r, err := cc.next()
		if err != nil {
			return fail(stderr, "exec", err)
		}
		if len(r.Stdout) > 0 {
			stdout.Write(r.Stdout)
		}
		if len(r.Stderr) > 0 {
			stderr.Write(r.Stderr)
		}
		switch {
		case r.Error != "":
			fmt.Fprintf(stderr, "gvpn-lab exec: %s\n", r.Error)
			if r.Code == 0 {
				return 1
			}
			return r.Code
		case r.Exit != nil:
			return exitCode(*r.Exit)
		}
	}
}

const statusUsage = `gvpn-lab status — show the nodes and counters of the running lab.

Usage:
  gvpn-lab status [--json] [--state-dir DIR]

For each node: VPN address, sandbox network namespace, runtime pid, the
ExeUnit socket (what --vpn-endpoint names) and the runtime's endpoint, any
fault; then frames and drops as the hub saw them and as the runtime reports
them (every second, "gvpn.vpn" RuntimeStatus events).

Examples:
  sudo gvpn-lab status
  sudo gvpn-lab status --json | jq '.nodes[] | {name, hub}'

Flags:
`

func status(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status", statusUsage, stdout)
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	stateDir := fs.String("state-dir", DefaultStateDir, "state `dir` of the lab (as given to up)")
	if _, code, ok := parseFlags(fs, args, stderr, 0); !ok {
		return code
	}
	if err := requireRoot("the lab's control socket is root's"); err != nil {
		return fail(stderr, "status", err)
	}
	r, err := call(*stateDir, ctlRequest{Op: "status"})
	if err != nil {
		return fail(stderr, "status", err)
	}
	if r.Status == nil {
		return fail(stderr, "status", fmt.Errorf("the lab sent no status"))
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r.Status)
		return 0
	}
	writeStatus(stdout, *r.Status)
	return 0
}

const faultUsage = `gvpn-lab fault — make the Golem Net misbehave for one node.

Usage:
  gvpn-lab fault NODE [--cut | --uncut] [--latency D] [--loss P]
  gvpn-lab fault NODE --restore
  gvpn-lab fault NODE --partition|--heal|--pause|--unpause|--kill|--restart   (--docker labs)

The fault applies in the hub to every frame NODE sends or receives: --cut
drops them all (the node is unreachable), --latency delays them, --loss
drops each with probability P. Flags given change only their own setting;
--restore clears them all. TCP connections across a cut stall and resume
when it ends.

In a Docker lab (up --docker) the faults can also be real ones on the node's
container: --partition disconnects it from the Docker network, --heal
connects it again with its address, --pause and --unpause freeze and thaw
it, --kill kills it (the lab reports the node lost) and --restart starts it
again (its runtime rejoins with the same VPN address; fault waits for it).

Examples:
  sudo gvpn-lab fault node-a --cut
  sudo gvpn-lab fault node-a --uncut
  sudo gvpn-lab fault node-b --latency 50ms --loss 0.05
  sudo gvpn-lab fault node-b --restore
  sudo gvpn-lab fault node-c --partition     # then --heal

Flags:
`

func faultCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("fault", faultUsage, stdout)
	stateDir := fs.String("state-dir", DefaultStateDir, "state `dir` of the lab (as given to up)")
	cut := fs.Bool("cut", false, "drop every frame to and from the node")
	uncut := fs.Bool("uncut", false, "end a --cut, keeping latency and loss")
	latency := fs.Duration("latency", 0, "delay every frame by `D` (e.g. 50ms)")
	loss := fs.Float64("loss", 0, "drop each frame with `probability` P (0 to 1)")
	restore := fs.Bool("restore", false, "clear every fault of the node")
	dockerFault := map[string]*bool{}
	for _, name := range dockerFaults {
		dockerFault[name] = fs.Bool(name, false, dockerFaultHelp[name])
	}
	pos, code, ok := parseFlags(fs, args, stderr, 1)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return fail(stderr, "fault", usagef("missing NODE (e.g. gvpn-lab fault node-a --cut)"))
	}
	req := ctlRequest{Op: "fault", Node: pos[0], Restore: *restore}
	for _, name := range dockerFaults {
		if *dockerFault[name] {
			if req.Docker != "" {
				return fail(stderr, "fault", usagef("--%s and --%s together: one container fault at a time", req.Docker, name))
			}
			req.Docker = name
		}
	}
	if *cut && *uncut {
		return fail(stderr, "fault", usagef("--cut and --uncut together"))
	}
	if *cut || *uncut {
		v := *cut
		req.Cut = &v
	}
	if flagSet(fs, "latency") {
		if *latency < 0 || *latency > maxLatencyMs*time.Millisecond {
			return fail(stderr, "fault", usagef("--latency %v: want 0 to %v", *latency, maxLatencyMs*time.Millisecond))
		}
		ms := float64(*latency) / float64(time.Millisecond)
		req.LatencyMs = &ms
	}
	if flagSet(fs, "loss") {
		if !(*loss >= 0 && *loss <= 1) {
			return fail(stderr, "fault", usagef("--loss %v: want a probability from 0 to 1 (0.1 = 10%%)", *loss))
		}
		req.Loss = loss
	}
	given := req.Cut != nil || req.LatencyMs != nil || req.Loss != nil
	if req.Docker != "" && (given || *restore) {
		return fail(stderr, "fault", usagef("--%s comes alone", req.Docker))
	}
	if req.Docker == "" && *restore == given {
		return fail(stderr, "fault", usagef("give --restore, or one or more of --cut, --uncut, --latency, --loss"))
	}
	if err := requireRoot("the lab's control socket is root's"); err != nil {
		return fail(stderr, "fault", err)
	}
	r, err := call(*stateDir, req)
	if err != nil {
		code := 1
		if r.Code != 0 {
			code = r.Code
		}
		fail(stderr, "fault", err)
		return code
	}
	if r.Fault != nil {
		fmt.Fprintf(stdout, "%s: %s\n", pos[0], r.Fault)
	}
	if r.Done != "" {
		fmt.Fprintf(stdout, "%s: %s\n", pos[0], r.Done)
	}
	return 0
}

// dockerFaultHelp explains each Docker lab fault flag.
var dockerFaultHelp = map[string]string{
	"partition": "--docker lab: disconnect the node's container from the Docker network",
	"heal":      "--docker lab: connect it again, with its address",
	"pause":     "--docker lab: freeze the node's container (docker pause)",
	"unpause":   "--docker lab: thaw it",
	"kill":      "--docker lab: kill the node's container (docker kill)",
	"restart":   "--docker lab: restart it and wait until its runtime is up again",
}
