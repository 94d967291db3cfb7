// Package cli is gvpn-runtime's command line: the exact shape the ExeUnit
// uses to call a runtime (golem-protocol.md §2) — global kebab-case flags,
// then one of offer-template, test, deploy, start, run — plus gvpn's own
// flags for operators and debugging. stdout carries only what the ExeUnit
// parses (JSON, or protobuf in service mode); every log line goes to stderr.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/netcfg/ifname"
	"github.com/gvpn/gvpn/runtime/endpoint"
	"github.com/gvpn/gvpn/runtime/logs"
	"github.com/gvpn/gvpn/runtime/network"
	"github.com/gvpn/gvpn/runtime/owner"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/runtime/sandbox/agent/vm"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/runtime/service"
	"github.com/gvpn/gvpn/runtime/volume"
)

// Version is stamped at build time (-ldflags -X).
var Version = "dev"

// Options are the parsed global flags.
type Options struct {
	Workdir        string
	TaskPackages   multiFlag
	CPUCores       string
	MemGiB         string
	StorageGiB     string
	VolumeOverride string
	Hostname       string
	VPNEndpoint    string
	INETEndpoint   string

	LogLevel      string
	LogFormat     string
	MTU           int
	TapName       string
	LocalEndpoint string
	StatsInterval time.Duration
	SandboxPrefix string
	PayloadUser   string
	PayloadRoot   bool

	// The sandbox kind and, for the agent sandbox, how to reach the payload.
	Sandbox       string
	Bridge        string
	BridgeControl string
	AgentCommand  string
	AgentTimeout  time.Duration

	// The VM sandbox's guest.
	VMKernel string
	VMInitrd string
	VMQEMU   string
	VMMemory int
	VMCPUs   int
	VMBridge string

	agentTimeoutSet bool // --agent-timeout was given
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

const usageHead = `gvpn-runtime — Golem VPN for Provider-side ExeUnit runtimes.

The ExeUnit supervisor runs it as a runtime plugin:

  gvpn-runtime [global flags] offer-template      print the offer template (JSON, lists the "vpn" capability)
  gvpn-runtime [global flags] test                check that this host can run Golem VPN (exit 0 = yes)
  gvpn-runtime --workdir W [flags] deploy --      validate W, remember deploy flags, print the deploy JSON
  gvpn-runtime --workdir W [--vpn-endpoint udp://127.0.0.1:P] start [args]
                                                  service mode: ya-runtime-api protobuf on stdin/stdout;
                                                  payload processes run in a network namespace with a
                                                  TAP device "vpn0" on the VPN
  gvpn-runtime ... run --entrypoint X -- args     not supported (gvpn is a service runtime)

Global flags (before the subcommand; "--flag value" and "--flag=value" both work):
`

const usageTail = `
Examples:
  # what yagna runs when the provider starts
  gvpn-runtime test
  # an activity, by hand: deploy, then talk protobuf on stdin/stdout
  gvpn-runtime --workdir /tmp/act1 deploy --
  gvpn-runtime --workdir /tmp/act1 --vpn-endpoint udp://127.0.0.1:40000 start
  # two runtimes wired to each other without an ExeUnit (debugging)
  gvpn-runtime -w /tmp/a --vpn-endpoint udp://127.0.0.1:7002 --debug-local-endpoint 127.0.0.1:7001 start
  gvpn-runtime -w /tmp/b --vpn-endpoint udp://127.0.0.1:7001 --debug-local-endpoint 127.0.0.1:7002 start
  # the payload in a VM with gvpn-agent inside, reached over vsock
  gvpn-runtime -w /tmp/a --sandbox agent --bridge vsock://any:5000 --agent-command 'exec /opt/start-vm.sh' start
  # the payload in a QEMU guest booted by the runtime (make vm-image first),
  # with a squashfs task package as its root
  gvpn-runtime -w /tmp/a --sandbox vm --task-package /tmp/debian.squashfs deploy --
  gvpn-runtime -w /tmp/a --sandbox vm --task-package /tmp/debian.squashfs --vpn-endpoint udp://127.0.0.1:40000 start

Logs go to stderr; send SIGUSR1 for the VPN counters. Docs: README.md, docs/.
`

func newFlagSet(stderr io.Writer) (*flag.FlagSet, *Options) {
	o := &Options{}
	fs := flag.NewFlagSet("gvpn-runtime", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Workdir, "workdir", "", "activity working directory (required by deploy and start)")
	fs.StringVar(&o.Workdir, "w", "", "short for --workdir")
	fs.Var(&o.TaskPackages, "task-package", "path of the downloaded task package (accepted; gvpn runs no image)")
	fs.StringVar(&o.CPUCores, "cpu-cores", "", "CPU cores from the agreement (accepted, logged)")
	fs.StringVar(&o.MemGiB, "mem-gib", "", "memory from the agreement (accepted, logged)")
	fs.StringVar(&o.StorageGiB, "storage-gib", "", "storage from the agreement (accepted, logged)")
	fs.StringVar(&o.VolumeOverride, "volume-override", "", "the Deploy command's volumes as JSON, e.g. {\"/golem/input\":{\"host\":{}},\"/scratch\":{\"ram\":{\"size\":\"1GiB\"}}};\ndeploy creates them in the workdir and lists the host ones as \"vols\" (/golem/work is always one)")
	fs.StringVar(&o.PayloadUser, "payload-user", "nobody", "netns sandbox: who payload processes run as: a user name, a uid, or uid:gid\n(never root; they get no capabilities either way)")
	fs.BoolVar(&o.PayloadRoot, "payload-root", false, "netns sandbox: UNSAFE: run payload processes as root with the runtime's capabilities;\nonly for payloads you trust (the log and `test` say so)")
	fs.StringVar(&o.Hostname, "hostname", "", "hostname of the payload (deploy remembers it for start)")
	fs.StringVar(&o.VPNEndpoint, "vpn-endpoint", "", "the ExeUnit's VPN data socket: udp://IP:PORT (what the ExeUnit passes),\nunix://PATH, tcp-connect://IP:PORT or tcp-listen://IP:PORT")
	fs.StringVar(&o.INETEndpoint, "inet-endpoint", "", "the ExeUnit's outbound-internet socket (accepted; INET is not supported)")
	fs.StringVar(&o.LogLevel, "log-level", envOr("GVPN_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env GVPN_LOG_LEVEL)")
	fs.StringVar(&o.LogFormat, "log-format", envOr("GVPN_LOG_FORMAT", "text"), "log format on stderr: text or json (env GVPN_LOG_FORMAT)")
	fs.IntVar(&o.MTU, "mtu", netcfg.DefaultMTU, "MTU of the VPN interface; every node of a network must agree")
	fs.StringVar(&o.TapName, "tap-name", netcfg.DefaultName, "name of the VPN interface inside the sandbox")
	fs.StringVar(&o.LocalEndpoint, "debug-local-endpoint", "", "pin the runtime's own data endpoint address (IP:PORT on loopback)\ninstead of a free port, to wire runtimes together by hand")
	fs.DurationVar(&o.StatsInterval, "stats-interval", 30*time.Second, "how often VPN counters go to the ExeUnit as a RuntimeStatus event (0 = never)")
	fs.StringVar(&o.SandboxPrefix, "sandbox-prefix", netns.DefaultPrefix, "prefix of the sandbox network namespace names")
	fs.StringVar(&o.Sandbox, "sandbox", "netns", "where the payload runs: netns (a network namespace on this host), vm (a QEMU guest\nthe runtime boots, the task package as its root) or agent (a VM or container\nstarted by --agent-command, with gvpn-agent inside)")
	fs.StringVar(&o.AgentCommand, "agent-command", "", "agent sandbox: shell command that starts the payload with gvpn-agent inside;\nit gets GVPN_BRIDGE and GVPN_CONTROL and must stay in the foreground")
	fs.StringVar(&o.Bridge, "bridge", "", "agent sandbox: bridge data address to listen on, unix:///path or vsock://any:PORT\n(default unix:///run/gvpn/<sandbox name>/bridge.sock)")
	fs.StringVar(&o.BridgeControl, "bridge-control", "", "agent sandbox: control address to listen on (default: derived from --bridge)")
	fs.DurationVar(&o.AgentTimeout, "agent-timeout", 30*time.Second, "agent and vm sandboxes: how long to wait for the agent's hello (a VM's boot)\nand for each of its answers (vm sandbox: 2m unless given)")
	fs.StringVar(&o.VMKernel, "vm-kernel", vmDefaultFile("vmlinuz"), "vm sandbox: guest kernel (make vm-image writes bin/vm/vmlinuz)")
	fs.StringVar(&o.VMInitrd, "vm-initrd", vmDefaultFile("initrd.img"), "vm sandbox: guest initramfs with gvpn-agent (make vm-image writes bin/vm/initrd.img)")
	fs.StringVar(&o.VMQEMU, "vm-qemu", "qemu-system-x86_64", "vm sandbox: the QEMU binary (KVM when /dev/kvm is usable, else TCG)")
	fs.IntVar(&o.VMMemory, "vm-memory", 512, "vm sandbox: guest memory in MiB")
	fs.IntVar(&o.VMCPUs, "vm-cpus", 1, "vm sandbox: guest CPUs")
	fs.StringVar(&o.VMBridge, "vm-bridge", "", "vm sandbox: how the agent in the guest reaches the runtime: virtio-serial or vsock\n(default: vsock where /dev/vhost-vsock is usable, else virtio-serial)")
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHead)
		fs.PrintDefaults()
		fmt.Fprint(stderr, usageTail)
	}
	return fs, o
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// Main runs the command line and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, o := newFlagSet(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fs.Visit(func(f *flag.Flag) { o.agentTimeoutSet = o.agentTimeoutSet || f.Name == "agent-timeout" })
	log, err := setupLog(o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "gvpn-runtime:", err)
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "gvpn-runtime: missing subcommand (offer-template, test, deploy, start, run); see --help")
		return 2
	}
	cmd, cmdArgs := rest[0], rest[1:]
	log = log.WithField("cmd", cmd)
	switch cmd {
	case "offer-template":
		return offerTemplate(stdout)
	case "test":
		return selfTest(o, stderr, log)
	case "deploy":
		return deploy(o, stdout, log)
	case "start":
		return start(o, cmdArgs, stdin, stdout, stderr, log)
	case "run":
		log.Error("per-command mode is not supported: gvpn-runtime is a service runtime; deploy reports startMode \"blocking\", and the ExeUnit sends Run commands as RunProcess requests to `start`")
		return 1
	case "help":
		fs.Usage()
		return 0
	}
	fmt.Fprintf(stderr, "gvpn-runtime: unknown subcommand %q; see --help\n", cmd)
	return 2
}

func setupLog(o *Options, stderr io.Writer) (*logrus.Entry, error) {
	l, err := logs.New(stderr, o.LogLevel, o.LogFormat)
	if err != nil {
		return nil, err
	}
	return logrus.NewEntry(l).WithField("runtime", "gvpn"), nil
}

// Capabilities is what the offer template advertises. Without "vpn" the
// ExeUnit never passes --vpn-endpoint nor sends a VPN CreateNetwork.
var Capabilities = []string{"vpn"}

func offerTemplate(stdout io.Writer) int {
	t := map[string]any{
		"constraints": "",
		"properties": map[string]any{
			"golem.runtime.capabilities": Capabilities,
		},
	}
	b, _ := json.Marshal(t)
	fmt.Fprintln(stdout, string(b))
	return 0
}

// deployment is what deploy leaves in the workdir for start: flags that the
// ExeUnit passes only to deploy.
type deployment struct {
	Hostname string      `json:"hostname,omitempty"`
	Volumes  volume.List `json:"volumes,omitempty"`
	Version  string      `json:"version"`
}

const deploymentFile = "gvpn-deployment.json"

type deployResult struct {
	Valid     map[string]string `json:"valid"`
	Vols      []volume.Vol      `json:"vols"`
	StartMode string            `json:"startMode"`
}

func deploy(o *Options, stdout io.Writer, log *logrus.Entry) int {
	fail := func(err error) int {
		log.WithError(err).Error("deploy failed")
		b, _ := json.Marshal(deployResult{Valid: map[string]string{"Err": err.Error()}, Vols: []volume.Vol{}, StartMode: "blocking"})
		stdout.Write(b)
		return 1
	}
	if err := checkWorkdir(o.Workdir); err != nil {
		return fail(err)
	}
	if o.Hostname != "" {
		if err := netcfg.CheckHostname(o.Hostname); err != nil {
			return fail(fmt.Errorf("--hostname: %w", err))
		}
	}
	vols, err := volume.Plan(o.VolumeOverride)
	if err != nil {
		return fail(err)
	}
	switch o.Sandbox {
	case "netns":
		if err := netns.CheckVolumes(vols); err != nil {
			return fail(err)
		}
	case "agent":
		// The agent command's launcher decides what the payload sees;
		// no workdir directory would reach it.
		vols = volume.List{}
	case "vm":
		if root := vmRoot(o); root != "" {
			if err := vm.CheckRoot(root); err != nil {
				return fail(err)
			}
		}
		if vols, err = vmVolumes(vols); err != nil {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("--sandbox must be netns, vm or agent, not %q", o.Sandbox))
	}
	u, root, err := payloadUser(o)
	if err != nil {
		return fail(err)
	}
	uid := int(u.UID)
	if root || o.Sandbox != "netns" {
		uid = os.Geteuid()
	}
	if err := vols.Prepare(o.Workdir, uid); err != nil {
		return fail(err)
	}
	d, _ := json.Marshal(deployment{Hostname: o.Hostname, Volumes: vols, Version: Version})
	if err := os.WriteFile(filepath.Join(o.Workdir, deploymentFile), d, 0o644); err != nil {
		return fail(fmt.Errorf("write deployment: %w", err))
	}
	log.WithFields(logrus.Fields{"workdir": o.Workdir, "hostname": o.Hostname, "vols": vols.Vols()}).Info("deployed")
	// Exactly one JSON object, nothing else: the ExeUnit parses stdout.
	b, _ := json.Marshal(deployResult{Valid: map[string]string{"Ok": ""}, Vols: vols.Vols(), StartMode: "blocking"})
	stdout.Write(b)
	return 0
}

func checkWorkdir(dir string) error {
	if dir == "" {
		return errors.New("--workdir is required")
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("workdir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("workdir %s is not a directory", dir)
	}
	probe, err := os.CreateTemp(dir, ".gvpn-probe-*")
	if err != nil {
		return fmt.Errorf("workdir %s is not writable: %w", dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	return nil
}

func start(o *Options, args []string, stdin io.Reader, stdout, stderr io.Writer, log *logrus.Entry) int {
	if err := checkWorkdir(o.Workdir); err != nil {
		log.WithError(err).Error("cannot start")
		return 1
	}
	// The operator's interface settings are checked now, by the rules
	// CreateNetwork applies, so that a bad flag stops the runtime with the
	// flag's name instead of failing every CreateNetwork.
	if err := ifname.Check(o.TapName); err != nil {
		log.WithError(err).Errorf("--tap-name %q", o.TapName)
		return 2
	}
	if err := netcfg.CheckMTU(o.MTU); err != nil {
		log.WithError(err).Error("--mtu")
		return 2
	}
	// One activity per workdir: a second start refuses before it touches
	// anything. The kernel drops the lock when this process dies.
	lock, err := owner.Lock(o.Workdir)
	if err != nil {
		log.WithError(err).Error("cannot start")
		return 1
	}
	defer lock.Unlock()
	sweep(o, log)
	hostname := o.Hostname
	var vols volume.List
	if b, err := os.ReadFile(filepath.Join(o.Workdir, deploymentFile)); err == nil {
		var d deployment
		if json.Unmarshal(b, &d) == nil {
			if hostname == "" {
				hostname = d.Hostname
			}
			vols = d.Volumes
		}
	} else {
		log.Warn("no deployment in the workdir (was deploy run?); starting with defaults")
	}
	if vols == nil {
		vols, _ = volume.Plan("")
	}
	var vpn *endpoint.URL
	if o.VPNEndpoint != "" {
		u, err := endpoint.Parse(o.VPNEndpoint)
		if err != nil {
			log.WithError(err).Error("--vpn-endpoint")
			return 2
		}
		vpn = &u
	}
	if o.INETEndpoint != "" {
		log.Warn("--inet-endpoint given, but outbound internet (INET) is not supported; a CreateNetwork for INET will be refused")
	}
	log.WithFields(logrus.Fields{"workdir": o.Workdir, "vpn_endpoint": o.VPNEndpoint, "args": args,
		"cpu_cores": o.CPUCores, "mem_gib": o.MemGiB, "version": Version}).Info("starting service")

	var (
		sbx      sandbox.Sandbox
		attacher network.Attacher
	)
	switch o.Sandbox {
	case "netns":
		u, root, err := payloadUser(o)
		if err != nil {
			log.WithError(err).Error("cannot start")
			return 2
		}
		if root {
			warnRoot(log)
		}
		sb, err := netns.Open(netns.Config{Workdir: o.Workdir, Hostname: hostname, Log: log, NamePrefix: o.SandboxPrefix,
			User: u, Root: root, Volumes: vols})
		if err != nil {
			log.WithError(err).Error("cannot create the sandbox")
			return 1
		}
		log.WithFields(logrus.Fields{"netns": sb.Name(), "payload": describePayload(u, root), "vols": vols.Vols()}).Info("sandbox ready")
		sbx, attacher = sb, sb
	case "agent":
		box, err := openAgentSandbox(o, hostname, stderr, log)
		if err != nil {
			log.WithError(err).Error("cannot start the agent sandbox")
			return 1
		}
		sbx, attacher = box, box
	case "vm":
		box, err := openVMSandbox(o, hostname, vols, stderr, log)
		if err != nil {
			log.WithError(err).Error("cannot start the VM sandbox")
			return 1
		}
		sbx, attacher = box, box
	default:
		log.Errorf("--sandbox must be netns, vm or agent, not %q", o.Sandbox)
		return 2
	}
	mgr := network.New(network.Options{
		VPN:      vpn,
		Endpoint: endpoint.Options{Local: o.LocalEndpoint},
		Attacher: attacher,
		Name:     o.TapName,
		MTU:      o.MTU,
		Log:      log,
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	interval := o.StatsInterval
	if interval == 0 {
		interval = -1
	}
	err = service.Serve(ctx, service.Config{
		In:            stdin,
		Out:           stdout,
		Version:       Version,
		Sandbox:       sbx,
		Network:       mgr,
		StatsInterval: interval,
		LogStats:      usr1,
		Log:           log,
	})
	if err != nil {
		log.WithError(err).Error("service stopped")
		return 1
	}
	return 0
}
