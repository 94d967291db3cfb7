package agent

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/gvpn/gvpn/runtime/owner"
)

// Under umask 000 a socket file would be 0777 and anyone could take the
// agent's data or control connection over (the newest one wins).
func TestSocketsOnlyTheirOwnerCanUseWhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	cfg, _ := testConfig(t, "")
	b, _ := openWithAgent(t, cfg)
	ctl := b.Control()
	for path, want := range map[string]os.FileMode{
		cfg.SocketDir:   0o700,
		cfg.Bridge.Path: 0o600,
		ctl.Path:        0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", filepath.Base(path), got, want)
		}
	}
	// A second runtime for the same socket directory is refused while
	// the first lives.
	if _, err := Open(t.Context(), cfg); !errors.Is(err, owner.ErrBusy) {
		t.Errorf("second Open on a live socket directory: %v, want owner.ErrBusy", err)
	}
}
