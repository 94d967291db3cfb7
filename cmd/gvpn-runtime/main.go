// Command gvpn-runtime is the Golem VPN runtime plugin that yagna's ExeUnit
// supervisor launches. See runtime/cli for the command line.
package main

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/cli"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
)

func main() {
	// The sandbox re-executes this binary to enter a payload's namespaces
	// before exec; that path must run before anything else.
	netns.MaybeRunShim()
	// Descriptors inherited from the ExeUnit without close-on-exec must
	// reach no child: not the agent command, not a payload.
	_ = unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
