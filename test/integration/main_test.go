// Package integration drives the real gvpn binaries the way yagna's ExeUnit
// does: spawned with pipes, spoken to in ya-runtime-api, their payloads
// reaching each other through the local Golem Net hub with the kernel's own
// ping, HTTP and UDP.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/test/payload"
)

// runtimeBin is the gvpn-runtime built for this test run.
var runtimeBin string

func TestMain(m *testing.M) {
	sandbox.MaybeRunShim()
	payload.RunIfAsked()
	dir, err := os.MkdirTemp("", "gvpn-it-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	runtimeBin = filepath.Join(dir, "gvpn-runtime")
	build := exec.Command("go", "build", "-race", "-o", runtimeBin, "github.com/gvpn/gvpn/cmd/gvpn-runtime")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build gvpn-runtime:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
