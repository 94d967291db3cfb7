// Package image runs a requestor's image as the payload, end to end: task
// packages made offline (a GVMI with mksquashfs, an OCI archive with
// docker import and docker save) are deployed and started by the real
// gvpn-runtime as the ExeUnit does, and the payload runs in them with the
// image's settings.
package image

import (
	"path/filepath"
	"testing"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/privtest"
)

// runtimeBin is the gvpn-runtime built for this test run.
var runtimeBin string

// TestMain builds gvpn-runtime static, as make build does, not with the
// race detector: the runtime's shim runs inside the image's root, which
// has none of the host's libraries.
func TestMain(m *testing.M) {
	netns.MaybeRunShim()
	privtest.MainStatic(m, func(dir string) { runtimeBin = filepath.Join(dir, "gvpn-runtime") }, "gvpn-runtime")
}
