//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/netcfg/nsthread"
	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/golemnet/labcli"
	"github.com/gvpn/gvpn/test/privtest"
)

// TestQuickRunEndToEnd runs every scenario in -quick mode, as `make bench`
// would, and checks that the results are complete and sane and that nothing
// is left behind. It asserts no speed.
func TestQuickRunEndToEnd(t *testing.T) {
	privtest.RequireRoot(t)
	if testing.Short() {
		t.Skip("skipped with -short: runs four iperf3/ping scenarios (~2 min)")
	}
	tl, err := findTools()
	if err != nil {
		t.Skip(err)
	}
	ignore := goleak.IgnoreCurrent()
	before := gvbNetns(t)

	// Without the race detector, as `make bench` builds it.
	dir, cleanup, err := privtest.Binaries(false, "gvpn-runtime", "gvpn-agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	bin := filepath.Join(dir, "gvpn-runtime")

	cfg := options{quick: true}.config()
	cfg.Runtime, cfg.Agent, cfg.Tools, cfg.Progress = bin, filepath.Join(dir, "gvpn-agent"), tl, testLog{t}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := runAll(ctx, &cfg, scenarioOrder)
	if err != nil {
		t.Fatal(err)
	}

	for _, name := range scenarioOrder {
		s := rep.Scenarios[name]
		if s == nil {
			t.Fatalf("%s: no result", name)
		}
		checkScenario(t, s)
		for _, ns := range s.Netns {
			if _, err := os.Lstat(filepath.Join(nsthread.RunDir, ns)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: netns %s left behind", name, ns)
			}
		}
		for _, pid := range s.Pids {
			if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(cmd, []byte(bin)) {
				t.Errorf("%s: runtime pid %d still running", name, pid)
			}
		}
	}
	if len(rep.Scenarios["gvpn"].Pids) != 2 || len(rep.Scenarios["veth"].Netns) != 2 || len(rep.Scenarios["naive"].Netns) != 2 {
		t.Errorf("leftover bookkeeping incomplete: %+v", rep.Scenarios)
	}

	// The comparison's machinery, with these binaries as their own
	// baseline (nothing is built from git here: TestBuildBaseline covers
	// that) and one short round of the gvpn testbed only, to stay cheap.
	cmp := &comparison{Base: "base", Tree: "tree", BaseNote: "the test's", Rounds: 1, Duration: time.Second, Pings: 20}
	base := cfg
	if err := runComparison(ctx, &cfg, &base, cmp, []string{"gvpn"}); err != nil {
		t.Fatal(err)
	}
	if len(cmp.Metrics) != 3 {
		t.Fatalf("comparison metrics %+v, want TCP, TCP -R and RTT of gvpn", cmp.Metrics)
	}
	for _, m := range cmp.Metrics {
		if m.Scenario != "gvpn" || len(m.Base) != 1 || len(m.Tree) != 1 || m.Base[0] <= 0 || m.Tree[0] <= 0 {
			t.Errorf("comparison metric %+v", m)
		}
	}
	if v := cmp.overall(); v != verdictInconclusive {
		t.Errorf("one round judged %v, want inconclusive", v)
	}
	rep.Compare = cmp
	if after := gvbNetns(t); len(after) != len(before) {
		t.Errorf("%s* namespaces before %v, after %v", namePrefix, before, after)
	}

	md := rep.markdown()
	for _, want := range []string{"## Machine", "## Method", "RTT overhead vs veth: ", "node-to-node throughput: ", "## gvpn counters", "## Against the baseline base"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(rep.table(), "n/a") {
		t.Errorf("table has gaps:\n%s", rep.table())
	}
	t.Logf("\n%s", rep.table())
	goleak.VerifyNone(t, ignore)
}

// checkScenario checks that every number a scenario produced is there and
// positive. Nothing is compared with a speed.
func checkScenario(t *testing.T, s *scenarioResult) {
	t.Helper()
	if len(s.Forward) != 1 || len(s.Reverse) != 1 {
		t.Fatalf("%s: %d forward, %d reverse runs; want 1 each in quick mode", s.Name, len(s.Forward), len(s.Reverse))
	}
	for _, r := range append(s.Forward, s.Reverse...) {
		if r.BitsPerSecond <= 0 || r.Wall <= 0 || r.Machine.Busy <= 0 {
			t.Errorf("%s: run %+v", s.Name, r)
		}
		for _, c := range r.CPU {
			// iperf3's own figures may round to zero for an idle side.
			if c.Seconds < 0 || (c.Seconds == 0 && !strings.HasPrefix(c.Role, "iperf3")) {
				t.Errorf("%s: CPU of %s = %v s", s.Name, c.Role, c.Seconds)
			}
		}
	}
	if len(s.Ping) != len(pingSizes) {
		t.Fatalf("%s: %d ping results", s.Name, len(s.Ping))
	}
	if len(s.Parallel) != 1 || s.Parallel[0].BitsPerSecond <= 0 || s.UDP == nil || s.UDP.RecvPPS() <= 0 {
		t.Errorf("%s: 4-stream runs %+v, UDP %+v", s.Name, s.Parallel, s.UDP)
	}
	for _, p := range s.Ping {
		if p.Received <= 0 || p.AvgMs <= 0 || p.MinMs <= 0 || p.MaxMs < p.AvgMs {
			t.Errorf("%s: ping %+v", s.Name, p)
		}
	}
	for i, l := range s.Link {
		if l.RxPackets == 0 || l.TxPackets == 0 {
			t.Errorf("%s: node %d interface counters %+v", s.Name, i, l)
		}
	}
	fwd := s.Forward[0]
	switch s.Name {
	case "gvpn":
		if len(fwd.CPU) != 5 || fwd.Frames == 0 {
			t.Errorf("gvpn: CPU %+v, frames %d", fwd.CPU, fwd.Frames)
		}
		c := s.GVPN
		if c == nil {
			t.Fatal("gvpn: no counters")
		}
		for _, n := range c.Nodes {
			if n.Egress.Frames == 0 || n.Ingress.Frames == 0 || n.Hub.RxFrames == 0 || n.Hub.TxFrames == 0 {
				t.Errorf("gvpn: counters of %s: %+v", n.Name, n)
			}
		}
		if p := s.Plain; p == nil || p.RuntimeFPS <= 0 || p.CeilingFPS <= 0 {
			t.Errorf("gvpn: plain-receiver rates %+v", p)
		}
	case "agent":
		if len(fwd.CPU) != 7 || fwd.Frames == 0 || s.GVPN == nil {
			t.Errorf("agent: CPU %+v, frames %d", fwd.CPU, fwd.Frames)
		}
	case "naive":
		if len(fwd.CPU) != 3 || fwd.Frames == 0 {
			t.Errorf("naive: CPU %+v, frames %d", fwd.CPU, fwd.Frames)
		}
	}
}

func gvbNetns(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(nsthread.RunDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), namePrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestReportRendering checks the arithmetic of the table and target lines on
// made-up results.
func TestReportRendering(t *testing.T) {
	mk := func(name string, gbit []float64, rtt56, rtt1192 float64) *scenarioResult {
		s := &scenarioResult{Name: name, LinkName: "x"}
		for _, g := range gbit {
			s.Forward = append(s.Forward, tcpRun{IperfResult: labcli.IperfResult{BitsPerSecond: g * 1e9, Seconds: 10}, Wall: 10,
				CPU: []roleCPU{{"p", 2}}, Frames: 1_000_000, Machine: machineCPU{Busy: 10, Total: 20}})
			s.Reverse = append(s.Reverse, tcpRun{IperfResult: labcli.IperfResult{BitsPerSecond: g * 2e9, Seconds: 10}, Wall: 10})
		}
		s.Ping = []pingResult{
			{Size: 56, PingStats: labcli.PingStats{Sent: 200, Received: 200, HasRTT: true, AvgMs: rtt56}},
			{Size: 1192, PingStats: labcli.PingStats{Sent: 200, Received: 200, HasRTT: true, AvgMs: rtt1192}},
		}
		return s
	}
	g := mk("gvpn", []float64{0.9, 1.2, 1.1}, 0.25, 0.40)
	g.Parallel = g.Forward[:1]
	g.UDP = &udpRun{Seconds: 10, Packets: 2_000_000, LostPackets: 500_000}
	g.Plain = &plainRate{Seconds: 5, CeilingFPS: 250_000, RuntimeFPS: 240_000}
	g.GVPN = &gvpnCounters{Nodes: [2]gvpnNodeCounters{
		{Name: "node-a", Egress: api.VPNDirStats{Frames: 100}, Ingress: api.VPNDirStats{Frames: 50, Drops: map[string]uint64{"short": 1}},
			Hub: golemnet.NodeStats{RxFrames: 98, TxFrames: 52}},
		{Name: "node-b", Egress: api.VPNDirStats{Frames: 52}, Ingress: api.VPNDirStats{Frames: 98},
			Hub: golemnet.NodeStats{RxFrames: 52, TxFrames: 98}},
	}}
	rep := &report{Machine: machineInfo{NProc: 2}, Duration: 10 * time.Second, Reps: 3, Pings: 200, Scenarios: map[string]*scenarioResult{
		"gvpn":  g,
		"veth":  mk("veth", []float64{20, 22, 18}, 0.05, 0.05),
		"naive": mk("naive", []float64{1.5}, 0.10, 0.12),
	}}
	table := rep.table()
	for _, want := range []string{
		"| gvpn (2 runtimes + hub) | 1.100 (0.900–1.200) | 2.200 (1.800–2.400) | 0.250 ms | 0.400 ms | 0.055 | 0.733 |",
		"| veth (kernel baseline) | 20.000 (18.000–22.000) |",
		"| naive TAP↔TAP pump | 1.500 | 3.000 |",
		"- RTT overhead vs veth: 0.200 ms (target ≤ 0.15 ms: not met); 1192 B: 0.350 ms",
		"- RTT overhead per user-space hop (56 B): gvpn 0.033 ms (6 hops), naive 0.025 ms (2 hops)",
		"- node-to-node throughput: 1.100 Gbit/s, gvpn/veth 0.055 (target ≥ 0.30: not met); with -R 2.200 Gbit/s",
		"| gvpn (2 runtimes + hub) | 0.900 | n/a | 150k | 200k | 25.0% |",
		"runtime 240k frames/s, ceiling 250k frames/s (a UDP GSO sender), 96% (target ≥ 90%: met)",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	md := rep.markdown()
	for _, want := range []string{
		"| gvpn | p | 2.00 | 20% | 2.00 | 1.45 |", // CPU of the median run, µs per frame, s per GB
		"- node-a → node-b: 2 frames lost between runtime node-a and the hub, 0 between the hub and runtime node-b",
		"- node-b → node-a: 0 frames lost between runtime node-b and the hub, 1 between the hub and runtime node-a",
		"short 1",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}

	// Missing scenarios show as n/a rather than as wrong numbers.
	delete(rep.Scenarios, "veth")
	if table := rep.table(); !strings.Contains(table, "RTT overhead vs veth: n/a") || !strings.Contains(table, "| n/a | 0.733 |") {
		t.Errorf("without veth:\n%s", table)
	}
}

func TestFlags(t *testing.T) {
	var errOut bytes.Buffer
	if _, err := parseFlags(nil, &errOut); err == nil || !strings.Contains(err.Error(), "-runtime is required") {
		t.Errorf("no -runtime: %v", err)
	}
	if _, err := parseFlags([]string{"-runtime", "x", "-only", "gvpn,wat"}, &errOut); err == nil {
		t.Error("unknown scenario accepted")
	}
	o, err := parseFlags([]string{"--runtime", "x", "-quick", "-only", "veth, naive"}, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	if c := o.config(); c.Reps != 1 || c.Duration != 3*time.Second || c.Pings != 50 {
		t.Errorf("quick config %+v", c)
	}
	if s := o.scenarios(); len(s) != 2 || s[0] != "veth" || s[1] != "naive" {
		t.Errorf("scenarios %v", s)
	}
	o, _ = parseFlags([]string{"-runtime", "x"}, &errOut)
	if c := o.config(); c.Reps != 3 || c.Duration != 10*time.Second || c.Pings != 200 {
		t.Errorf("default config %+v", c)
	}
	if o.base != "" {
		t.Errorf("the tool compares with %q by default; only make bench names a baseline", o.base)
	}
	if c := o.comparison(); c.Rounds != 4 || c.Duration != 3*time.Second || c.Pings != 100 {
		t.Errorf("default comparison %+v", c)
	}
	if _, err := parseFlags([]string{"-runtime", "x", "-base", "HEAD", "-only", "veth,naive"}, &errOut); err == nil || !strings.Contains(err.Error(), "-only runs none") {
		t.Errorf("-base without gvpn or agent: %v", err)
	}
	if _, err := parseFlags([]string{"-runtime", "x", "-base", "HEAD", "-rounds", "0"}, &errOut); err == nil {
		t.Error("-rounds 0 accepted")
	}
	o, err = parseFlags([]string{"-runtime", "x", "-base", "recorded", "-only", "agent", "-rounds", "6", "-round-time", "5s"}, &errOut)
	if c := o.comparison(); err != nil || o.base != recordedBase || c.Rounds != 6 || c.Duration != 5*time.Second {
		t.Errorf("-base recorded -rounds 6 -round-time 5s: %+v, %v", c, err)
	}
}

func TestRunFailsClearly(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-runtime", filepath.Join(t.TempDir(), "missing")}, &out, &errOut); code == 0 {
		t.Fatalf("exit 0 with a missing runtime; stderr %s", errOut.String())
	}
	msg := errOut.String()
	if os.Geteuid() != 0 {
		if !strings.Contains(msg, "must run as root") {
			t.Errorf("non-root: %q", msg)
		}
	} else if !strings.Contains(msg, "runtime binary") {
		t.Errorf("missing runtime: %q", msg)
	}
	if out.Len() != 0 {
		t.Errorf("stdout on failure: %q", out.String())
	}
}

// TestParseIperfUDP reads a real iperf3 3.12 UDP client report: packets
// sent and the receiver's losses.
func TestParseIperfUDP(t *testing.T) {
	b, err := os.ReadFile("testdata/iperf3-udp.json")
	if err != nil {
		t.Fatal(err)
	}
	u, err := parseIperfUDP(b)
	if err != nil {
		t.Fatal(err)
	}
	if u.Packets != 1025 || u.LostPackets != 134 || u.Seconds < 1 {
		t.Fatalf("parsed %+v, want 1025 packets, 134 lost", u)
	}
	for _, bad := range []string{`{`, `{"error":"unable to connect"}`, `{"end":{"sum":{"seconds":1,"packets":5,"lost_packets":6}}}`, `{"end":{}}`} {
		if _, err := parseIperfUDP([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
