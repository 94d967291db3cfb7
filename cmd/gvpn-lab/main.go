// Command gvpn-lab runs a whole Golem VPN on one machine: provider nodes
// with real gvpn-runtime processes, driven as yagna's ExeUnit drives them,
// and a local Golem Net between them. See test/golemnet/labcli.
package main

import (
	"os"

	"github.com/gvpn/gvpn/test/golemnet/labcli"
)

func main() {
	os.Exit(labcli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
