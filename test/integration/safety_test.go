package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// TestSafeByDefault drives two runtimes exactly as the ExeUnit does with a
// stock requestor SDK — no hostname to deploy, no hosts in CreateNetwork,
// argv[0] prepended, empty work_dir — and attacks them the way a
// requestor's payload or a crash would.
func TestSafeByDefault(t *testing.T) {
	_, nodes := startNodes(t, false)
	a, b := nodes[0], nodes[1]
	ctx := privtest.Context(t, 120*time.Second)

	// Who the payload is, and what it can touch.
	hostName, _ := os.Hostname()
	out := a.run(t, ctx, "/bin/sh", "-c", `id -u; hostname; pwd; grep ^CapEff: /proc/self/status`)
	f := strings.Fields(out)
	if len(f) != 5 || f[0] == "0" || f[1] == hostName || f[2] != "/golem/work" || f[4] != "0000000000000000" {
		t.Fatalf("payload identity %q (host %q): want a non-root uid, not the host's name, cwd /golem/work, no capabilities", out, hostName)
	}
	shadow, err := a.eu.Run(ctx, "/bin/cat", "/etc/shadow")
	if err != nil || shadow.ReturnCode == 0 {
		t.Fatalf("the payload read /etc/shadow: rc %d %v", shadow.ReturnCode, err)
	}
	for _, p := range []string{"/etc/gvt-safety", "/usr/gvt-safety", "/usr/local/bin/gvt-safety", "/root/gvt-safety"} {
		r, err := a.eu.Run(ctx, "/usr/bin/touch", p)
		if err != nil || r.ReturnCode == 0 {
			t.Errorf("the payload wrote %s: rc %d %v", p, r.ReturnCode, err)
		}
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the host has %s", p)
			os.Remove(p)
		}
	}

	// ping and curl over the VPN, as the payload user, by address (no
	// hosts were sent).
	a.run(t, ctx, "/bin/ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.0.3")
	httpFetch(t, ctx, b, a, "192.168.0.3", 1<<20)

	// The volume is the same directory on both sides.
	volDir := hostVolumeDir(t, a)
	a.run(t, ctx, "/bin/sh", "-c", "echo from-payload > /golem/work/out.txt")
	if b, err := os.ReadFile(filepath.Join(volDir, "out.txt")); err != nil || string(b) != "from-payload\n" {
		t.Errorf("<workdir>/<volume>/out.txt = %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(volDir, "in.txt"), []byte("from-host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := a.run(t, ctx, "/bin/cat", "/golem/work/in.txt"); out != "from-host\n" {
		t.Errorf("/golem/work/in.txt = %q", out)
	}

	// A second start on the same workdir fails and the first's payload
	// keeps running.
	keep, err := a.eu.Spawn(ctx, "/bin/sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	cfg, logs := exeunitConfig(t, "second")
	cfg.Workdir = a.dir
	if second, err := golemnet.Start(ctx, cfg); err == nil {
		second.Kill()
		t.Fatal("a second start on a busy workdir succeeded")
	} else if log := golemnet.RuntimeLog(a.dir); !strings.Contains(log, "one activity per workdir") {
		// The runtime logs to the workdir's log file (stderr is the
		// provider's /dev/null), which both starts share.
		t.Errorf("second start: %v; its log does not say why:\n%s\nstderr:\n%s", err, log, logs.String())
	}
	if keep.Exited() {
		t.Fatal("the first activity's payload died when a second start was refused")
	}
	a.run(t, ctx, "/bin/true")

	// A descriptor the runtime's parent passed without close-on-exec
	// (pointing at a root-only file) never reaches the payload.
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	sf, err := os.Open(secret)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	cfg, _ = exeunitConfig(t, "fds")
	cfg.ExtraFiles = []*os.File{sf}
	if _, err := golemnet.Deploy(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	eu, err := golemnet.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := eu.Run(ctx, "/bin/sh", "-c", `for f in /proc/$$/fd/*; do readlink $f; done; cat /proc/self/environ | tr '\0' '\n'`)
	eu.Shutdown(ctx)
	if err != nil || r.ReturnCode != 0 {
		t.Fatalf("fds: rc %d %v", r.ReturnCode, err)
	}
	if strings.Contains(string(r.Stdout), "secret") || strings.Contains(string(r.Stdout), "GVPN_") {
		t.Errorf("the payload sees the runtime's descriptor or environment:\n%s", r.Stdout)
	}
	sandboxGone(t, cfg.Workdir)

	// SIGKILL of a runtime with a setsid payload: one `gvpn-runtime test`
	// leaves no namespace, directory or process of it.
	a.run(t, ctx, "/bin/sh", "-c", "setsid sleep 1234.5 </dev/null >/dev/null 2>&1 &")
	a.eu.Kill()
	name := netns.NameFor(testPrefix, a.dir)
	if _, err := os.Lstat(filepath.Join("/run/netns", name)); err != nil {
		t.Fatalf("the crashed runtime's namespace is gone before the sweep (the test proves nothing): %v", err)
	}
	selfTest, _ := exeunitConfig(t, "selftest")
	if err := os.MkdirAll(selfTest.Workdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := golemnet.SelfTest(ctx, selfTest); err != nil {
		t.Fatal(err)
	}
	sandboxGone(t, a.dir)
	if out, _ := exec.Command("pgrep", "-f", "sleep 1234.5").Output(); len(out) > 0 {
		t.Errorf("the setsid payload survived its runtime: %s", out)
	}
}

// hostVolumeDir is the workdir directory of n's default volume, where its
// payload binary was installed.
func hostVolumeDir(t *testing.T, n *vpnNode) string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(n.dir, "vol-*", "gvt-payload"))
	if err != nil || len(matches) != 1 {
		t.Fatalf("volume with the payload: %v %v", matches, err)
	}
	return filepath.Dir(matches[0])
}
