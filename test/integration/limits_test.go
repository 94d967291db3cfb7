package integration

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// agreementArgs is the test agreement, as the ExeUnit passes it,
// with a pids limit a fork bomb reaches quickly.
var agreementArgs = []string{"--cpu-cores", "1", "--mem-gib", "0.25", "--storage-gib", "0.1", "--pids-limit", "64", "--require-limits"}

// TestAgreementLimits: node-a's payload burns CPU, hogs memory, forks
// without end and fills its disk; each stops at the agreement's limit,
// node-a's runtime keeps answering, and node-b pings node-a over the VPN
// the whole time without losing a packet. Then teardown, and SIGKILL plus
// the sweep, leave no cgroup and no mount.
func TestAgreementLimits(t *testing.T) {
	privtest.RequireRoot(t)
	if un := limits.Check(limits.Limits{CPUCores: 1, MemBytes: 1, Pids: 1, StorageBytes: 1}); len(un) > 0 {
		t.Skipf("this host cannot enforce the limits: %s", limits.Describe(un))
	}
	_, nodes := twoNodes(t, agreementArgs...)
	a, b := nodes[0], nodes[1]
	ctx := privtest.Context(t, 120*time.Second)
	name := netns.NameFor(testPrefix, a.dir)

	// node-b pings node-a all along: 100 pings, 50 ms apart.
	ping, err := golemnet.StartPing(ctx, b.eu, "192.168.0.2", 100, "0.05")
	if err != nil {
		t.Fatal(err)
	}

	// CPU: two burners get about one CPU, as the cgroup counts it.
	rate, err := golemnet.CheckCPUQuota(ctx, a.eu, name, 1, 2*time.Second)
	t.Logf("two burners used %.2f CPUs", rate)
	if err != nil {
		t.Error(err)
	}

	// Memory: the hog is killed inside the payload; the runtime answers.
	if err := golemnet.CheckMemoryLimit(ctx, a.eu, name); err != nil {
		t.Error(err)
	}

	// Storage: past 0.1 GiB the payload gets ENOSPC.
	out := a.run(t, ctx, "/bin/sh", "-c", "dd if=/dev/zero of=/golem/work/big bs=1M count=200 2>&1; rm -f /golem/work/big")
	if !strings.Contains(out, "No space left on device") {
		t.Errorf("writing 200 MiB: %q, want ENOSPC", out)
	}

	// Fork bomb: it stops at the pids limit.
	pids, err := golemnet.CheckPidsLimit(ctx, a.eu, name, 64)
	t.Logf("fork bomb: %d pids in the group", pids)
	if err != nil {
		t.Error(err)
	}

	if err := ping.Lossless(ctx); err != nil {
		t.Errorf("node-b's pings to node-a while node-a's payload misbehaved: %v", err)
	}

	// The usage reaches the log at teardown, beside what was granted.
	if err := a.eu.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	sandboxGone(t, a.dir)
	if log := golemnet.RuntimeLog(a.dir); !strings.Contains(log, "payload usage") || !strings.Contains(log, "mem_bytes_granted=268435456") {
		t.Errorf("no payload usage with the granted memory in node-a's log")
	}

	// SIGKILL: the next runtime's sweep (here `test`) removes the cgroup
	// and the disk.
	b.eu.Kill()
	bname := netns.NameFor(testPrefix, b.dir)
	if !limits.Exists(bname) {
		t.Fatal("the killed runtime's cgroup is gone before the sweep (the test proves nothing)")
	}
	selfTest, _ := exeunitConfig(t, "selftest")
	if err := os.MkdirAll(selfTest.Workdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := golemnet.SelfTest(context.Background(), selfTest); err != nil {
		t.Fatal(err)
	}
	sandboxGone(t, b.dir)
}
