package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// TestActivitiesAreStrangers is issue 20's items 2 and 4 in the
// ExeUnit's call shape: two activities of one provider whose data
// directory is outside /home and /root (here /var/lib), so that each
// payload sees the other agreement's workdir, read-only; the ExeUnit
// uploads a file into agreement A's volume the way it does (a plain
// create as the provider's user, mode 0644). B's payload must not read
// it, and neither payload may open a user namespace.
func TestActivitiesAreStrangers(t *testing.T) {
	privtest.RequireRoot(t)
	ctx := privtest.Context(t, 60*time.Second)
	data, err := os.MkdirTemp("/var/lib", "gvt-provider-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	start := func(agreement string) (*golemnet.ExeUnit, string) {
		cfg, _ := exeunitConfig(t, agreement)
		cfg.Workdir = filepath.Join(data, "exe-unit/work", agreement, "activity")
		if _, err := golemnet.Deploy(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		eu, err := golemnet.Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			eu.Shutdown(context.Background())
			sandboxGone(t, cfg.Workdir)
		})
		return eu, cfg.Workdir
	}
	a, aDir := start("agreement-a")
	b, _ := start("agreement-b")
	vols, err := filepath.Glob(filepath.Join(aDir, "vol-*"))
	if err != nil || len(vols) != 1 {
		t.Fatalf("A's volumes: %v %v", vols, err)
	}
	upload := filepath.Join(vols[0], "uploaded.txt")
	if err := os.WriteFile(upload, []byte("agreement A's data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r, err := a.Run(ctx, "/bin/cat", "/golem/work/uploaded.txt"); err != nil || string(r.Stdout) != "agreement A's data\n" {
		t.Fatalf("A reads its own upload: %q %q %v", r.Stdout, r.Stderr, err)
	}
	r, err := b.Run(ctx, "/bin/cat", upload)
	if err != nil {
		t.Fatal(err)
	}
	if r.ReturnCode == 0 || strings.Contains(string(r.Stdout), "agreement A") {
		t.Errorf("B read A's upload: rc %d %q", r.ReturnCode, r.Stdout)
	}
	for _, eu := range []*golemnet.ExeUnit{a, b} {
		r, err := eu.Run(ctx, "/usr/bin/unshare", "-Ur", "id", "-u")
		if err != nil {
			t.Fatal(err)
		}
		if r.ReturnCode == 0 || !strings.Contains(string(r.Stderr), "Operation not permitted") {
			t.Errorf("unshare -Ur in a payload: rc %d, stdout %q, stderr %q", r.ReturnCode, r.Stdout, r.Stderr)
		}
	}
}
