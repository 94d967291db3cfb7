// Package image runs a requestor's image as the payload, end to end: task
// packages made offline (a GVMI with mksquashfs, an OCI archive with
// docker import and docker save) are deployed and started by the real
// gvpn-runtime as the ExeUnit does, and two nodes talk over the VPN from
// inside them.
package image

import (
	"path/filepath"
	"testing"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/privtest"
)

// runtimeBin is the gvpn-runtime built for this test run.
var runtimeBin string

func TestMain(m *testing.M) {
	netns.MaybeRunShim()
	privtest.Main(m, func(dir string) { runtimeBin = filepath.Join(dir, "gvpn-runtime") }, "gvpn-runtime")
}
