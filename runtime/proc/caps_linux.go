package proc

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// EffectiveCaps is the calling thread's effective capability set, bit c
// for capability c (unix.CAP_*). Every thread of a gvpn process holds the
// same set until a sandbox's shim drops its own before it execs.
func EffectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("capget: %w", err)
	}
	return uint64(data[1].Effective)<<32 | uint64(data[0].Effective), nil
}

// HasCaps reports whether the effective set eff holds every one of caps.
func HasCaps(eff uint64, caps ...int) bool {
	for _, c := range caps {
		if eff&(1<<uint(c)) == 0 {
			return false
		}
	}
	return true
}
