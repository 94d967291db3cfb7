// Package lab tests gvpn-lab and the golemnet.Lab it stands on, as root:
// whole multi-node Golem VPNs on this machine, with real gvpn-runtime
// processes, the kernel's own ping, curl and iperf3 as payload traffic,
// nodes killed and links cut mid-transfer.
package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/privtest"
)

// The binaries built for this run; gvpn-runtime sits next to gvpn-lab, as
// after `make build`.
var runtimeBin, labBin string

func TestMain(m *testing.M) {
	netns.MaybeRunShim()
	// Binaries keeps the directory readable by everyone: one test runs
	// gvpn-lab as an unprivileged user.
	dir, cleanup, err := privtest.Binaries(true, "gvpn-runtime", "gvpn-lab")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	runtimeBin = filepath.Join(dir, "gvpn-runtime")
	labBin = filepath.Join(dir, "gvpn-lab")
	code := m.Run()
	cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}
