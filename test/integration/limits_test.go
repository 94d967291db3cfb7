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
	_, nodes := twoNodes(t, "", agreementArgs...)
	a, b := nodes[0], nodes[1]
	ctx := privtest.Context(t, 120*time.Second)
	name := netns.NameFor(testPrefix, a.dir)

	// node-b pings node-a all along: 100 pings, 50 ms apart.
	ping, err := b.eu.Spawn(ctx, "/bin/ping", "-c", "100", "-i", "0.05", "-W", "2", "192.168.0.2")
	if err != nil {
		t.Fatal(err)
	}

	// CPU: two burners get about one CPU, as the cgroup counts it.
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
	t.Logf("two burners used %.2f CPUs", ratio)
	if ratio > 1.3 || ratio <= 0 {
		t.Errorf("two burners used %.2f CPUs with --cpu-cores 1", ratio)
	}
	for _, pid := range burners {
		if err := a.eu.KillProcess(ctx, pid, 9); err != nil {
			t.Fatal(err)
		}
	}

	// Memory: the hog is killed inside the payload; the runtime answers.
	out := a.run(t, ctx, "/bin/sh", "-c", "head -c 600M /dev/zero | tail -c 400M >/dev/null; echo rc=$?")
	if !strings.Contains(out, "rc=137") {
		t.Errorf("memory hog: %q, want it SIGKILLed", out)
	}
	if _, err := a.eu.Hello(ctx, "0.1"); err != nil {
		t.Fatalf("the runtime does not answer Hello after the OOM kill: %v", err)
	}
	if u, _ := limits.UsageOf(name); u.OOMKills == 0 {
		t.Errorf("no OOM kill counted: %+v", u)
	}

	// Storage: past 0.1 GiB the payload gets ENOSPC.
	out = a.run(t, ctx, "/bin/sh", "-c", "dd if=/dev/zero of=/golem/work/big bs=1M count=200 2>&1; rm -f /golem/work/big")
	if !strings.Contains(out, "No space left on device") {
		t.Errorf("writing 200 MiB: %q, want ENOSPC", out)
	}

	// Fork bomb: it stops at the pids limit.
	r, err := a.eu.Run(ctx, "/bin/sh", "-c", "i=0; while [ $i -lt 300 ]; do sleep 3 & i=$((i+1)); done 2>/dev/null; echo forked")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := limits.UsageOf(name)
	t.Logf("fork bomb: rc %d, %d pids in the group", r.ReturnCode, u.Pids)
	if string(r.Stdout) == "forked\n" || u.Pids > 64 {
		t.Errorf("fork bomb: %q, %d pids; want it stopped at 64", r.Stdout, u.Pids)
	}
	if _, err := a.eu.Hello(ctx, "0.1"); err != nil {
		t.Fatalf("the runtime does not answer Hello after the fork bomb: %v", err)
	}

	res, err := ping.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.ReturnCode != 0 || !strings.Contains(string(res.Stdout), " 0% packet loss") {
		t.Errorf("node-b's pings to node-a while node-a's payload misbehaved:\n%s", res.Stdout)
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
