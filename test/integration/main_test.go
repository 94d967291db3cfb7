// Package integration drives the real gvpn binaries the way yagna's ExeUnit
// does: spawned with pipes, spoken to in ya-runtime-api, their payloads
// reaching each other through the local Golem Net hub with the kernel's own
// ping, HTTP and UDP. The contract every sandbox kind keeps is
// test/contract's; this package keeps what is the netns sandbox's and the
// CLI's own.
package integration

import (
	"path/filepath"
	"testing"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/payload"
	"github.com/gvpn/gvpn/test/privtest"
)

// runtimeBin is the gvpn-runtime built for this test run.
var runtimeBin string

func TestMain(m *testing.M) {
	netns.MaybeRunShim()
	payload.RunIfAsked()
	privtest.Main(m, func(dir string) { runtimeBin = filepath.Join(dir, "gvpn-runtime") }, "gvpn-runtime")
}
