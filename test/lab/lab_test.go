package lab

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/golemnet/labcli"
	"github.com/gvpn/gvpn/test/privtest"
)

// testPrefix names every sandbox namespace these tests make.
const testPrefix = "gvt-lab-"

// guard bounds waits; it only catches hangs.
const guard = 60 * time.Second

// newLab brings a lab up with this run's runtime and checks, when the test
// ends, that Close leaves no namespace and no process behind.
func newLab(t *testing.T, cfg golemnet.LabConfig) *golemnet.Lab {
	t.Helper()
	privtest.RequireRoot(t)
	cfg.Runtime = runtimeBin
	cfg.SandboxPrefix = testPrefix
	cfg.Workdir = filepath.Join(t.TempDir(), "lab")
	cfg.RuntimeArgs = append(cfg.RuntimeArgs, "--log-level", "debug", "--stats-interval", "1s")
	cfg.LogDir = t.TempDir()
	lab, err := golemnet.NewLab(privtest.Context(t, guard), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		alive := map[string]bool{}
		for _, st := range lab.Status() {
			alive[st.Name] = st.Alive
		}
		netnsInodes := map[string]uint64{}
		for _, n := range lab.Nodes() {
			var st syscall.Stat_t
			if syscall.Stat(filepath.Join("/run/netns", n.Netns), &st) == nil {
				netnsInodes[n.Netns] = st.Ino
			}
		}
		if err := lab.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := lab.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		nothingLeft(t, lab, netnsInodes)
		// The runtimes ran with stderr on /dev/null, as under yagna; their
		// log files outlive the lab in LogDir, teardown lines included.
		for _, n := range lab.Nodes() {
			b, err := os.ReadFile(filepath.Join(cfg.LogDir, n.Name+".log"))
			if err != nil || !bytes.Contains(b, []byte("starting service")) {
				t.Errorf("node %s: no kept log (%v)", n.Name, err)
			}
			if alive[n.Name] && !bytes.Contains(b, []byte("teardown complete")) {
				t.Errorf("node %s: kept log lacks the teardown", n.Name)
			}
			if t.Failed() {
				t.Logf("log of runtime %s:\n%s", n.Name, b)
			}
		}
	})
	return lab
}

// nothingLeft checks that a closed lab left no sandbox namespace, no
// runtime, and no process inside one of its namespaces.
func nothingLeft(t *testing.T, lab *golemnet.Lab, netnsInodes map[string]uint64) {
	t.Helper()
	left, err := netns.List(testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range lab.Nodes() {
		if slices.Contains(left, n.Netns) {
			t.Errorf("node %s: namespace %s left behind", n.Name, n.Netns)
		}
		if n.ExeUnit != nil && syscall.Kill(n.ExeUnit.Pid(), 0) != syscall.ESRCH {
			t.Errorf("node %s: runtime pid %d still exists", n.Name, n.ExeUnit.Pid())
		}
		if _, err := os.Stat(n.Workdir); err == nil {
			t.Errorf("node %s: workdir %s left behind", n.Name, n.Workdir)
		}
	}
	// The kernel reuses a freed namespace's inode number: a namespace
	// named now (another test's sandbox, started in parallel) is not the
	// closed node's even when its number is.
	named := map[string]bool{}
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			var st syscall.Stat_t
			if syscall.Stat(filepath.Join("/run/netns", e.Name()), &st) == nil {
				named[fmt.Sprintf("net:[%d]", st.Ino)] = true
			}
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	for _, p := range procs {
		link, err := os.Readlink(p)
		if err != nil || named[link] {
			continue
		}
		for name, ino := range netnsInodes {
			if link == fmt.Sprintf("net:[%d]", ino) {
				cmd, _ := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(p)), "cmdline"))
				t.Errorf("process %s (%q) still runs in the namespace of %s", p, bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}), name)
			}
		}
	}
}

func TestEveryPairPingsByIPAndHostname(t *testing.T) {
	for _, gw := range []golemnet.GatewayMode{golemnet.GatewayNone, golemnet.GatewayFirstHost} {
		name := "gateway=" + string(gw)
		if gw == golemnet.GatewayNone {
			name = "gateway=empty"
		}
		t.Run(name, func(t *testing.T) {
			lab := newLab(t, golemnet.LabConfig{Nodes: 3, Gateway: gw})
			ctx := privtest.Context(t, guard)
			nodes := lab.Nodes()
			for _, a := range nodes {
				for _, b := range nodes {
					if a == b {
						continue
					}
					res, err := lab.Exec(ctx, a.Name, "ping", "-n", "-c", "1", "-W", "3", b.IP.String())
					if err != nil {
						t.Fatal(err)
					}
					st, perr := labcli.ParsePing(res.Stdout)
					if res.ReturnCode != 0 || perr != nil || st.Received != 1 || !(st.AvgMs > 0) {
						t.Errorf("%s → %s by IP: rc %d %+v %v\n%s%s", a.Name, b.Name, res.ReturnCode, st, perr, res.Stdout, res.Stderr)
					}
					res, err = lab.Exec(ctx, a.Name, "ping", "-c", "1", "-W", "3", b.Name)
					if err != nil {
						t.Fatal(err)
					}
					if res.ReturnCode != 0 || !bytes.Contains(res.Stdout, []byte("("+b.IP.String()+")")) {
						t.Errorf("%s → %s by hostname: rc %d\n%s%s", a.Name, b.Name, res.ReturnCode, res.Stdout, res.Stderr)
					}
				}
			}
			// The gateway mode reaches the payload's routing table: a
			// route via .1 exactly when CreateNetwork named it.
			res, err := lab.Exec(ctx, nodes[0].Name, "ip", "-4", "route", "show", "dev", "vpn0")
			if err != nil {
				t.Fatal(err)
			}
			viaGateway := bytes.Contains(res.Stdout, []byte("via 192.168.0.1"))
			if viaGateway != (gw == golemnet.GatewayFirstHost) {
				t.Errorf("gateway %q: routes on vpn0 %q", gw, res.Stdout)
			}
			for _, s := range lab.Status() {
				if !s.Alive || s.Hub.RxFrames == 0 || s.Hub.TxFrames == 0 {
					t.Errorf("%s: alive %v, hub rx %d tx %d", s.Name, s.Alive, s.Hub.RxFrames, s.Hub.TxFrames)
				}
				t.Logf("%s: hub rx %d tx %d drops %v", s.Name, s.Hub.RxFrames, s.Hub.TxFrames, s.Hub.DropMap())
			}
			for _, n := range nodes {
				if err := n.ExeUnit.ProtocolError(); err != nil {
					t.Errorf("%s: %v", n.Name, err)
				}
			}
		})
	}
}

// startServer runs gvpn-lab serve-http in node through RunProcess and
// waits until it listens.
func startServer(t *testing.T, lab *golemnet.Lab, node string) {
	t.Helper()
	ctx := privtest.Context(t, guard)
	// Uploaded like a requestor's program: the payload does not see the
	// host's /tmp, where the test built it.
	bin, err := lab.Install(node, labBin, "gvpn-lab")
	if err != nil {
		t.Fatal(err)
	}
	p, err := lab.Spawn(ctx, node, bin, "serve-http", "--listen", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitListening(ctx, node, 8080); err != nil {
		t.Fatalf("%v (server output %+v)", err, p.Result())
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// volumeFile names a file in node's default volume: its host path (to
// check) and its path in the sandbox (for the payload to write).
func volumeFile(t *testing.T, lab *golemnet.Lab, node, name string) (host, inside string) {
	t.Helper()
	dir, path, err := lab.Volume(node)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name), path + "/" + name
}

// waitGrown waits until the file at path has at least n bytes.
func waitGrown(t *testing.T, path string, n int64, dl *golemnet.Proc) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for fileSize(path) < n {
		if dl.Exited() {
			t.Fatalf("download ended early: %+v", dl.Result())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s stuck at %d bytes", path, fileSize(path))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func checkDownload(t *testing.T, what string, dl *golemnet.Proc, path string, size int64) {
	t.Helper()
	res, err := dl.Wait(privtest.Context(t, guard))
	if err != nil || res.ReturnCode != 0 {
		t.Fatalf("%s: curl rc %d, %v: %s", what, res.ReturnCode, err, res.Stderr)
	}
	n, sha, err := labcli.FileSHA256(path)
	if err != nil || n != size || sha != labcli.PayloadSHA256(size) {
		t.Fatalf("%s: got %d bytes sha256 %s (%v); want %d bytes %s", what, n, sha, err, size, labcli.PayloadSHA256(size))
	}
}

func TestKilledNodeDoesNotDisturbTheOthers(t *testing.T) {
	lab := newLab(t, golemnet.LabConfig{Nodes: 3})
	ctx := privtest.Context(t, guard)
	a, b, c := lab.Node("node-a"), lab.Node("node-b"), lab.Node("node-c")
	startServer(t, lab, c.Name)

	// A paced download (about 2 s) and a ping train between b and c, with
	// a killed in the middle of both.
	const size = 12 << 20
	file, inside := volumeFile(t, lab, b.Name, "download")
	url := fmt.Sprintf("http://%s:8080/data?size=%d&rate=%d", c.Name, size, 6<<20)
	dl, err := lab.Spawn(ctx, b.Name, "curl", "-fsS", "-o", inside, url)
	if err != nil {
		t.Fatal(err)
	}
	pinger, err := lab.Spawn(ctx, b.Name, "ping", "-n", "-i", "0.2", "-c", "15", "-W", "3", c.IP.String())
	if err != nil {
		t.Fatal(err)
	}
	waitGrown(t, file, 1<<20, dl)
	a.ExeUnit.Kill() // SIGKILL: no Shutdown, no teardown
	if !a.ExeUnit.Exited() {
		t.Fatal("node-a's runtime still runs after SIGKILL")
	}

	res, err := lab.Exec(ctx, b.Name, "ping", "-n", "-c", "1", "-W", "1", a.IP.String())
	if err != nil || res.ReturnCode == 0 {
		t.Errorf("ping to the killed node: rc %d, %v: %s", res.ReturnCode, err, res.Stdout)
	}
	checkDownload(t, "transfer across the kill", dl, file, size)
	pr, err := pinger.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, perr := labcli.ParsePing(pr.Stdout)
	// A path disturbed by the kill loses the train's tail (or all of it);
	// one or two echoes lost to a loaded machine are not that.
	if pr.ReturnCode != 0 || perr != nil || st.Sent != 15 || st.Received < st.Sent-2 {
		t.Errorf("ping train across the kill: rc %d, %+v, %v\n%s", pr.ReturnCode, st, perr, pr.Stdout)
	}
	if !bytes.Contains(pr.Stdout, []byte("icmp_seq=15 ")) && !bytes.Contains(pr.Stdout, []byte("icmp_seq=14 ")) {
		t.Errorf("the ping train's last echoes got no reply:\n%s", pr.Stdout)
	}
	if st.Received != st.Sent {
		t.Logf("ping train lost %d of %d echoes", st.Sent-st.Received, st.Sent)
	}
	// New connections between the survivors work too.
	const small = 1 << 20
	file2, inside2 := volumeFile(t, lab, b.Name, "after")
	dl2, err := lab.Spawn(ctx, b.Name, "curl", "-fsS", "-o", inside2, fmt.Sprintf("http://%s:8080/data?size=%d", c.Name, small))
	if err != nil {
		t.Fatal(err)
	}
	checkDownload(t, "transfer after the kill", dl2, file2, small)
	for _, s := range lab.Status() {
		if s.Alive != (s.Name != "node-a") {
			t.Errorf("%s: alive %v", s.Name, s.Alive)
		}
	}
}

func TestCutLinkStallsTransferWhichResumesIntact(t *testing.T) {
	lab := newLab(t, golemnet.LabConfig{Nodes: 2})
	ctx := privtest.Context(t, guard)
	srv, cli := lab.Node("node-a"), lab.Node("node-b")
	startServer(t, lab, srv.Name)

	const size = 20 << 20
	file, inside := volumeFile(t, lab, cli.Name, "download")
	url := fmt.Sprintf("http://%s:8080/data?size=%d&rate=%d", srv.Name, size, 5<<20)
	dl, err := lab.Spawn(ctx, cli.Name, "curl", "-fsS", "-o", inside, url)
	if err != nil {
		t.Fatal(err)
	}
	waitGrown(t, file, 2<<20, dl)

	cutDrops := func() (n uint64) {
		for _, s := range lab.Hub().Stats() {
			n += s.Drops[golemnet.DropCut]
		}
		return n
	}
	srv.Hub.SetFault(golemnet.Fault{Cut: true})
	// Frames already past the hub land within milliseconds; after that the
	// file must not grow while the cut lasts.
	time.Sleep(500 * time.Millisecond)
	before, dropsBefore := fileSize(file), cutDrops()
	time.Sleep(2 * time.Second)
	during, dropsDuring := fileSize(file), cutDrops()
	if during != before {
		t.Errorf("the transfer went on through a cut link: %d → %d bytes", before, during)
	}
	if dropsDuring <= dropsBefore {
		t.Errorf("no frame was dropped as cut while TCP retransmitted (%d → %d)", dropsBefore, dropsDuring)
	}
	if dl.Exited() {
		t.Fatalf("curl gave up during the cut: %+v", dl.Result())
	}
	if during >= size {
		t.Fatalf("the transfer finished before the cut (%d bytes); it is not paced", during)
	}
	srv.Hub.SetFault(golemnet.Fault{})
	checkDownload(t, "transfer across the cut", dl, file, size)
	t.Logf("stalled at %d of %d bytes for 2 s; %d frames dropped as cut", during, size, dropsDuring)
}

// TestSeveralNetworksNoHosts: the lab as a stock requestor's Deploy with
// two networks makes it, under each ExeUnit version's gateway rule: one
// CreateNetwork with both networks (in another order on each node), no
// hosts; every node reaches every other on both networks.
func TestSeveralNetworksNoHosts(t *testing.T) {
	for _, gw := range []golemnet.GatewayMode{golemnet.GatewayNone, golemnet.GatewayFirstHost} {
		t.Run("gateway="+string(gw), func(t *testing.T) {
			lab := newLab(t, golemnet.LabConfig{Nodes: 2, Gateway: gw, NoHosts: true,
				MoreNets: []netip.Prefix{netip.MustParsePrefix("10.30.0.0/16")}})
			ctx := privtest.Context(t, guard)
			a, b := lab.Nodes()[0], lab.Nodes()[1]
			for _, ip := range append([]netip.Addr{b.IP}, b.MoreIPs...) {
				res, err := lab.Exec(ctx, a.Name, "ping", "-n", "-c", "1", "-W", "3", ip.String())
				if err != nil || res.ReturnCode != 0 {
					t.Errorf("%s → %s: rc %d %v\n%s%s", a.Name, ip, res.ReturnCode, err, res.Stdout, res.Stderr)
				}
			}
			if res, _ := lab.Exec(ctx, a.Name, "ping", "-c", "1", "-W", "1", b.Name); res.ReturnCode == 0 {
				t.Errorf("%s resolved %s without hosts entries", a.Name, b.Name)
			}
		})
	}
}
