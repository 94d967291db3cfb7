// Package agent tests the agent sandbox end to end, as root: gvpn-runtime
// processes launched the way yagna's ExeUnit launches them, each with
// --sandbox agent and an --agent-command that starts gvpn-agent inside a
// network namespace the test made, bridged over unix sockets, the runtimes
// joined through the local Golem Net hub. Payload traffic is the kernel's
// own: ping, curl, UDP sockets. The contract every sandbox kind keeps is
// test/contract's; this package keeps what is the agent's own: its
// namespace and hosts file, bridge reconnects, superframes, refusals,
// limits.
package agent

import (
	"path/filepath"
	"testing"

	"github.com/gvpn/gvpn/test/payload"
	"github.com/gvpn/gvpn/test/privtest"
)

// Binaries built for this test run.
var runtimeBin, agentBin string

// nsPrefix starts every network namespace (and runtime sandbox name) the
// tests create.
const nsPrefix = "gvt-ag-"

func TestMain(m *testing.M) {
	payload.RunIfAsked()
	privtest.Main(m, func(dir string) {
		runtimeBin = filepath.Join(dir, "gvpn-runtime")
		agentBin = filepath.Join(dir, "gvpn-agent")
	}, "gvpn-runtime", "gvpn-agent")
}
