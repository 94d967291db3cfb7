package proc

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// EffectiveCaps agrees with the kernel's own account, CapEff in
// /proc/thread-self/status, whatever the user running the test holds.
func TestEffectiveCaps(t *testing.T) {
	eff, err := EffectiveCaps()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		t.Fatal(err)
	}
	var want uint64
	found := false
	for line := range strings.Lines(string(b)) {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			if want, err = strconv.ParseUint(strings.TrimSpace(hex), 16, 64); err != nil {
				t.Fatal(err)
			}
			found = true
		}
	}
	if !found || eff != want {
		t.Fatalf("EffectiveCaps %#x, CapEff %#x (found %v)", eff, want, found)
	}
	if !HasCaps(eff) {
		t.Error("HasCaps with no capability asked for is false")
	}
	if got := HasCaps(1<<unix.CAP_SETUID|1<<unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_SYS_ADMIN); got {
		t.Error("HasCaps: true without CAP_SYS_ADMIN")
	}
	if got := HasCaps(1<<unix.CAP_SETUID|1<<unix.CAP_SYS_ADMIN, unix.CAP_SETUID, unix.CAP_SYS_ADMIN); !got {
		t.Error("HasCaps: false with both")
	}
}
