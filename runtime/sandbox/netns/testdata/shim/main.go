// Command shim is a statically linked sandbox shim for the package's
// tests, whose binary the race detector links dynamically (see
// netns.UseShimBinary).
package main

import (
	"fmt"
	"os"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
)

func main() {
	netns.MaybeRunShim()
	fmt.Fprintln(os.Stderr, "shim: not started by a sandbox")
	os.Exit(2)
}
