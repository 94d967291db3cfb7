package netcfg

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestRetryDump(t *testing.T) {
	for _, tc := range []struct {
		interrupted int // how many calls fail with ErrDumpInterrupted first
		wantCalls   int
		wantErr     error
	}{
		{0, 1, nil},
		{3, 4, nil},
		{dumpRetries, dumpRetries, netlink.ErrDumpInterrupted},
		{100, dumpRetries, netlink.ErrDumpInterrupted},
	} {
		calls := 0
		v, err := retryDump(func() (int, error) {
			calls++
			if calls <= tc.interrupted {
				return -1, netlink.ErrDumpInterrupted
			}
			return 42, nil
		})
		if calls != tc.wantCalls || !errors.Is(err, tc.wantErr) || (err == nil && v != 42) {
			t.Errorf("interrupted %d: %d calls, %v, %v", tc.interrupted, calls, v, err)
		}
	}
	other := errors.New("other")
	calls := 0
	if _, err := retryDump(func() (int, error) { calls++; return 0, other }); err != other || calls != 1 {
		t.Errorf("a non-interrupt error was retried (%d calls) or lost: %v", calls, err)
	}
}
