package tap

import (
	"testing"

	"github.com/gvpn/gvpn/netcfg"
)

// TestDefaultNameIsNetcfgs: the VPN interface's default name is stated once,
// in netcfg; tap keeps its own constant only so that it can be used without
// netcfg, and the two must agree.
func TestDefaultNameIsNetcfgs(t *testing.T) {
	if DefaultName != netcfg.DefaultName {
		t.Fatalf("tap.DefaultName %q, netcfg.DefaultName %q", DefaultName, netcfg.DefaultName)
	}
}
