package integration

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/volume"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// TestTransfersNeverFollowPayloadLinks is TestSafeByDefault's sibling for
// the volumes the ExeUnit shares with the payload: the payload plants
// symbolic links in them, and the ExeUnit's `container:` transfers — plain
// open and create of <workdir>/<vol>/... as the provider's user, the
// runtime's (root here, which bypasses permissions but not nosymfollow) —
// must reach no host file through them. After the activity, and after a
// runtime's SIGKILL and the next sweep, nothing stays mounted.
func TestTransfersNeverFollowPayloadLinks(t *testing.T) {
	privtest.RequireRoot(t)
	ctx := privtest.Context(t, 90*time.Second)
	cfg, _ := exeunitConfig(t, "links")
	cfg.RuntimeArgs = append(cfg.RuntimeArgs, "--volume-override", `{"/golem/work":{"host":{}},"/golem/input":{"host":{}}}`)
	if _, err := golemnet.Deploy(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	eu, err := golemnet.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer eu.Kill()

	// What the payload aims at on the host: a root-only file with a known
	// content, a directory, and the real /etc/shadow.
	hostDir := t.TempDir()
	hostFile := filepath.Join(hostDir, "host-secret")
	if err := os.WriteFile(hostFile, []byte("host-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	plant := "cd /golem/work && ln -s /etc/shadow dl && ln -s " + hostFile + " up && ln -s " + elsewhere + " d && " +
		"mkdir sub && ln -s /etc sub/e && ln -s " + hostFile + " /golem/input/up && " +
		// The payload's own links still work inside its sandbox.
		"echo mine > own.txt && ln -s own.txt l && cat l"
	if out, err := eu.Output(ctx, "/bin/sh", "-c", plant); err != nil || out != "mine\n" {
		t.Fatalf("plant links: %q %v", out, err)
	}

	work := filepath.Join(cfg.Workdir, volume.NameFor("/golem/work"))
	input := filepath.Join(cfg.Workdir, volume.NameFor("/golem/input"))
	// Download through a link to /etc/shadow and through a directory link.
	for _, p := range []string{filepath.Join(work, "dl"), filepath.Join(work, "sub/e/shadow"), filepath.Join(work, "l")} {
		if b, err := os.ReadFile(p); err == nil {
			t.Errorf("a download of %s followed the payload's link (read %d bytes)", p, len(b))
		}
	}
	// Upload through a link to a host file: the file keeps its content.
	for _, p := range []string{filepath.Join(work, "up"), filepath.Join(input, "up")} {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err == nil {
			f.WriteString("overwritten\n")
			f.Close()
			t.Errorf("an upload to %s opened the host file through the payload's link", p)
		}
	}
	if b, _ := os.ReadFile(hostFile); string(b) != "host-secret\n" {
		t.Errorf("the host file now holds %q", b)
	}
	// Upload through a directory link creates nothing elsewhere.
	if err := os.WriteFile(filepath.Join(work, "d", "new"), []byte("x"), 0o644); err == nil {
		t.Errorf("an upload through the payload's directory link succeeded")
	}
	if _, err := os.Lstat(filepath.Join(elsewhere, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an upload through the payload's directory link created %s", filepath.Join(elsewhere, "new"))
	}
	// The links themselves stay what they are, and plain transfers work.
	if target, err := os.Readlink(filepath.Join(work, "dl")); err != nil || target != "/etc/shadow" {
		t.Errorf("readlink of the planted link: %q %v", target, err)
	}
	if err := os.WriteFile(filepath.Join(input, "in.txt"), []byte("from-host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := eu.Output(ctx, "/bin/cat", "/golem/input/in.txt"); err != nil || out != "from-host\n" {
		t.Errorf("upload then read in the payload: %q %v", out, err)
	}
	if b, err := os.ReadFile(filepath.Join(work, "own.txt")); err != nil || string(b) != "mine\n" {
		t.Errorf("download of a plain file: %q %v", b, err)
	}

	if err := eu.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	sandboxGone(t, cfg.Workdir)
	volumesUnmounted(t, cfg.Workdir)

	// A runtime killed with SIGKILL leaves its mounts; the next sweep
	// (gvpn-runtime test, or any start) removes them.
	eu, err = golemnet.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eu.Output(ctx, "/bin/true"); err != nil {
		t.Fatal(err)
	}
	eu.Kill()
	if !bytes.Contains(mountinfo(t), []byte(work)) {
		t.Fatal("the killed runtime's volumes are not mounted (the sweep below proves nothing)")
	}
	selfTest, _ := exeunitConfig(t, "links-sweep")
	if err := os.MkdirAll(selfTest.Workdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := golemnet.SelfTest(ctx, selfTest); err != nil {
		t.Fatal(err)
	}
	sandboxGone(t, cfg.Workdir)
	volumesUnmounted(t, cfg.Workdir)
}

func mountinfo(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// volumesUnmounted checks that nothing under workdir is mounted on the
// host.
func volumesUnmounted(t *testing.T, workdir string) {
	t.Helper()
	if bytes.Contains(mountinfo(t), []byte(workdir)) {
		t.Errorf("a mount under %s is left on the host", workdir)
	}
}
