package ifname

import "testing"

func TestCheck(t *testing.T) {
	for _, ok := range []string{"vpn0", "a", "tap%d", "123456789012345", "eth-0.1_x"} {
		if err := Check(ok); err != nil {
			t.Errorf("Check(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "1234567890123456", ".", "..", "vpn/0", "vpn:0", "vpn 0", "vpn\t0", "vpn\x00", "vpn\x7f", "a\nb"} {
		if err := Check(bad); err == nil {
			t.Errorf("Check(%q) = nil, want an error", bad)
		}
	}
}
