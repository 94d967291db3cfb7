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

	ping, err := b.eu.Spawn(ctx, "/bin/ping", "-c", "100", "-i", "0.05", "-W", "2", "192.168.7.2")
	if err != nil {
		t.Fatal(err)
	}

	var burners []uint64
	for range 2 {
		p, err := a.eu.Spawn(ctx, "/bin/sh", "-c", "while :; do :; done")
		if err != nil {
			t.Fatal(err)
		}
		burners = append(burners, p.Pid)
	}
	u0, err := limits.UsageOf(name)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	time.Sleep(2 * time.Second)
	u1, err := limits.UsageOf(name)
	if err != nil {
		t.Fatal(err)
	}
	ratio := (u1.CPUSeconds - u0.CPUSeconds) / time.Since(t0).Seconds()
	t.Logf("two burners (and the agent) used %.2f CPUs", ratio)
	if ratio > 1.3 || ratio <= 0 {
		t.Errorf("two burners used %.2f CPUs with --cpu-cores 1", ratio)
	}
	for _, pid := range burners {
		if err := a.eu.KillProcess(ctx, pid, 9); err != nil {
			t.Fatal(err)
		}
	}

	out := a.sh(t, ctx, "head -c 600M /dev/zero | tail -c 400M >/dev/null; echo rc=$?")
	if !strings.Contains(out, "rc=137") {
		t.Errorf("memory hog: %q, want it SIGKILLed", out)
	}
	if _, err := a.eu.Hello(ctx, "0.1"); err != nil {
		t.Fatalf("the runtime does not answer Hello after the OOM kill: %v", err)
	}
	if u, _ := limits.UsageOf(name); u.OOMKills == 0 {
		t.Errorf("no OOM kill counted: %+v", u)
	}

	r, err := a.eu.Run(ctx, "/bin/sh", "-c", "i=0; while [ $i -lt 300 ]; do sleep 3 & i=$((i+1)); done 2>/dev/null; echo forked")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := limits.UsageOf(name)
	t.Logf("fork bomb: rc %d, %d pids in the group", r.ReturnCode, u.Pids)
	if string(r.Stdout) == "forked\n" || u.Pids > 64 {
		t.Errorf("fork bomb: %q, %d pids; want it stopped at 64", r.Stdout, u.Pids)
	}

	res, err := ping.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.ReturnCode != 0 || !strings.Contains(string(res.Stdout), " 0% packet loss") {
		t.Errorf("node-b's pings to node-a:\n%s", res.Stdout)
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
