// Package image runs a requestor's image as the payload, end to end: task
// packages made offline (a GVMI with mksquashfs, an OCI archive with
// docker import and docker save) are deployed and started by the real
// gvpn-runtime as the ExeUnit does, and two nodes talk over the VPN from
// inside them.
package image

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/privtest"
)

// runtimeBin is the gvpn-runtime built for this test run; gpingBin the
// static pinger the test images carry (testdata/gping).
var runtimeBin, gpingBin string

// TestMain builds gvpn-runtime static, as make build does, not with the
// race detector: its shim runs inside the image's root, which has none of
// the host's libraries.
func TestMain(m *testing.M) {
	netns.MaybeRunShim()
	dir, cleanup, err := privtest.Binaries(false, "gvpn-runtime")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	runtimeBin = filepath.Join(dir, "gvpn-runtime")
	gpingBin = filepath.Join(dir, "gping")
	build := exec.Command("go", "build", "-o", gpingBin, "./testdata/gping")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build testdata/gping: %v\n%s", err, out)
		cleanup()
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}
