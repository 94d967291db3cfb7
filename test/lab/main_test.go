// Package lab tests gvpn-lab and the golemnet.Lab it stands on, as root:
// whole multi-node Golem VPNs on this machine, with real gvpn-runtime
// processes, the kernel's own ping, curl and iperf3 as payload traffic,
// nodes killed and links cut mid-transfer.
package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/runtime/sandbox"
)

// The binaries built for this run; gvpn-runtime sits next to gvpn-lab, as
// after `make build`.
var runtimeBin, labBin string

func TestMain(m *testing.M) {
	sandbox.MaybeRunShim()
	dir, err := os.MkdirTemp("", "gvpn-lab-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Readable by everyone: one test runs gvpn-lab as an unprivileged user.
	os.Chmod(dir, 0o755)
	runtimeBin = filepath.Join(dir, "gvpn-runtime")
	labBin = filepath.Join(dir, "gvpn-lab")
	for bin, pkg := range map[string]string{runtimeBin: "./cmd/gvpn-runtime", labBin: "./cmd/gvpn-lab"} {
		build := exec.Command("go", "build", "-race", "-o", bin, "github.com/gvpn/gvpn/"+pkg[2:])
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", pkg, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}
