package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	eu := deployAndStart(t, ctx, cfg)

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
	eu, err := golemnet.Start(ctx, cfg)
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

// TestRAMVolumesAreBoundedAndTheRuntimeOutlivesThem: a RAM volume larger
// than the agreement's memory (or, with none stated, than the default cap)
// is refused at deploy, naming it; one within bounds fills up to its size
// and no further, the payload's processes are the OOM killer's first
// choice and the runtime its last, and the runtime still answers Hello
// after the fill.
func TestRAMVolumesAreBoundedAndTheRuntimeOutlivesThem(t *testing.T) {
	privtest.RequireRoot(t)
	ctx := privtest.Context(t, 90*time.Second)
	for _, c := range []struct{ mem, size string }{{"0.25", "1TiB"}, {"", "2GiB"}, {"1", "1.5GiB"}} {
		cfg, _ := exeunitConfig(t, "ram-refused")
		cfg.RuntimeArgs = append(cfg.RuntimeArgs, "--volume-override", `{"/scratch":{"ram":{"size":"`+c.size+`"}}}`)
		if c.mem != "" {
			cfg.RuntimeArgs = append(cfg.RuntimeArgs, "--mem-gib", c.mem)
		}
		res, err := golemnet.Deploy(ctx, cfg)
		if err == nil || !strings.Contains(res.Valid["Err"], `volume "/scratch"`) || !strings.Contains(res.Valid["Err"], "memory") {
			t.Errorf("deploy of a %s RAM volume with --mem-gib %q: %v %v; want a refusal naming the volume", c.size, c.mem, res.Valid, err)
		}
	}

	cfg, _ := exeunitConfig(t, "ram")
	cfg.RuntimeArgs = append(cfg.RuntimeArgs, "--mem-gib", "0.125", "--volume-override", `{"/scratch":{"ram":{"size":"32MiB"}}}`)
	eu := deployAndStart(t, ctx, cfg)
	// Lowering takes CAP_SYS_RESOURCE, which a container may withhold
	// even from root; without it the runtime keeps 0 and says so.
	want := "-500"
	if !hasCap(t, eu.Pid(), 24) {
		want = "0"
		if !strings.Contains(golemnet.RuntimeLog(cfg.Workdir), "cannot lower the runtime's oom_score_adj") {
			t.Errorf("the runtime lacks CAP_SYS_RESOURCE and its log does not say it kept its oom_score_adj")
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", eu.Pid())); err != nil || strings.TrimSpace(string(b)) != want {
		t.Errorf("the runtime's oom_score_adj: %q %v; want %s", b, err, want)
	}
	// The payload itself and the sandbox's init (pid 1 in its namespace).
	if out, err := eu.Output(ctx, "/bin/sh", "-c", "cat /proc/self/oom_score_adj /proc/1/oom_score_adj"); err != nil || out != "1000\n1000\n" {
		t.Errorf("the payload's oom_score_adj: %q %v; want 1000 for it and the sandbox's init", out, err)
	}
	r, err := eu.Run(ctx, "/bin/dd", "if=/dev/zero", "of=/scratch/fill", "bs=1M", "count=4096")
	if err != nil {
		t.Fatal(err)
	}
	if r.ReturnCode == 0 || !strings.Contains(string(r.Stderr), "No space left") {
		t.Errorf("filling the RAM volume: rc %d, %s; want it stopped by the volume's size", r.ReturnCode, r.Stderr)
	}
	if out, err := eu.Output(ctx, "/bin/sh", "-c", "du -m /scratch/fill | cut -f1"); err != nil || strings.TrimSpace(out) != "32" {
		t.Errorf("the filled volume holds %q MiB (%v); want its 32", out, err)
	}
	if _, err := eu.Hello(ctx, "0.1.0"); err != nil {
		t.Fatalf("the runtime does not answer Hello after the fill: %v", err)
	}
	if err := eu.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	sandboxGone(t, cfg.Workdir)
}

// hasCap reports whether process pid has capability bit in its effective
// set.
func hasCap(t *testing.T, pid, bit int) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			eff, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return eff&(1<<bit) != 0
		}
	}
	t.Fatal("no CapEff")
	return false
}

// TestSelfTestReportsUnsafeVolumeLinks: the opt-out is never silent in the
// provider's runtime test.
func TestSelfTestReportsUnsafeVolumeLinks(t *testing.T) {
	privtest.RequireRoot(t)
	_, stderr, code := runCLI(t, "--sandbox-prefix", testPrefix, "--unsafe-volume-links", "test")
	if code != 0 || !strings.Contains(stderr, "--unsafe-volume-links") {
		t.Fatalf("test --unsafe-volume-links: exit %d, stderr %q; want it to pass and report the flag", code, stderr)
	}
}

// deployAndStart deploys and starts an activity as the ExeUnit does; the
// runtime is killed at the end of the test unless it was shut down.
func deployAndStart(t *testing.T, ctx context.Context, cfg golemnet.ExeUnitConfig) *golemnet.ExeUnit {
	t.Helper()
	if _, err := golemnet.Deploy(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	eu, err := golemnet.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eu.Kill)
	return eu
}
