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

const mainUsage = `gvpn-lab — a whole Golem VPN on one machine, no yagna needed.

Each node is a real gvpn-runtime, started and spoken to exactly as yagna's
ExeUnit does (test, deploy, start, Hello, CreateNetwork, RunProcess,
Shutdown); a local hub plays the Golem Net between the nodes with the
ExeUnit's routing rules. Needs root (network namespaces, TAP devices).
With --docker, every node and the hub are containers of their own on a
Docker network (images built offline by gvpn-lab images).

Usage:
  gvpn-lab demo [--json]                    3 nodes: ping every pair, HTTP by hostname,
                                            iperf3 throughput; a summary; tear down
  gvpn-lab up [--nodes N] [--net CIDR]      keep a lab running until Ctrl-C
  gvpn-lab exec NODE -- CMD [ARG...]        run CMD in NODE's sandbox through RunProcess
  gvpn-lab status [--json]                  nodes and counters of the running lab
  gvpn-lab fault NODE --cut|--restore|--latency D|--loss P
                                            make the Golem Net misbehave for NODE
  gvpn-lab fault NODE --partition|--heal|--pause|--unpause|--kill|--restart
                                            a real fault on NODE's container (--docker)
  gvpn-lab images                           build the Docker lab's images offline
  gvpn-lab bench-docker                     Docker lab vs local lab numbers for BENCHMARKS.md

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

// Main runs gvpn-lab with args (without the program name) and returns the
// exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "demo":
		return demo(rest, stdout, stderr)
	case "up":
		return up(rest, stdout, stderr)
	case "exec":
		return execCmd(rest, stdout, stderr)
	case "status":
		return status(rest, stdout, stderr)
	case "fault":
		return faultCmd(rest, stdout, stderr)
	case "serve-http":
		return serveHTTP(rest, stdout, stderr)
	case "ping":
		return pingCmd(rest, stdout, stderr)
	case "images":
		return imagesCmd(rest, stdout, stderr)
	case "bench-docker":
		return benchDocker(rest, stdout, stderr)
	case "docker-node":
		return dockerNode(rest, stdout, stderr)
	case "docker-hub":
		return dockerHub(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, mainUsage)
		return 0
	case "version", "--version":
		fmt.Fprintln(stdout, "gvpn-lab", Version)
		return 0
	}
	fmt.Fprintf(stderr, "gvpn-lab: unknown command %q (commands: demo, up, exec, status, fault, images, bench-docker; see gvpn-lab --help)\n", cmd)
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
