// Package contract runs one VPN contract suite over every sandbox kind of
// gvpn-runtime (netns, agent, vm, image), as a table: each kind is a row
// that says how the ExeUnit launches the runtime for it and what the
// machine needs (a kind whose needs are missing is skipped, saying why);
// the suite starts two nodes of the kind joined by the local Golem Net hub
// and checks, as subtests named TestContract/<kind>/<check>, what every
// kind must do for a requestor: deploy, Hello, CreateNetwork as yagna sends
// it, ping and TCP both ways, RunProcess and KillProcess, the drop of a
// frame the payload must not send (counted in gvpn.vpn), and a Shutdown
// that leaves nothing behind.
package contract

import (
	"path/filepath"
	"testing"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/privtest"
)

// The binaries of this run. They are static (as make build makes them),
// not race-enabled: the image kind runs the runtime's shim inside the
// requestor's image, which has none of the host's libraries, and the image
// carries gvpn-lab for its ping.
var runtimeBin, agentBin, labBin string

func TestMain(m *testing.M) {
	netns.MaybeRunShim()
	privtest.MainStatic(m, func(dir string) {
		runtimeBin = filepath.Join(dir, "gvpn-runtime")
		agentBin = filepath.Join(dir, "gvpn-agent")
		labBin = filepath.Join(dir, "gvpn-lab")
	}, "gvpn-runtime", "gvpn-agent", "gvpn-lab")
}
