package lab

import (
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/tap"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// TestKernelDropsAreReported: under TCP load, a TAP whose queue toward
// gvpn is tiny loses frames in the kernel, before gvpn ever reads them —
// the losses iperf3 sees as retransmits. gvpn's report (the log line on
// SIGUSR1, and the lab's status from the runtime's counters) must show
// exactly what the kernel counted, not 0.
func TestKernelDropsAreReported(t *testing.T) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 is not installed (make deps installs it)")
	}
	lab := newLab(t, golemnet.LabConfig{Nodes: 2})
	ctx := privtest.Context(t, guard)
	a, b := lab.Nodes()[0], lab.Nodes()[1]

	// A 4-frame queue on node-a's vpn0: the payload's TCP bursts overflow it.
	ns, err := netns.GetFromName(a.Netns)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	vpn0, err := h.LinkByName("vpn0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetTxQLen(vpn0, 4); err != nil {
		t.Fatal(err)
	}

	srv, err := lab.Spawn(ctx, b.Name, "iperf3", "-s", "-1", "-p", "5209")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitListening(ctx, b.Name, 5209); err != nil {
		t.Fatal(err)
	}
	res, err := lab.Exec(ctx, a.Name, "iperf3", "-c", b.IP.String(), "-p", "5209", "-t", "3", "-P", "4")
	if err != nil || res.ReturnCode != 0 {
		t.Fatalf("iperf3 client: rc %d, %v\n%s%s", res.ReturnCode, err, res.Stdout, res.Stderr)
	}
	if _, err := srv.Wait(ctx); err != nil {
		t.Fatal(err)
	}

	// The load is over: the kernel's count is final.
	kernel := func() uint64 {
		l, err := h.LinkByName("vpn0")
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Statistics.TxDropped
	}
	dropped := kernel()
	if dropped == 0 {
		t.Fatal("the kernel dropped nothing on node-a's vpn0 with a 4-frame queue under iperf3: the test proves nothing")
	}
	t.Logf("kernel tx_dropped on node-a's vpn0: %d", dropped)

	// The lab's status, from the runtime's own counters.
	deadline := time.Now().Add(guard)
	for {
		st := lab.Status()[0]
		if got := st.Runtime.Egress.KernelDrops[tap.DropQueueFull]; got == dropped {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("lab status: %s = %d, the kernel counted %d", tap.DropQueueFull, got, dropped)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The log file, on SIGUSR1.
	line := regexp.MustCompile(`msg="counters \(SIGUSR1\)".*egress_kernel_` + tap.DropQueueFull + `=(\d+)`)
	syscall.Kill(a.ExeUnit.Pid(), syscall.SIGUSR1)
	for {
		m := line.FindAllStringSubmatch(golemnet.RuntimeLog(a.Workdir), -1)
		if len(m) > 0 {
			got, _ := strconv.ParseUint(m[len(m)-1][1], 10, 64)
			if got != dropped {
				t.Fatalf("SIGUSR1 log line says %s=%d, the kernel counted %d", tap.DropQueueFull, got, dropped)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no SIGUSR1 counters line in %s", api.LogPath(a.Workdir))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if k := kernel(); k != dropped {
		t.Fatalf("the kernel's count moved after the load (%d → %d): traffic still flowing", dropped, k)
	}
}
