// Command gvpn-agent runs inside a payload VM or container: it creates the
// Golem VPN interface there and carries its frames to gvpn-runtime over a
// vsock or unix-socket bridge. See package vsock/agent and docs/bridge.md.
package main

import (
	"os"

	"github.com/gvpn/gvpn/vsock/agent"
)

func main() {
	os.Exit(agent.Main(os.Args[1:], os.Stdout, os.Stderr))
}
