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

// runtimeBin is the gvpn-runtime built for this test run; labBin the
// gvpn-lab the test images carry for its ping (an ICMP datagram socket:
// busybox's ping needs a raw socket, which an image's payload does not get).
var runtimeBin, labBin string

// TestMain builds gvpn-runtime and gvpn-lab static, as make build does,
// not with the race detector: the runtime's shim runs inside the image's
// root, which has none of the host's libraries, and so does gvpn-lab.
func TestMain(m *testing.M) {
	netns.MaybeRunShim()
	privtest.MainStatic(m, func(dir string) {
		runtimeBin = filepath.Join(dir, "gvpn-runtime")
		labBin = filepath.Join(dir, "gvpn-lab")
	}, "gvpn-runtime", "gvpn-lab")
}
