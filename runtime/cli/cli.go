// Package cli is gvpn-runtime's command line: the exact shape the ExeUnit
// uses to call a runtime (docs/protocol.md, "Command line") — global
// kebab-case flags, then one of offer-template, test, deploy, start, run —
// plus gvpn's own flags for operators and debugging. stdout carries only
// what the ExeUnit parses (JSON, or protobuf in service mode). In a real
// provider stderr is /dev/null, so deploy and start log to a file under
// <workdir>/logs/ (and to stderr only when it is a terminal or
// --log-stderr asks).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/netcfg/ifname"
	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/cmdflag"
	"github.com/gvpn/gvpn/runtime/endpoint"
	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/logs"
	"github.com/gvpn/gvpn/runtime/network"
	"github.com/gvpn/gvpn/runtime/owner"
	"github.com/gvpn/gvpn/runtime/proc"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/runtime/service"
	"github.com/gvpn/gvpn/runtime/volume"
)

// Version is stamped at build time (-ldflags -X).
var Version = "dev"

const prog = "gvpn-runtime"

// Options are the parsed flags.
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
	Entrypoint     string

	LogLevel      string
	LogFormat     string
	LogStderr     bool
	MTU           int
	TapName       string
	StatsInterval time.Duration
	ShowVersion   bool
	PayloadUser   string
	PayloadRoot   bool
	// UnsafeVolumeLinks lets the netns sandbox start on a kernel that
	// cannot make host volumes nosymfollow (see volume.List.MountHost).
	UnsafeVolumeLinks bool

	// The agreement's limits: what the host cannot enforce is fatal with
	// RequireLimits, else a warning.
	RequireLimits bool
	PidsLimit     int64

	// The sandbox kind and, for the agent sandbox, how to reach the payload.
	Sandbox       string
	SandboxPrefix string
	Bridge        string
	BridgeControl string
	AgentCommand  string
	AgentTimeout  time.Duration
	BridgePlain   bool

	LocalEndpoint       string
	AllowRemoteEndpoint bool
	StateEvents         bool

	vpn *endpoint.URL // --vpn-endpoint, parsed by validate

	// The VM sandbox's guest.
	VMKernel string
	VMInitrd string
	VMQEMU   string
	VMMemory int
	VMCPUs   int
	VMBridge string

	agentTimeoutSet bool // --agent-timeout was given
	payloadUserSet  bool // --payload-user was given
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

const usageHead = `gvpn-runtime — Golem VPN for Provider-side ExeUnit runtimes.

The ExeUnit supervisor runs it as a runtime plugin:

  gvpn-runtime [flags] offer-template      print the offer template (JSON, lists the "vpn" capability)
  gvpn-runtime [flags] test                check that this host can run Golem VPN (exit 0 = yes)
  gvpn-runtime --workdir W [flags] deploy --
                                           check W, remember deploy flags, print the deploy JSON
  gvpn-runtime --workdir W [--vpn-endpoint udp://127.0.0.1:P] start [args]
                                           service mode: ya-runtime-api protobuf on stdin/stdout;
                                           payload processes run in a network namespace with a
                                           TAP device "vpn0" on the VPN
  gvpn-runtime ... run --entrypoint X -- args
                                           not supported (gvpn is a service runtime)

Flags may come before or after the subcommand ("--flag value" or "--flag=value");
after "--" everything is an argument.
`

const usageTail = `
Logs: deploy and start write <workdir>/logs/gvpn-runtime.log (rotated at 10 MB, 3 files kept),
and to stderr as well when it is a terminal or --log-stderr is given; a real provider sends the
runtime's stderr to /dev/null. The VPN counters (gvpn's drops by reason beside the kernel's drops
on the TAP and the endpoint socket) are logged every --stats-interval when they changed, on
SIGUSR1, and at teardown.

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

Docs: docs/protocol.md (the ExeUnit contract), docs/provider.md (installing on a provider).
`

// flagGroups orders the help text by who sets each flag (helpGroups with
// the kinds registered when the package starts).
var flagGroups = helpGroups()

// helpGroups orders the help text by who sets each flag; the sandbox
// kinds name their own.
func helpGroups() []cmdflag.Group {
	return []cmdflag.Group{
		{Title: "Passed by the ExeUnit (never set these in the descriptor)", Names: []string{
			"workdir", "w", "task-package", "cpu-cores", "mem-gib", "storage-gib", "volume-override",
			"hostname", "vpn-endpoint", "inet-endpoint", "entrypoint"}},
		{Title: "Operator settings (descriptor extra-args, as --runtime-arg=--flag=value)", Names: []string{
			"log-level", "log-format", "log-stderr", "mtu", "tap-name", "stats-interval", "require-limits", "pids-limit", "version"}},
		{Title: "Sandbox settings", Names: sandboxFlagNames()},
		{Title: "Debugging (not for production)", Names: []string{
			"debug-local-endpoint", "debug-allow-remote-endpoint", "debug-state-events"}},
	}
}

func newFlagSet() (*cmdflagSet, *Options) {
	o := &Options{}
	fs := cmdflag.New(prog)
	fs.StringVar(&o.Workdir, "workdir", "", "activity working `directory` (required by deploy and start)")
	fs.StringVar(&o.Workdir, "w", "", "short for --workdir (a `directory`)")
	fs.Var(&o.TaskPackages, "task-package", "`path` of the downloaded task package, the requestor's image: a GVMI, squashfs, docker save\nor OCI archive; deploy checks it, the sandbox runs the payload in it with its Env, WorkingDir,\nUser and Volumes (none: the host's directories, as with --runtime-managed-image)")
	fs.StringVar(&o.CPUCores, "cpu-cores", "", "CPU `cores` from the agreement: the payload's CPU quota")
	fs.StringVar(&o.MemGiB, "mem-gib", "", "memory in `GiB` from the agreement: the payload's memory limit")
	fs.StringVar(&o.StorageGiB, "storage-gib", "", "storage in `GiB` from the agreement: the size of the file system the payload writes to\n(volumes, /tmp)")
	fs.StringVar(&o.VolumeOverride, "volume-override", "", "the Deploy command's volumes as `JSON`, e.g. {\"/golem/input\":{\"host\":{}},\"/scratch\":{\"ram\":{\"size\":\"1GiB\"}}};\ndeploy creates them in the workdir and lists the host ones as \"vols\" (/golem/work is always one)")
	fs.StringVar(&o.Hostname, "hostname", "", "`hostname` of the payload (deploy remembers it for start)")
	fs.StringVar(&o.VPNEndpoint, "vpn-endpoint", "", "`URL` of the ExeUnit's VPN data socket: udp://127.0.0.1:PORT (what the ExeUnit passes),\nunix://PATH, tcp-connect://IP:PORT or tcp-listen://IP:PORT; loopback only")
	fs.StringVar(&o.INETEndpoint, "inet-endpoint", "", "`URL` of the ExeUnit's outbound-internet socket (accepted; INET is not supported)")
	fs.StringVar(&o.Entrypoint, "entrypoint", "", "run's entry `point` (run is not supported: gvpn is a service runtime)")
	fs.StringVar(&o.LogLevel, "log-level", envOr("GVPN_LOG_LEVEL", "info"), "log `level`: debug, info, warn, error (env GVPN_LOG_LEVEL)")
	fs.StringVar(&o.LogFormat, "log-format", envOr("GVPN_LOG_FORMAT", "text"), "log `format`: text or json (env GVPN_LOG_FORMAT)")
	fs.BoolVar(&o.LogStderr, "log-stderr", false, "log to stderr too, even when it is not a terminal")
	fs.IntVar(&o.MTU, "mtu", netcfg.DefaultMTU, fmt.Sprintf("`MTU` of the VPN interface, %d..%d; every node of a network must agree", netcfg.MinMTU, netcfg.MaxMTU))
	fs.StringVar(&o.TapName, "tap-name", netcfg.DefaultName, "`name` of the VPN interface inside the sandbox")
	fs.DurationVar(&o.StatsInterval, "stats-interval", 5*time.Minute, "`interval` at which the VPN counters are logged when they changed (0 = only on SIGUSR1\nand at teardown)")
	fs.BoolVar(&o.ShowVersion, "version", false, "print the version and exit")
	fs.BoolVar(&o.RequireLimits, "require-limits", false, "refuse to start an activity (and fail `test`) when this host cannot enforce one of the\nagreement's limits (no cgroup controller, not root, no loop device); default: warn")
	fs.Int64Var(&o.PidsLimit, "pids-limit", limits.DefaultPids, "most processes and threads a payload may have at once (0 = no limit); a `number`")
	fs.StringVar(&o.Sandbox, "sandbox", kinds[0].name, "`kind` of sandbox, where the payload runs: "+kindList(true))
	fs.StringVar(&o.SandboxPrefix, "sandbox-prefix", netns.DefaultPrefix, "`prefix` of the sandbox network namespace names")
	for _, k := range kinds {
		k.flags(fs, o)
	}
	fs.StringVar(&o.LocalEndpoint, "debug-local-endpoint", "", "pin the runtime's own data endpoint `address` (IP:PORT on loopback)\ninstead of a free port, to wire runtimes together by hand")
	fs.BoolVar(&o.AllowRemoteEndpoint, "debug-allow-remote-endpoint", false, "accept a --vpn-endpoint that is not on loopback (VPN frames leave the host)")
	fs.BoolVar(&o.StateEvents, "debug-state-events", false, "also send the VPN counters every --stats-interval as a RuntimeStatus state event\nnamed gvpn.vpn (the ExeUnit logs these as unsupported; gvpn-lab reads them)")
	return &cmdflagSet{fs}, o
}

// usage writes the whole help text.
func usage(w io.Writer, fs *cmdflagSet) {
	fmt.Fprint(w, usageHead)
	cmdflag.PrintFlags(w, fs.FlagSet, helpGroups())
	fmt.Fprint(w, usageTail)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// validate checks every flag where it enters, with the rules the rest of
// gvpn applies, so that a bad value never gets as far as CreateNetwork.
func (o *Options) validate() error {
	bad := func(flag string, err error) error { return fmt.Errorf("--%s: %w", flag, err) }
	if err := netcfg.CheckMTU(o.MTU); err != nil {
		return bad("mtu", err)
	}
	if err := ifname.Check(o.TapName); err != nil {
		return bad("tap-name", fmt.Errorf("%q: %w", o.TapName, err))
	}
	if _, err := logrus.ParseLevel(o.LogLevel); err != nil {
		return bad("log-level", fmt.Errorf("%q is not one of debug, info, warn, error", o.LogLevel))
	}
	if o.LogFormat != "text" && o.LogFormat != "json" {
		return bad("log-format", fmt.Errorf("%q is not text or json", o.LogFormat))
	}
	if o.StatsInterval < 0 {
		return bad("stats-interval", errors.New("negative"))
	}
	if err := o.checkKind(); err != nil {
		return err
	}
	if o.Hostname != "" {
		if err := netcfg.CheckHostname(o.Hostname); err != nil {
			return bad("hostname", err)
		}
	}
	if o.CPUCores != "" {
		if _, err := strconv.ParseUint(o.CPUCores, 10, 64); err != nil {
			return bad("cpu-cores", fmt.Errorf("%q is not a whole number", o.CPUCores))
		}
	}
	if o.PidsLimit < 0 {
		return bad("pids-limit", fmt.Errorf("%d is negative", o.PidsLimit))
	}
	if _, err := o.limits(); err != nil {
		return err
	}
	if o.VolumeOverride != "" && !json.Valid([]byte(o.VolumeOverride)) {
		return bad("volume-override", errors.New("not JSON"))
	}
	if o.VPNEndpoint != "" {
		u, err := endpoint.Parse(o.VPNEndpoint)
		if err != nil {
			return bad("vpn-endpoint", err)
		}
		if !u.Local() && !o.AllowRemoteEndpoint {
			return bad("vpn-endpoint", fmt.Errorf("%s is not on loopback (the ExeUnit always passes 127.0.0.1); --debug-allow-remote-endpoint accepts it", u))
		}
		o.vpn = &u
	}
	if o.INETEndpoint != "" {
		if _, err := endpoint.Parse(o.INETEndpoint); err != nil {
			return bad("inet-endpoint", err)
		}
	}
	if o.LocalEndpoint != "" {
		ap, err := netip.ParseAddrPort(o.LocalEndpoint)
		if err != nil || !ap.Addr().Unmap().Is4() {
			return bad("debug-local-endpoint", fmt.Errorf("%q is not an IPv4 IP:PORT", o.LocalEndpoint))
		}
		if !ap.Addr().IsLoopback() && !o.AllowRemoteEndpoint {
			return bad("debug-local-endpoint", fmt.Errorf("%s is not on loopback; --debug-allow-remote-endpoint accepts it", ap))
		}
	}
	return nil
}

// Main runs the command line and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, o := newFlagSet()
	pos, err := cmdflag.ParseInterspersed(fs.FlagSet, args)
	if err != nil {
		if cmdflag.IsHelp(err) {
			usage(stdout, fs)
			return 0
		}
		fmt.Fprintln(stderr, cmdflag.Explain(prog, err))
		return 2
	}
	fs.Visit(func(f *flag.Flag) {
		o.agentTimeoutSet = o.agentTimeoutSet || f.Name == "agent-timeout"
		o.payloadUserSet = o.payloadUserSet || f.Name == "payload-user"
	})
	if o.ShowVersion {
		fmt.Fprintln(stdout, prog, Version)
		return 0
	}
	if len(pos) == 0 {
		fmt.Fprintf(stderr, "%s: missing subcommand (offer-template, test, deploy, start, run); see %s --help\n", prog, prog)
		return 2
	}
	cmd, cmdArgs := pos[0], pos[1:]
	switch cmd {
	case "help":
		usage(stdout, fs)
		return 0
	case "offer-template", "test", "deploy", "start", "run":
	default:
		fmt.Fprintf(stderr, "%s: unknown subcommand %q; see %s --help\n", prog, cmd, prog)
		return 2
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 2
	}
	if withFileCapabilities() {
		if err := checkCallerPaths(o); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", prog, err)
			return 2
		}
	}
	logs, err := openLog(o, cmd, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 2
	}
	defer logs.Close()
	log := logs.entry.WithField("cmd", cmd)
	switch cmd {
	case "offer-template":
		return offerTemplate(stdout)
	case "test":
		return selfTest(o, stderr, log)
	case "deploy":
		return deploy(o, stdout, log)
	case "start":
		return start(o, cmdArgs, stdin, stdout, logs.out, log)
	}
	log.Error("per-command mode is not supported: gvpn-runtime is a service runtime; deploy reports startMode \"blocking\", and the ExeUnit sends Run commands as RunProcess requests to `start`")
	return 1
}

// cmdflagSet is the runtime's flag set.
type cmdflagSet struct{ *flag.FlagSet }

// Log rotation: a long activity must not fill the disk.
const (
	logMaxMB      = 10
	logMaxBackups = 2
)

type logSink struct {
	entry *logrus.Entry
	out   io.Writer // where the lines go
	file  io.Closer
}

func (l *logSink) Close() {
	if l.file != nil {
		l.file.Close()
	}
}

// openLog sets up logging for cmd. deploy and start log to
// <workdir>/logs/gvpn-runtime.log, because a real provider starts the
// ExeUnit with stderr on /dev/null (and deploy's stderr goes to the
// requestor): stderr gets the lines too only when it is a terminal or
// --log-stderr asks. test and offer-template have no workdir and log to
// stderr, which the provider shows.
func openLog(o *Options, cmd string, stderr io.Writer) (*logSink, error) {
	sink := &logSink{}
	var out io.Writer = stderr
	if (cmd == "deploy" || cmd == "start") && o.Workdir != "" {
		var w io.Writer
		// Mkdir, not MkdirAll: a missing workdir is deploy's error to
		// report, not something to create.
		// Nor through a symbolic link: the log directory and file must be
		// what they seem (see writeFileNoFollow).
		logDir := filepath.Join(o.Workdir, api.LogDir)
		if err := os.Mkdir(logDir, 0o750); (err == nil || errors.Is(err, os.ErrExist)) && realDir(logDir) && notALink(api.LogPath(o.Workdir)) {
			lj := &lumberjack.Logger{Filename: api.LogPath(o.Workdir), MaxSize: logMaxMB, MaxBackups: logMaxBackups}
			w, sink.file = lj, lj
		}
		watched := o.LogStderr || isTerminal(stderr)
		switch {
		case w == nil && cmd == "deploy" && !watched:
			// deploy's stderr goes to the requestor: its JSON says what
			// went wrong, without host paths.
			out = io.Discard
		case w == nil:
			// No usable workdir for start (it reports that): stderr is
			// the only place left.
		case watched:
			out = io.MultiWriter(w, stderr)
		default:
			out = w
		}
		if cmd == "deploy" && !watched {
			// The logging library reports a failed write (a full disk)
			// on the process's stderr, naming the log file: for deploy
			// that reaches the requestor. The line is lost instead.
			out = quietWriter{out}
		}
	}
	l, err := logs.New(out, o.LogLevel, o.LogFormat)
	if err != nil {
		sink.Close()
		return nil, err
	}
	sink.out = out
	sink.entry = logrus.NewEntry(l).WithField("runtime", "gvpn")
	return sink, nil
}

// quietWriter never fails: what w cannot take is dropped.
type quietWriter struct{ w io.Writer }

func (q quietWriter) Write(p []byte) (int, error) {
	q.w.Write(p)
	return len(p), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
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
	Image    *imageState `json:"image,omitempty"` // the task package, if any
	Version  string      `json:"version"`
}

const deploymentFile = "gvpn-deployment.json"

type deployResult struct {
	Valid     map[string]string `json:"valid"`
	Vols      []volume.Vol      `json:"vols"`
	StartMode string            `json:"startMode"`
}

// deploy checks the workdir and remembers deploy-only flags. The ExeUnit
// forwards deploy's stdout and stderr to the requestor, so stdout carries
// the JSON and nothing else, stderr nothing, and the JSON's error names no
// host path (the log file has the details).
func deploy(o *Options, stdout io.Writer, log *logrus.Entry) int {
	fail := func(public string, err error) int {
		log.WithError(err).Error("deploy failed")
		b, _ := json.Marshal(deployResult{Valid: map[string]string{"Err": public}, Vols: []volume.Vol{}, StartMode: "blocking"})
		stdout.Write(b)
		return 1
	}
	if err := checkWorkdir(o.Workdir); err != nil {
		return fail("the activity's work directory is missing or not writable", err)
	}
	vols, err := volume.Plan(o.VolumeOverride)
	if err != nil {
		return fail(err.Error(), err)
	}
	img, err := deployImage(o, log)
	if err != nil {
		return fail(public(err, taskPackage(o), o.Workdir), err)
	}
	if img != nil {
		var skipped []string
		if vols, skipped, err = vols.WithImage(img.Config.VolumePaths()); err != nil {
			return fail(err.Error(), err)
		}
		if len(skipped) > 0 {
			log.WithField("paths", skipped).Warn("the image declares volumes where the sandbox provides its own directories; not listed")
		}
		log.WithFields(logrus.Fields{"format": img.Format, "env": img.Config.Env, "working_dir": img.Config.WorkingDir,
			"user": img.Config.User, "volumes": img.Config.VolumePaths()}).Info("task package checked")
	}
	k := o.chosenKind()
	if k == nil {
		return fail("unknown sandbox kind", fmt.Errorf("--sandbox must be %s, not %q", kindList(false), o.Sandbox))
	}
	if vols, err = k.volumes(o, vols); err != nil {
		return fail(err.Error(), err)
	}
	u, root, err := payloadUser(o)
	if err != nil {
		return fail(err.Error(), err)
	}
	uid := int(u.UID)
	if root || !k.payloadOwnsVolumes {
		uid = os.Geteuid()
	}
	if err := vols.Prepare(o.Workdir, uid); err != nil {
		return fail("cannot create the volumes in the activity's work directory", err)
	}
	d, _ := json.Marshal(deployment{Hostname: o.Hostname, Volumes: vols, Image: img, Version: Version})
	if err := writeFileNoFollow(filepath.Join(o.Workdir, deploymentFile), d, 0o644); err != nil {
		return fail("cannot record the deployment in the activity's work directory", err)
	}
	log.WithFields(logrus.Fields{"workdir": o.Workdir, "hostname": o.Hostname, "vols": vols.Vols()}).Info("deployed")
	// Exactly one JSON object, nothing else: the ExeUnit parses stdout.
	b, _ := json.Marshal(deployResult{Valid: map[string]string{"Ok": ""}, Vols: vols.Vols(), StartMode: "blocking"})
	stdout.Write(b)
	return 0
}

// ramLimit is how much memory the RAM volumes may take together: the
// agreement's --mem-gib, or volume.DefaultRAMLimit when it states none.
// validate has checked the number.
func ramLimit(o *Options) (int64, string) {
	f, _ := strconv.ParseFloat(o.MemGiB, 64)
	if o.MemGiB == "" || f <= 0 {
		return volume.DefaultRAMLimit, "the agreement states no memory (--mem-gib): the default cap"
	}
	const maxLimit = 1 << 62
	if b := f * (1 << 30); b < maxLimit {
		return int64(b), "--mem-gib " + o.MemGiB
	}
	return maxLimit, "--mem-gib " + o.MemGiB
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

// start runs service mode. logOut is where the log goes (the log file, and
// stderr when someone watches); the agent sandbox's payload output joins it.
func start(o *Options, args []string, stdin io.Reader, stdout, logOut io.Writer, log *logrus.Entry) int {
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
	// The payload's processes get proc.OOMPayload; the runtime, which
	// holds the activity, is about the last the OOM killer picks.
	if err := proc.SetOOMScoreAdj(0, proc.OOMRuntime); err != nil {
		log.WithError(err).Warn("cannot lower the runtime's oom_score_adj (needs CAP_SYS_RESOURCE); its payload's processes are still the OOM killer's first choice")
	}
	sweep(o, log)
	hostname := o.Hostname
	var (
		vols volume.List
		img  *imageState
	)
	if b, err := readFileNoFollow(filepath.Join(o.Workdir, deploymentFile)); err == nil {
		var d deployment
		if json.Unmarshal(b, &d) == nil {
			if hostname == "" {
				hostname = d.Hostname
			}
			vols, img = d.Volumes, d.Image
		}
	} else {
		log.Warn("no deployment in the workdir (was deploy run?); starting with defaults")
	}
	if vols == nil {
		vols, _ = volume.Plan("")
	}
	vpn := o.vpn
	if o.INETEndpoint != "" {
		log.Warn("--inet-endpoint given, but outbound internet (INET) is not supported; a CreateNetwork for INET will be refused")
	}
	log.WithFields(logrus.Fields{"workdir": o.Workdir, "vpn_endpoint": o.VPNEndpoint, "args": args,
		"cpu_cores": o.CPUCores, "mem_gib": o.MemGiB, "storage_gib": o.StorageGiB, "version": Version, "pid": os.Getpid()}).Info("starting service")
	lim, _ := o.limits() // checked by validate

	k := o.chosenKind()
	if k == nil {
		log.Errorf("--sandbox must be %s, not %q", kindList(false), o.Sandbox)
		return 2
	}
	sbx, attacher, code := k.open(o, openArgs{hostname: hostname, vols: vols, img: img, limits: lim, logOut: logOut, log: log})
	if code != 0 {
		return code
	}
	stopUsage := logUsage(sbx, o.StatsInterval, log)
	defer stopUsage()
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
	err = service.Serve(ctx, service.Config{
		In:            stdin,
		Out:           stdout,
		Version:       Version,
		Sandbox:       sbx,
		Network:       mgr,
		StatsInterval: o.StatsInterval,
		StateEvents:   o.StateEvents,
		LogStats:      usr1,
		Log:           log,
	})
	if err != nil {
		log.WithError(err).Error("service stopped")
		return 1
	}
	return 0
}
