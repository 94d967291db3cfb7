package vm

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// TestVMLimits: the agreement sizes the guest (256 MiB, one CPU) and QEMU
// runs in the activity's cgroup: two burners in the guest take at most
// about one host CPU, a memory hog is killed by the guest's kernel while
// QEMU and the runtime go on, writing past the storage limit into the
// shared work volume fails with ENOSPC, and a netns node pings the VM
// without loss meanwhile. After Shutdown, and after SIGKILL plus a sweep,
// no cgroup and no mount is left. Lean: one boot, busybox's tools.
func TestVMLimits(t *testing.T) {
	kernel, initrd := privtest.VMGuest(t)
	if un := limits.Check(limits.Limits{CPUCores: 1, MemBytes: 1, Pids: 1, StorageBytes: 1}); len(un) > 0 {
		t.Skipf("this host cannot enforce the limits: %s", limits.Describe(un))
	}
	vm := &node{name: "node-vm", ip: "192.168.12.2"}
	ns := &node{name: "node-ns", ip: "192.168.12.3"}
	startHub(t, vm, ns)
	hosts := map[string]string{vm.name: vm.ip, ns.name: ns.ip}
	vm.start(t, nodeOpts{vm: true, kernel: kernel, initrd: initrd,
		runtimeArgs: []string{"--cpu-cores", "1", "--mem-gib", "0.25", "--storage-gib", "0.1", "--require-limits"}})
	ns.start(t, nodeOpts{})
	ctx := privtest.Context(t, 8*time.Minute)
	vm.join(t, ctx, hosts)
	ns.join(t, ctx, hosts)
	name := netns.NameFor(nsPrefix, vm.workdir)

	if mem := vm.sh(t, ctx, "grep MemTotal /proc/meminfo"); !strings.Contains(mem, " kB") {
		t.Fatalf("meminfo: %q", mem)
	} else if kb := strings.Fields(mem)[1]; len(kb) > 6 {
		t.Errorf("guest memory %s kB, want about 256 MiB", kb)
	}

	ping, err := golemnet.StartPing(ctx, ns.eu, vm.ip, 100, "0.1")
	if err != nil {
		t.Fatal(err)
	}

	rate, err := golemnet.CheckCPUQuota(ctx, vm.eu, name, 1, 3*time.Second)
	t.Logf("QEMU with two burners in the guest used %.2f CPUs", rate)
	if err != nil {
		t.Error(err)
	}

	qemu := vm.qemuPIDs()
	// Six holders of 50 MB each (busybox's tail -c keeps its buffer) are
	// more than the guest's 256 MiB: its kernel kills one.
	out := vm.sh(t, ctx, `pids=; for i in 1 2 3 4 5 6; do tail -c 50000000 /dev/zero >/dev/null & pids="$pids $!"; done
		i=0; while [ $i -lt 120 ] && ! dmesg | grep -q "Out of memory"; do sleep 0.5; i=$((i+1)); done
		kill $pids 2>/dev/null; dmesg | grep -c "Out of memory"`)
	if strings.TrimSpace(out) == "0" {
		t.Errorf("memory hog in the guest: no OOM kill (%q)", out)
	}
	if _, err := vm.eu.Hello(ctx, "0.1"); err != nil {
		t.Fatalf("the runtime does not answer Hello after the OOM kill: %v", err)
	}
	if now := vm.qemuPIDs(); len(qemu) != 1 || len(now) != 1 || now[0] != qemu[0] {
		t.Errorf("QEMU %v before the hog, %v after: the kill must happen inside the guest", qemu, now)
	}

	out = vm.sh(t, ctx, "dd if=/dev/zero of=/golem/work/big bs=1048576 count=200 2>&1; rm -f /golem/work/big")
	if !strings.Contains(out, "No space left on device") {
		t.Errorf("writing 200 MiB into the work volume: %q, want ENOSPC", out)
	}

	if err := ping.Lossless(ctx); err != nil {
		t.Errorf("the netns node's pings to the VM: %v", err)
	}

	if err := vm.eu.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	vm.checkGone(t)
	if limits.Exists(name) {
		t.Error("QEMU's cgroup is left after Shutdown")
	}
	// The usage is logged against the agreement, not QEMU's larger limit.
	if log := golemnet.RuntimeLog(vm.workdir); !strings.Contains(log, "payload usage") || !strings.Contains(log, "mem_bytes_granted=268435456") {
		t.Error("no payload usage against the granted 256 MiB in the VM node's log")
	}
	if m, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(m), " "+vm.workdir+"/") {
		t.Error("a mount under the VM's workdir is left after Shutdown")
	}

	// SIGKILL of a netns runtime with limits; the sweep of `test` removes
	// its cgroup and disk (the VM path's sweep is the same code).
	ns.eu.Kill()
	nsName := netns.NameFor(nsPrefix, ns.workdir)
	if limits.Exists(nsName) {
		if out, err := exec.Command(runtimeBin, "--sandbox-prefix", nsPrefix, "test").CombinedOutput(); err != nil {
			t.Fatalf("gvpn-runtime test: %v\n%s", err, out)
		}
		if limits.Exists(nsName) {
			t.Error("the killed runtime's cgroup is left after the sweep")
		}
	}
}
