package agent

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// TestAgentLimits: with the agreement's limits the agent command, and so
// gvpn-agent and every payload process, runs in the activity's cgroup:
// two CPU burners get about one CPU, a memory hog is killed inside while
// the runtime answers Hello, a fork bomb stops at the pids limit, and
// node-b pings node-a without loss meanwhile. Storage is where the agent
// command puts the payload: the runtime reports it unenforced. After
// Shutdown, and after SIGKILL plus a sweep, no cgroup is left.
func TestAgentLimits(t *testing.T) {
	privtest.RequireRoot(t)
	if un := limits.Check(limits.Limits{CPUCores: 1, MemBytes: 1, Pids: 1}); len(un) > 0 {
		t.Skipf("this host cannot enforce the limits: %s", limits.Describe(un))
	}
	_, nodes := twoNodes(t, nodeOpts{runtimeArgs: []string{"--cpu-cores", "1", "--mem-gib", "0.25", "--storage-gib", "0.1", "--pids-limit", "64"}})
	a, b := nodes[0], nodes[1]
	ctx := privtest.Context(t, 120*time.Second)
	name := netns.NameFor(nsPrefix, a.workdir)
	if !limits.Exists(name) {
		t.Fatal("no cgroup for the agent sandbox")
	}
	// The command (and so the agent and the payload) sees the agreement,
	// for a launcher that must pass it on (docker run --memory …).
	if env := a.sh(t, ctx, "echo $GVPN_CPU_CORES $GVPN_MEMORY_BYTES $GVPN_PIDS_LIMIT $GVPN_STORAGE_BYTES"); env != "1 268435456 64 107374182\n" {
		t.Errorf("the agent command's limit variables: %q", env)
	}

	ping, err := golemnet.StartPing(ctx, b.eu, "192.168.7.2", 100, "0.05")
	if err != nil {
		t.Fatal(err)
	}

	rate, err := golemnet.CheckCPUQuota(ctx, a.eu, name, 1, 2*time.Second)
	t.Logf("two burners (and the agent) used %.2f CPUs", rate)
	if err != nil {
		t.Error(err)
	}

	if err := golemnet.CheckMemoryLimit(ctx, a.eu, name); err != nil {
		t.Error(err)
	}

	pids, err := golemnet.CheckPidsLimit(ctx, a.eu, name, 64)
	t.Logf("fork bomb: %d pids in the group", pids)
	if err != nil {
		t.Error(err)
	}

	if err := ping.Lossless(ctx); err != nil {
		t.Errorf("node-b's pings to node-a: %v", err)
	}
	if !strings.Contains(a.logs.String()+runtimeLog(a), "storage: the payload writes where the agent command puts it") {
		t.Error("the unenforced storage limit is not in the log")
	}

	if err := a.eu.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if limits.Exists(name) {
		t.Error("the agent sandbox's cgroup is left after Shutdown")
	}

	// SIGKILL: the runtime's sweep (its next start, here `test`) removes
	// the cgroup.
	b.eu.Kill()
	bname := netns.NameFor(nsPrefix, b.workdir)
	if !limits.Exists(bname) {
		t.Fatal("the killed runtime's cgroup is gone before the sweep (the test proves nothing)")
	}
	if out, err := runTest(); err != nil {
		t.Fatalf("gvpn-runtime test: %v\n%s", err, out)
	}
	if limits.Exists(bname) {
		t.Error("the killed runtime's cgroup is left after the sweep")
	}
}

func runtimeLog(n *node) string { return golemnet.RuntimeLog(n.workdir) }

// runTest runs `gvpn-runtime test`, which sweeps what dead runtimes left.
func runTest() (string, error) {
	out, err := exec.Command(runtimeBin, "--sandbox-prefix", nsPrefix, "test").CombinedOutput()
	return string(out), err
}
