package main

import (
	"bufio"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/api"
)

// Targets from the issues: what gvpn should reach on the 2-core machine.
const (
	targetRTTOverheadMs = 0.15
	targetVethRatio     = 0.30 // gvpn/veth, single-stream TCP
	targetPlainShare    = 0.90 // runtime / ceiling into a plain receiver
)

// scenarioOrder is the order scenarios run and appear in.
var scenarioOrder = []string{"gvpn", "agent", "veth", "naive"}

// machineInfo says where the numbers were taken.
type machineInfo struct {
	Date      time.Time
	CPUModel  string
	NProc     int
	Kernel    string
	GoVersion string // of this tool
	RuntimeGo string // the runtime binary was built with
	Iperf3    string
	Ping      string
}

func readMachineInfo(cfg *config) machineInfo {
	m := machineInfo{Date: time.Now().UTC(), NProc: runtime.NumCPU(), GoVersion: runtime.Version(), CPUModel: "unknown"}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if bi, err := buildinfo.ReadFile(cfg.Runtime); err == nil {
		m.RuntimeGo = bi.GoVersion
	}
	m.Iperf3 = firstLine(exec.Command(cfg.Tools.Iperf3, "--version"))
	m.Ping = firstLine(exec.Command(cfg.Tools.Ping, "-V"))
	return m
}

func firstLine(cmd *exec.Cmd) string {
	out, _ := cmd.Output()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// report is one benchmark invocation's results.
type report struct {
	Machine   machineInfo
	Duration  time.Duration
	Reps      int
	Pings     int
	Scenarios map[string]*scenarioResult
	// Commit is the measured tree's (treeCommit), "" if unknown.
	Commit string
	// Compare is the comparison with a baseline, nil if none was run.
	Compare *comparison
}

func (r *report) get(name string) *scenarioResult {
	s := r.Scenarios[name]
	if s == nil || len(s.Forward) == 0 {
		return nil
	}
	return s
}

func (s *scenarioResult) ping(size int) (pingResult, bool) {
	for _, p := range s.Ping {
		if p.Size == size {
			return p, true
		}
	}
	return pingResult{}, false
}

// forwardMedian returns the median forward run (the one whose CPU figures
// are shown).
func (s *scenarioResult) forwardMedian() tcpRun {
	return s.Forward[medianIndex(gbits(s.Forward))]
}

var scenarioTitles = map[string]string{
	"gvpn":  "gvpn (2 runtimes + hub)",
	"agent": "gvpn agent path (2 runtimes + 2 agents + hub)",
	"veth":  "veth (kernel baseline)",
	"naive": "naive TAP↔TAP pump",
}

// table renders the summary table and the two target lines.
func (r *report) table() string {
	var b strings.Builder
	b.WriteString("| scenario | TCP Gbit/s (median, min–max) | TCP -R Gbit/s (median, min–max) | RTT avg 56 B | RTT avg 1192 B | ratio to veth | ratio to naive |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	veth, naive := r.get("veth"), r.get("naive")
	for _, name := range scenarioOrder {
		s := r.get(name)
		if s == nil {
			continue
		}
		fwd := summarize(gbits(s.Forward))
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", scenarioTitles[name],
			fmtSpread(fwd), fmtSpread(summarize(gbits(s.Reverse))),
			fmtPing(s, 56), fmtPing(s, 1192), ratio(fwd, veth), ratio(fwd, naive))
	}
	b.WriteString("\nRatios are forward TCP medians over the baseline's. RTT: average over the pings, milliseconds.\n\n")
	b.WriteString("| scenario | TCP 4 streams Gbit/s (median) | ratio to veth | UDP 1192 B datagrams/s received | sent | lost |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, name := range scenarioOrder {
		s := r.get(name)
		if s == nil {
			continue
		}
		par := summarize(gbits(s.Parallel))
		var vethPar *scenarioResult
		if v := r.get("veth"); v != nil && len(v.Parallel) > 0 {
			vethPar = &scenarioResult{Forward: v.Parallel}
		}
		udp := "n/a | n/a | n/a"
		if u := s.UDP; u != nil {
			udp = fmt.Sprintf("%.0fk | %.0fk | %.1f%%", u.RecvPPS()/1e3, u.SentPPS()/1e3, 100*float64(u.LostPackets)/float64(u.Packets))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", scenarioTitles[name], fmtSpread(par), ratio(par, vethPar), udp)
	}
	b.WriteString("\n")
	b.WriteString(r.targetLines())
	return b.String()
}

func (r *report) targetLines() string {
	var b strings.Builder
	g, veth := r.get("gvpn"), r.get("veth")
	gp, ok1 := pingOf(g, 56)
	vp, ok2 := pingOf(veth, 56)
	if ok1 && ok2 {
		over := gp.AvgMs - vp.AvgMs
		extra := ""
		if g1, ok := g.ping(1192); ok {
			if v1, ok := veth.ping(1192); ok {
				extra = fmt.Sprintf("; 1192 B: %.3f ms", g1.AvgMs-v1.AvgMs)
			}
		}
		fmt.Fprintf(&b, "- RTT overhead vs veth: %.3f ms (target ≤ %.2f ms: %s)%s\n", over, targetRTTOverheadMs, met(over <= targetRTTOverheadMs), extra)
		b.WriteString(r.hopLine(vp.AvgMs))
	} else {
		fmt.Fprintf(&b, "- RTT overhead vs veth: n/a (target ≤ %.2f ms)\n", targetRTTOverheadMs)
	}
	if g != nil && veth != nil {
		fwd, base := summarize(gbits(g.Forward)).Median, summarize(gbits(veth.Forward)).Median
		fmt.Fprintf(&b, "- node-to-node throughput: %.3f Gbit/s, gvpn/veth %.3f (target ≥ %.2f: %s); with -R %.3f Gbit/s\n",
			fwd, fwd/base, targetVethRatio, met(fwd/base >= targetVethRatio), summarize(gbits(g.Reverse)).Median)
	} else {
		fmt.Fprintf(&b, "- node-to-node throughput: n/a (target gvpn/veth ≥ %.2f)\n", targetVethRatio)
	}
	if g != nil && g.Plain != nil {
		p := g.Plain
		share := p.RuntimeFPS / p.CeilingFPS
		fmt.Fprintf(&b, "- into a plain per-datagram receiver (the real ExeUnit): runtime %.0fk frames/s, ceiling %.0fk frames/s (a UDP GSO sender), %.0f%% (target ≥ %.0f%%: %s)\n",
			p.RuntimeFPS/1e3, p.CeilingFPS/1e3, 100*share, 100*targetPlainShare, met(share >= targetPlainShare))
	}
	return b.String()
}

// hopsPerRTT counts the times a user-space process reads a frame and
// writes it on, over one echo and its reply: gvpn's runtime A, hub, runtime
// B and back; the agent path adds an agent at each end; the naive pump is
// one process each way.
var hopsPerRTT = map[string]int{"gvpn": 6, "agent": 10, "naive": 2}

// hopLine splits each testbed's RTT overhead over veth (vethMs) among its
// user-space hops: the naive pump's hop is the least a process can add
// (a blocking read, a write), so gvpn's per-hop figure beside it shows what
// gvpn adds on top of a wake-up.
func (r *report) hopLine(vethMs float64) string {
	var parts []string
	for _, name := range scenarioOrder {
		hops := hopsPerRTT[name]
		if p, ok := pingOf(r.get(name), 56); ok && hops > 0 {
			parts = append(parts, fmt.Sprintf("%s %.3f ms (%d hops)", name, (p.AvgMs-vethMs)/float64(hops), hops))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "- RTT overhead per user-space hop (56 B): " + strings.Join(parts, ", ") + "\n"
}

func pingOf(s *scenarioResult, size int) (pingResult, bool) {
	if s == nil {
		return pingResult{}, false
	}
	return s.ping(size)
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

func fmtPing(s *scenarioResult, size int) string {
	p, ok := s.ping(size)
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.3f ms", p.AvgMs)
}

func ratio(fwd spread, base *scenarioResult) string {
	if base == nil {
		return "n/a"
	}
	b := summarize(gbits(base.Forward)).Median
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.3f", fwd.Median/b)
}

// markdown renders the whole docs/BENCHMARKS.md.
func (r *report) markdown() string {
	var b strings.Builder
	m := r.Machine
	b.WriteString("# gvpn benchmarks\n\n")
	b.WriteString("<!-- Generated by `make bench` (go run ./test/bench); rerun it rather than editing this file. -->\n\n")
	b.WriteString(measuredLine(m.Date.Format("2006-01-02 15:04 MST"), r.Commit) + "\n")
	b.WriteString("## Machine\n\n")
	fmt.Fprintf(&b, "- CPU: %s, %d CPUs (nproc)\n", m.CPUModel, m.NProc)
	fmt.Fprintf(&b, "- kernel: %s\n", m.Kernel)
	fmt.Fprintf(&b, "- Go: %s (bench tool); runtime binary built with %s\n", m.GoVersion, orNA(m.RuntimeGo))
	fmt.Fprintf(&b, "- tools: %s; %s\n", orNA(m.Iperf3), orNA(m.Ping))
	b.WriteString(r.backgroundLine())
	b.WriteString("\n")

	b.WriteString(methodText(r))

	b.WriteString("## Results\n\n")
	b.WriteString(r.table())
	b.WriteString("\n")
	if r.Compare != nil {
		b.WriteString(r.Compare.markdown())
	}

	b.WriteString(r.cpuSection())
	b.WriteString(r.gvpnSection())
	b.WriteString(r.linkSection())
	b.WriteString(r.rawSection())
	return b.String()
}

// backgroundLine says how quiet the machine was before each scenario.
func (r *report) backgroundLine() string {
	var parts []string
	worst := 0.0
	for _, name := range scenarioOrder {
		if s := r.get(name); s != nil {
			parts = append(parts, fmt.Sprintf("%s %.2f", name, s.BackgroundBusy))
			worst = max(worst, s.BackgroundBusy)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	line := "- background load (CPUs busy during the second before each scenario): " + strings.Join(parts, ", ")
	if worst > busyWarning {
		line += " — **other work was running; these numbers are skewed**"
	}
	return line + "\n"
}

func orNA(s string) string {
	if s == "" {
		return "n/a"
	}
	return s
}

func methodText(r *report) string {
	secs := wholeSeconds(r.Duration)
	return fmt.Sprintf(`## Method

One run of the tool measures four testbeds, one after the other, with the same
commands, on this machine. In each, node A (192.168.0.2, the client) and node B
(192.168.0.3, the server) are two network namespaces whose interface has MTU %d,
the VPN's.

- **gvpn** — the system under test. Two gvpn-runtime processes launched as
  yagna's ExeUnit launches them (deploy, start, Hello, CreateNetwork answered with
  a UDP data endpoint), each with its TAP vpn0 in its sandbox namespace. Their
  data endpoints are joined by the golemnet hub (test/golemnet, running inside
  the bench process), which routes frames by the ExeUnit's rules. A frame goes
  kernel → TAP (TSO superframes behind a virtio-net header) → runtime A (cut
  into MTU-sized frames, filtered one by one, sent to the hub with UDP GSO) →
  hub (UDP GRO in, GSO out, routed frame by frame) → runtime B (GRO in,
  filtered, in-order TCP segments glued back) → TAP → kernel. On the wire
  between runtime and hub every datagram is still one 1234-byte frame. The
  payload commands run in the sandboxes through RunProcess.
- **agent** — the agent path: the same, but each runtime runs `+"`--sandbox agent`"+`
  and its payload is gvpn-agent in a namespace of its own, holding the TAP and
  joined to the runtime by the bridge (a unix socket): kernel → TAP → agent A
  (cut into frames, filtered) → bridge → runtime A → hub → runtime B → bridge →
  agent B (glued) → TAP → kernel, as in a container or VM sandbox.
- **veth** — the kernel baseline: a veth pair between two fresh namespaces. No
  user space touches a frame, and veth keeps its TSO/GSO, so it moves 64 KiB
  super-packets where the TAPs move single 1234-byte frames.
- **naive** — the naive pump: a TAP in each namespace, created and addressed as
  the runtime does it (tap.Create, netcfg.Apply), joined inside the bench process
  by one goroutine per direction that reads one frame and writes it to the other
  TAP. No socket, no hub, no filter, batch size 1. Against veth it shows what the
  TAP path alone costs; gvpn against it shows what the endpoint, the hub and the
  filters add.

Measurements, per testbed:

- TCP throughput: `+"`iperf3 -s -1`"+` on B, `+"`iperf3 -c B -t %d -J`"+` on A, single stream,
  the receiver's rate; once A→B and once with `+"`-R`"+` (B→A). Each is repeated %d×;
  the table shows the median and the range.
- More shapes, once per testbed: `+"`iperf3 -P 4`"+` (four TCP streams A→B,
  repeated like the single stream) and `+"`iperf3 -u -b 0 -l 1192`"+` (one
  MTU-sized datagram per frame, as fast as iperf3 sends): datagrams per second
  sent and received.
- Plain receiver (gvpn only, last): frames per second runtime A delivers to a
  receiver that reads one datagram per recvfrom — what the real ExeUnit is —
  while a UDP GSO sender in A's sandbox floods a VPN address, beside the
  frames per second the same receiver takes from a UDP GSO sender on loopback
  (52 datagrams per sendmsg: the kernel's cheapest way to feed it), each over
  half the TCP run length. With two CPUs or more, both measurements give the
  receiver CPU 1 to itself and put every sender (and, for the runtime, the
  runtime process and the payload's sender) on CPU 0: the question is whether
  the sending side keeps up with a receiver that has a CPU, as a provider's
  ExeUnit has, not how the scheduler shares two CPUs among three busy threads.
  The payload's sender runs at nice 19: a TAP drops what overflows its queue
  only after the send has done all its work, so a flood at equal priority
  would take CPU 0 from the runtime that has to carry it.
- RTT: `+"`ping -c %d -i 0.01 -q -M do -s 56`"+` and `+"`-s 1192`"+` (the largest ICMP
  payload that fits MTU 1220 unfragmented), from A to B, once each: average.
- CPU: utime+stime from /proc/PID/stat of each participant over the forward TCP
  run whose rate is the median; iperf3's own CPU from its JSON report; the
  machine's busy time from /proc/stat. "µs per frame" divides a participant's CPU
  by the frames the datapath moved in both directions during that run (the hub's
  receive count for gvpn, the pump's count for naive). Every frame crosses each
  runtime and the hub exactly once. "CPU s per GB moved" divides it by the
  gigabytes iperf3 received in that run.
- Counters: the runtimes' gvpn.vpn counters and the hub's, over the whole gvpn
  scenario, and the kernel's drop counters of the interfaces.

Everything — both kernel stacks, both iperf3 processes, the runtimes, the hub —
shares this machine's %d CPUs, so absolute numbers are a lower bound and depend
on the machine: compare ratios between rows of the same run.

`, mtu, secs, r.Reps, r.Pings, r.Machine.NProc) + r.Compare.methodText()
}

func (r *report) cpuSection() string {
	var b strings.Builder
	b.WriteString("## CPU during the forward TCP run\n\n")
	b.WriteString("The run shown is the one with the median rate. % is of one CPU over the run's wall time.\n\n")
	b.WriteString("| scenario | participant | CPU s | % of a CPU | µs per frame | CPU s per GB moved |\n|---|---|---|---|---|---|\n")
	var notes []string
	for _, name := range scenarioOrder {
		s := r.get(name)
		if s == nil {
			continue
		}
		run := s.forwardMedian()
		for _, c := range run.CPU {
			perFrame := "–"
			if run.Frames > 0 && !strings.HasPrefix(c.Role, "iperf3") {
				perFrame = fmt.Sprintf("%.2f", c.Seconds/float64(run.Frames)*1e6)
			}
			perGB := "–"
			if gb := run.BitsPerSecond * run.Seconds / 8 / 1e9; gb > 0 {
				perGB = fmt.Sprintf("%.2f", c.Seconds/gb)
			}
			fmt.Fprintf(&b, "| %s | %s | %.2f | %.0f%% | %s | %s |\n", name, c.Role, c.Seconds, 100*c.Seconds/run.Wall, perFrame, perGB)
		}
		var ours float64
		for _, c := range run.CPU {
			ours += c.Seconds
		}
		note := fmt.Sprintf("- %s: %.3f Gbit/s over %.1f s; machine busy %.2f of %d CPUs, %.2f of them not accounted to the participants above (softirq threads, other processes)", name,
			run.BitsPerSecond/1e9, run.Wall, r.busyCPUs(run), r.Machine.NProc, max(0, r.busyCPUs(run)-ours/run.Wall))
		if run.Frames > 0 {
			fps := float64(run.Frames) / run.Wall
			note += fmt.Sprintf("; %d frames both ways (%.0fk frames/s)", run.Frames, fps/1e3)
		}
		notes = append(notes, note)
	}
	b.WriteString("\n")
	b.WriteString(strings.Join(notes, "\n"))
	b.WriteString("\n\n")
	return b.String()
}

func (r *report) busyCPUs(run tcpRun) float64 {
	if run.Machine.Total <= 0 {
		return 0
	}
	return run.Machine.Busy / run.Machine.Total * float64(r.Machine.NProc)
}

func (r *report) gvpnSection() string {
	s := r.get("gvpn")
	if s == nil || s.GVPN == nil {
		return ""
	}
	c := s.GVPN
	var b strings.Builder
	b.WriteString("## gvpn counters over the whole gvpn scenario\n\n")
	b.WriteString("Frames: runtime egress = sent by the payload and forwarded to the hub; hub rx/tx = datagrams the hub\n")
	b.WriteString("received from / sent to the node's runtime; runtime ingress = delivered to the TAP.\n\n")
	b.WriteString("| node | runtime egress | runtime egress drops | hub rx | hub tx | runtime ingress | runtime ingress drops | hub drops charged |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "| %s | %d | %s | %d | %d | %d | %s | %s |\n", n.Name,
			n.Egress.Frames, fmtDrops(n.Egress.Drops), n.Hub.RxFrames, n.Hub.TxFrames,
			n.Ingress.Frames, fmtDrops(n.Ingress.Drops), fmtDrops(n.Hub.DropMap()))
	}
	b.WriteString("\n")
	for i, n := range c.Nodes {
		peer := c.Nodes[1-i]
		lostIn := int64(n.Egress.Frames) - int64(n.Hub.RxFrames)
		lostOut := int64(peer.Hub.TxFrames) - int64(peer.Ingress.Frames+dropTotal(peer.Ingress))
		fmt.Fprintf(&b, "- %s → %s: %d frames lost between runtime %s and the hub, %d between the hub and runtime %s\n",
			n.Name, peer.Name, lostIn, n.Name, lostOut, peer.Name)
	}
	fmt.Fprintf(&b, "- host UDP receive-buffer overflows (RcvbufErrors, /proc/net/snmp) during the scenario: %d\n", c.UDPRcvbufErrors)
	fmt.Fprintf(&b, "- TAP queue overflows (the kernel's tx dropped on %s: frames the payload sent that the runtime did not read in time): %s %d, %s %d\n\n",
		s.LinkName, c.Nodes[0].Name, s.Link[0].TxDropped, c.Nodes[1].Name, s.Link[1].TxDropped)
	return b.String()
}

func dropTotal(d api.VPNDirStats) uint64 {
	var n uint64
	for _, v := range d.Drops {
		n += v
	}
	return n
}

func fmtDrops(m map[string]uint64) string {
	if len(m) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func (r *report) linkSection() string {
	var b strings.Builder
	b.WriteString("## Kernel interface counters over each scenario\n\n")
	b.WriteString("| scenario | node | interface | rx packets | rx dropped | rx errors | tx packets | tx dropped | tx errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, name := range scenarioOrder {
		s := r.get(name)
		if s == nil {
			continue
		}
		for i, l := range s.Link {
			fmt.Fprintf(&b, "| %s | %c | %s | %d | %d | %d | %d | %d | %d |\n", name, 'A'+i, s.LinkName,
				l.RxPackets, l.RxDropped, l.RxErrors, l.TxPackets, l.TxDropped, l.TxErrors)
		}
	}
	b.WriteString("\nveth counts GSO super-packets; the TAPs count single frames.\n\n")
	return b.String()
}

func (r *report) rawSection() string {
	var b strings.Builder
	b.WriteString("## Every run\n\n")
	for _, name := range scenarioOrder {
		s := r.get(name)
		if s == nil {
			continue
		}
		fmt.Fprintf(&b, "- %s: TCP %s; TCP -R %s; TCP -P %d %s", name, fmtRuns(s.Forward), fmtRuns(s.Reverse), parallelStreams, fmtRuns(s.Parallel))
		if u := s.UDP; u != nil {
			fmt.Fprintf(&b, "; UDP %d of %d datagrams lost over %.1f s", u.LostPackets, u.Packets, u.Seconds)
		}
		if p := s.Plain; p != nil {
			fmt.Fprintf(&b, "; plain receiver over %.1f s: runtime %.0f, ceiling %.0f frames/s", p.Seconds, p.RuntimeFPS, p.CeilingFPS)
		}
		for _, p := range s.Ping {
			fmt.Fprintf(&b, "; ping %d B min/avg/max/mdev %.3f/%.3f/%.3f/%.3f ms, %d/%d answered", p.Size, p.MinMs, p.AvgMs, p.MaxMs, p.MdevMs, p.Received, p.Sent)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func fmtRuns(runs []tcpRun) string {
	var parts []string
	for _, r := range runs {
		parts = append(parts, fmt.Sprintf("%.3f Gbit/s (%d retr)", r.BitsPerSecond/1e9, r.Retransmits))
	}
	return strings.Join(parts, ", ")
}

// keptMarker starts the part of the output file that other tools write
// (the VM sandbox's figures from gvpn-lab demo --vm): a rerun keeps it.
const keptMarker = "<!-- Below: not generated by make bench; kept by it. -->"

// keptSections returns the part of the file at path from keptMarker on,
// or "" when there is none.
func keptSections(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	i := strings.Index(string(b), keptMarker)
	if i < 0 {
		return ""
	}
	return "\n" + string(b[i:])
}

// writeFileAtomic replaces path with data, so that a failed run never
// leaves half a file.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
