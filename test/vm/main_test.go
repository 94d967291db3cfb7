// Package vm tests the VM sandbox end to end, as root: gvpn-runtime
// launched the way yagna's ExeUnit launches it, with --sandbox vm, boots a
// real QEMU guest (Debian's kernel, the initramfs from make vm-image), in
// which gvpn-agent makes vpn0; the guest's payload reaches a netns node
// through the local Golem Net hub. What every sandbox kind must do, two VM
// nodes included, is test/contract's; this package keeps what is the VM's
// own: its roots, its limits, a guest that dies or never boots.
package vm

import (
	"path/filepath"
	"testing"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/payload"
	"github.com/gvpn/gvpn/test/privtest"
)

// runtimeBin is the gvpn-runtime built for this test run.
var runtimeBin string

// nsPrefix starts every sandbox name the tests create.
const nsPrefix = "gv12-"

func TestMain(m *testing.M) {
	netns.MaybeRunShim()
	payload.RunIfAsked()
	privtest.Main(m, func(dir string) { runtimeBin = filepath.Join(dir, "gvpn-runtime") }, "gvpn-runtime")
}
