//go:build linux

package netns

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/sandbox"
)

// agreement is the test agreement: --cpu-cores 1 --mem-gib 0.25
// --storage-gib 0.1, with a pids limit a fork bomb reaches quickly.
var agreement = limits.Limits{CPUCores: 1, MemBytes: 256 << 20, Pids: 64, StorageBytes: 107374182}

// openLimited opens a sandbox with the agreement's limits and skips when
// the host cannot enforce all of them.
func openLimited(t *testing.T) *Sandbox {
	t.Helper()
	s := openTest(t, Config{Volumes: defaultVolumes(t), Limits: agreement})
	if un := s.Unenforced(); len(un) > 0 {
		t.Skipf("this host cannot enforce: %s", limits.Describe(un))
	}
	return s
}

// noMountsUnder fails if any mount point is left below dir.
func noMountsUnder(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			t.Errorf("mount left: %s", f[4])
		}
	}
}

// Two CPU burners together get about one CPU: the cgroup's CPU time over
// the wall time, with a generous bound (the quota is enforced per 100 ms
// period; an unlimited pair on two cores would show about 2).
func TestLimitsCPU(t *testing.T) {
	s := openLimited(t)
	var procs []sandbox.Process
	for range 2 {
		p, err := s.Start(sh(`while :; do :; done`))
		if err != nil {
			t.Fatal(err)
		}
		p.Stream(func(sandbox.Event) {})
		procs = append(procs, p)
	}
	u0, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	time.Sleep(2 * time.Second)
	u1, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	ratio := (u1.CPUSeconds - u0.CPUSeconds) / time.Since(t0).Seconds()
	t.Logf("two burners used %.2f CPUs", ratio)
	if ratio > 1.3 {
		t.Errorf("two burners used %.2f CPUs with --cpu-cores 1", ratio)
	}
	if ratio <= 0 {
		t.Errorf("no CPU time counted (%.2f): the burners are not in the cgroup", ratio)
	}
	for _, p := range procs {
		_ = s.Kill(p.Pid(), 9)
	}
}

// A memory hog is killed inside the sandbox; the sandbox (and the runtime
// around it) goes on.
func TestLimitsMemory(t *testing.T) {
	// A runtime that protects itself from the OOM killer: its payload
	// must not inherit that, or nothing in the group could be killed.
	old, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("-1000"), 0); err != nil {
		t.Logf("the test runtime keeps its OOM score (%v): no CAP_SYS_RESOURCE here", err)
	} else {
		t.Cleanup(func() { os.WriteFile("/proc/self/oom_score_adj", old, 0) })
	}
	s := openLimited(t)
	// tail keeps the last 400 MiB of its input in memory: more than the
	// 256 MiB limit.
	r := run(t, s, sh(`head -c 600M /dev/zero | tail -c 400M >/dev/null; echo rc=$?`))
	if !strings.Contains(r.stdout, "rc=137") {
		t.Errorf("memory hog: %q %q, want it SIGKILLed (rc=137)", r.stdout, r.stderr)
	}
	u, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u.OOMKills == 0 || u.PeakMemBytes > uint64(agreement.MemBytes) {
		t.Errorf("usage %+v: want an OOM kill and a peak within %d", u, agreement.MemBytes)
	}
	if r := run(t, s, sh(`cat /proc/self/oom_score_adj`)); r.stdout != "1000\n" {
		t.Errorf("payload oom_score_adj %q, want 1000 (the OOM killer's first choice) whatever the runtime's", r.stdout)
	}
	if r := run(t, s, sh(`echo alive`)); r.stdout != "alive\n" {
		t.Errorf("after the OOM kill: %q", r.stdout)
	}
}

// A fork bomb stops at the pids limit.
func TestLimitsForkBomb(t *testing.T) {
	s := openLimited(t)
	r := run(t, s, sh(`i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done 2>/dev/null; echo forked`))
	u, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fork bomb: rc %d %q %q, %d pids in the group", r.rc, r.stdout, r.stderr, u.Pids)
	// The sleepers hold the pids until killed: the bomb reached the
	// limit and stopped there. What ended since gave some back: the
	// shell, and the relay that started it in its user namespace, a Go
	// program whose threads count as pids too.
	if u.Pids+16 < uint64(agreement.Pids) || u.Pids > uint64(agreement.Pids) {
		t.Errorf("%d pids in the group, limit %d", u.Pids, agreement.Pids)
	}
	if r.stdout == "forked\n" {
		t.Error("200 forks all succeeded")
	}
}

// Writing past the storage limit fails with ENOSPC, in a volume and in
// /tmp; what the payload wrote shows at the volume's workdir directory.
func TestLimitsStorage(t *testing.T) {
	s := openLimited(t)
	for _, dir := range []string{"/golem/work", "/tmp"} {
		r := run(t, s, sh(`dd if=/dev/zero of=`+dir+`/big bs=1M count=200 2>&1; echo rc=$?; ls `+dir))
		if !strings.Contains(r.stdout, "No space left on device") || strings.Contains(r.stdout, "rc=0") {
			t.Errorf("%s: %q, want ENOSPC", dir, r.stdout)
		}
		u, _ := s.Usage()
		if u.DiskBytes > uint64(agreement.StorageBytes) || u.DiskBytes < 64<<20 {
			t.Errorf("%s: %d bytes on the disk of %d", dir, u.DiskBytes, agreement.StorageBytes)
		}
		run(t, s, sh(`rm -f `+dir+`/big`))
	}
	run(t, s, sh(`echo result > /golem/work/out`))
	vol := defaultVolumes(t)[0].Name
	if b, err := os.ReadFile(s.workdir + "/" + vol + "/out"); err != nil || string(b) != "result\n" {
		t.Errorf("the ExeUnit's view of the volume: %q %v", b, err)
	}
}

// Close and, after a crash, the sweep leave no cgroup, mount or disk.
func TestLimitsGoneAfterCloseAndCrash(t *testing.T) {
	s := openLimited(t)
	workdir, name := s.workdir, s.Name()
	run(t, s, sh(`echo x > /tmp/x`))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, name)
	noMountsUnder(t, workdir)
	if _, err := os.Stat(workdir + "/" + limits.DiskImageName); err == nil {
		t.Error("disk image left after Close")
	}

	workdir = t.TempDir()
	crash(t, workdir)
	name = NameFor(testPrefix, workdir)
	if !limits.Exists(name) {
		t.Skip("the crashed runtime had no cgroup (no controllers here)")
	}
	if _, err := Sweep(testPrefix, nil); err != nil {
		t.Fatal(err)
	}
	assertGone(t, name)
	noMountsUnder(t, workdir)
}
