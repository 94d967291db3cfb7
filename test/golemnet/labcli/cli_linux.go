//go:build linux

package labcli

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/logs"
)

// DefaultStateDir holds the control socket of a running `up` lab and the
// run directories (work dirs, runtime logs) of running labs.
const DefaultStateDir = "/run/gvpn-lab"

// DefaultLogDir holds, per lab, the runtimes' log files; unlike the state
// dir it is kept after the lab stops.
const DefaultLogDir = "/var/log/gvpn-lab"

// Version is stamped at build time (-ldflags -X).
var Version = "dev"

// RuntimeName is the runtime binary gvpn-lab looks for next to itself.
const RuntimeName = "gvpn-runtime"

// command is one gvpn-lab subcommand: its name, its lines in the usage
// text ("" for the hidden ones, which run inside the lab's nodes and
// containers) and what runs it.
type command struct {
	name  string
	usage string
	run   func(args []string, stdout, stderr io.Writer) int
}

// commands are gvpn-lab's subcommands, in the usage text's order.
var commands = []command{
	{"demo", `  gvpn-lab demo [--json]                    3 nodes: ping every pair, HTTP by hostname,
                                            iperf3 throughput; a summary; tear down
`, demo},
	{"up", `  gvpn-lab up [--nodes N] [--net CIDR]      keep a lab running until Ctrl-C
`, up},
	{"exec", `  gvpn-lab exec NODE -- CMD [ARG...]        run CMD in NODE's sandbox through RunProcess
`, execCmd},
	{"status", `  gvpn-lab status [--json]                  nodes and counters of the running lab
`, status},
	{"fault", `  gvpn-lab fault NODE --cut|--restore|--latency D|--loss P
                                            make the Golem Net misbehave for NODE
  gvpn-lab fault NODE --partition|--heal|--pause|--unpause|--kill|--restart
                                            a real fault on NODE's container (--docker)
`, faultCmd},
	{"images", `  gvpn-lab images                           build the Docker lab's images offline
`, imagesCmd},
	{"mkimage", `  gvpn-lab mkimage --out F --busybox|--root D  make a GVMI task package offline (no Docker)
`, mkimageCmd},
	{"bench-docker", `  gvpn-lab bench-docker                     Docker lab vs local lab numbers for BENCHMARKS.md
`, benchDocker},
	{"serve-http", "", serveHTTP},
	{"ping", "", pingCmd},
	{"docker-node", "", dockerNode},
	{"docker-hub", "", dockerHub},
}

const usageIntro = `gvpn-lab — a whole Golem VPN on one machine, no yagna needed.

Each node is a real gvpn-runtime, started and spoken to exactly as yagna's
ExeUnit does (test, deploy, start, Hello, CreateNetwork, RunProcess,
Shutdown); a local hub plays the Golem Net between the nodes with the
ExeUnit's routing rules. Needs root (network namespaces, TAP devices).
With --docker, every node and the hub are containers of their own on a
Docker network (images built offline by gvpn-lab images).

Usage:
`

const usageOutro = `
Run "gvpn-lab COMMAND --help" for the flags and examples of each command;
"gvpn-lab --version" prints the version.

Examples:
  sudo gvpn-lab demo                        # the whole tour, under a minute
  sudo gvpn-lab up --nodes 3                # terminal 1: a lab until Ctrl-C
  sudo gvpn-lab exec node-b -- ping -c 3 node-a     # terminal 2
  sudo gvpn-lab fault node-a --latency 50ms
  sudo gvpn-lab status
  sudo gvpn-lab demo --docker               # the tour with every node a container
`

// mainUsage is the usage text: the listed commands' lines between the
// introduction and the examples.
func mainUsage() string {
	var b strings.Builder
	b.WriteString(usageIntro)
	for _, c := range commands {
		b.WriteString(c.usage)
	}
	b.WriteString(usageOutro)
	return b.String()
}

// commandNames lists the commands of the usage text.
func commandNames() string {
	var names []string
	for _, c := range commands {
		if c.usage != "" {
			names = append(names, c.name)
		}
	}
	return strings.Join(names, ", ")
}

// Main runs gvpn-lab with args (without the program name) and returns the
// exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage())
		return 2
	}
	name, rest := args[0], args[1:]
	for _, c := range commands {
		if c.name == name {
			return c.run(rest, stdout, stderr)
		}
	}
	switch name {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, mainUsage())
		return 0
	case "version", "--version":
		fmt.Fprintln(stdout, "gvpn-lab", Version)
		return 0
	}
	fmt.Fprintf(stderr, "gvpn-lab: unknown command %q (commands: %s; see gvpn-lab --help)\n", name, commandNames())
	return 2
}

// requireRoot fails unless the lab can create namespaces and TAPs here.
func requireRoot(what string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root: %s (try: sudo %s)", what, strings.Join(os.Args, " "))
	}
	return nil
}

// findRuntime returns the gvpn-runtime to use: flag, else next to this
// executable (bin/ after `make build`), else in PATH.
func findRuntime(flagValue string) (string, error) {
	if flagValue != "" {
		p, err := filepath.Abs(flagValue)
		if err != nil {
			return "", err
		}
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("--runtime %s: not an executable file", flagValue)
		}
		return p, nil
	}
	var tried []string
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), RuntimeName)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
		tried = append(tried, "next to "+self)
	}
	if p, err := exec.LookPath(RuntimeName); err == nil {
		return filepath.Abs(p)
	}
	tried = append(tried, "in PATH")
	return "", fmt.Errorf("%s not found (%s); build it with `make build` or pass --runtime PATH", RuntimeName, strings.Join(tried, ", nor "))
}

// newLog returns the lab's logger on stderr at level (logs.New, as the
// other binaries).
func newLog(level string, stderr io.Writer) (*logrus.Entry, error) {
	l, err := logs.New(stderr, level, "text")
	if err != nil {
		return nil, usagef("%v", err)
	}
	return logrus.NewEntry(l).WithField("prog", "gvpn-lab"), nil
}

// progName is how the user invoked gvpn-lab, for copy-pasteable examples.
func progName() string {
	if len(os.Args) > 0 && strings.Contains(os.Args[0], "/") && !strings.HasPrefix(os.Args[0], "/tmp/go-build") {
		return os.Args[0]
	}
	return "gvpn-lab"
}
