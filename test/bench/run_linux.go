package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/gvpn/gvpn/test/golemnet/labcli"
)

// Nodes of every testbed: A runs the clients, B the servers.
const (
	nodeA = 0
	nodeB = 1
)

// tools are the absolute paths of the programs the measurements run. The
// gvpn runtime's RunProcess needs absolute paths, and checking them up front
// turns "not installed" into one clear message.
type tools struct {
	IP, Iperf3, Ping, SS string
}

// findTools looks every tool up in PATH (plus the sbin directories, which a
// non-login root shell may lack).
func findTools() (tools, error) {
	var t tools
	var missing []string
	for _, x := range []struct {
		name string
		dst  *string
		pkg  string
	}{
		{"ip", &t.IP, "iproute2"},
		{"iperf3", &t.Iperf3, "iperf3"},
		{"ping", &t.Ping, "iputils-ping"},
		{"ss", &t.SS, "iproute2"},
	} {
		p, err := lookPath(x.name)
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s)", x.name, x.pkg))
			continue
		}
		*x.dst = p
	}
	if len(missing) > 0 {
		return t, fmt.Errorf("missing tools: %v; `make deps` installs them", missing)
	}
	return t, nil
}

func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return filepath.Abs(p)
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// config is one benchmark invocation.
type config struct {
	Runtime  string        // gvpn-runtime binary
	Agent    string        // gvpn-agent binary, beside the runtime
	Duration time.Duration // iperf3 -t
	Reps     int           // repetitions of every throughput measurement
	Pings    int           // echo requests per RTT measurement
	Port     int           // iperf3 port inside the testbeds
	Tools    tools
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
}

func (c *config) logf(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "bench: "+format+"\n", args...)
	}
}

// cmdResult is a finished command.
type cmdResult struct {
	Stdout, Stderr []byte
	RC             int
}

func (r cmdResult) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.RC, tail(r.Stdout, 400), tail(r.Stderr, 400))
}

// background is a command left running (an iperf3 server).
type background interface {
	// Wait waits until the command exits or ctx ends.
	Wait(ctx context.Context) error
	// Stop kills the command if it still runs and waits for it. It is
	// idempotent.
	Stop()
}

// roleCPU is the CPU time one participant consumed.
type roleCPU struct {
	Role    string
	Seconds float64
}

// sample is a testbed's cumulative counters at one instant.
type sample struct {
	// CPU is per participant (runtime processes, hub, pump), cumulative.
	CPU []roleCPU
	// Frames is the number of frames the datapath under test has moved so
	// far (both directions), or 0 if this testbed cannot count them.
	Frames uint64
}

// testbed is two network endpoints, A and B, joined by the datapath under
// test. Commands run "on" a node: inside its network namespace.
type testbed interface {
	// ServerIP is node B's address as node A reaches it.
	ServerIP() string
	// LinkName is the interface carrying the traffic in each node.
	LinkName() string
	// Run runs argv on a node to its end (or until ctx ends, then kills it).
	Run(ctx context.Context, node int, argv ...string) (cmdResult, error)
	// Start starts argv on a node and leaves it running.
	Start(ctx context.Context, node int, argv ...string) (background, error)
	// Sample reads the cumulative counters.
	Sample() (sample, error)
	// Close tears everything down: processes, devices, namespaces. It
	// returns an error if something could not be removed.
	Close() error
}

// finisher is implemented by testbeds with counters of their own to report
// before teardown.
type finisher interface {
	Finish(ctx context.Context, res *scenarioResult) error
}

// tcpRun is one iperf3 run with what the testbed spent on it.
type tcpRun struct {
	labcli.IperfResult
	Reverse  bool
	Parallel int // iperf3 -P; 1 for a single stream
	// Wall is how long the client ran, seconds.
	Wall float64
	// CPU is each participant's CPU during the client run, seconds.
	CPU []roleCPU
	// Frames is the frames the datapath moved during the run (0: unknown).
	Frames uint64
	// Machine is the whole machine's CPU during the run.
	Machine machineCPU
}

// scenarioResult is everything measured on one testbed.
type scenarioResult struct {
	Name     string // "gvpn", "veth", "naive"
	Forward  []tcpRun
	Reverse  []tcpRun
	Parallel []tcpRun // 4 streams A→B
	UDP      *udpRun
	// Plain is the runtime's frame rate into a plain receiver beside the
	// kernel's ceiling for that receiver (gvpn only).
	Plain *plainRate
	Ping  []pingResult
	// Link holds each node's interface counters over the whole scenario.
	Link     [2]linkCounters
	LinkName string
	// GVPN holds the runtimes' and the hub's counters (gvpn only).
	GVPN *gvpnCounters
	// BackgroundBusy is how many CPUs were busy, on average, during the
	// second before the scenario started: other work on the machine.
	BackgroundBusy float64
	// Leftovers are the namespaces and pids this scenario created, checked
	// to be gone after teardown.
	Netns []string
	Pids  []int
}

// Gbits returns the throughputs of runs in Gbit/s.
func gbits(runs []tcpRun) []float64 {
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = r.BitsPerSecond / 1e9
	}
	return v
}

// pingSizes are the ICMP payloads measured: the default, and the largest
// that fits MTU 1220 unfragmented (1192 + 8 + 20 = 1220).
var pingSizes = []int{56, 1192}

// measure runs the whole measurement sequence on an up testbed.
func measure(ctx context.Context, cfg *config, name string, tb testbed, res *scenarioResult) error {
	res.LinkName = tb.LinkName()
	var before [2]linkCounters
	for n := range before {
		c, err := linkStats(ctx, cfg, tb, n)
		if err != nil {
			return err
		}
		before[n] = c
	}

	// One reply proves the path (and resolves ARP) before anything is timed.
	if r, err := tb.Run(ctx, nodeA, cfg.Tools.Ping, "-c", "3", "-i", "0.2", "-W", "2", tb.ServerIP()); err != nil || r.RC != 0 {
		return fmt.Errorf("%s: no connectivity from A to B (%v): %v", name, err, r)
	}
	for _, size := range pingSizes {
		p, err := runPing(ctx, cfg, tb, size)
		if err != nil {
			return fmt.Errorf("%s: ping -s %d: %w", name, size, err)
		}
		cfg.logf("[%s] ping %4d B: avg %.3f ms, mdev %.3f ms (%d/%d answered)", name, size, p.AvgMs, p.MdevMs, p.Received, p.Sent)
		res.Ping = append(res.Ping, p)
	}
	for _, reverse := range []bool{false, true} {
		for i := range cfg.Reps {
			r, err := runTCP(ctx, cfg, tb, reverse, 1)
			if err != nil {
				return fmt.Errorf("%s: iperf3%s run %d: %w", name, revFlag(reverse), i+1, err)
			}
			cfg.logf("[%s] tcp%-3s %d/%d: %.3f Gbit/s, %d retransmits", name, revFlag(reverse), i+1, cfg.Reps, r.BitsPerSecond/1e9, r.Retransmits)
			if reverse {
				res.Reverse = append(res.Reverse, r)
			} else {
				res.Forward = append(res.Forward, r)
			}
		}
	}

	for i := range cfg.Reps {
		r, err := runTCP(ctx, cfg, tb, false, parallelStreams)
		if err != nil {
			return fmt.Errorf("%s: iperf3 -P %d run %d: %w", name, parallelStreams, i+1, err)
		}
		cfg.logf("[%s] tcp -P %d %d/%d: %.3f Gbit/s, %d retransmits", name, parallelStreams, i+1, cfg.Reps, r.BitsPerSecond/1e9, r.Retransmits)
		res.Parallel = append(res.Parallel, r)
	}
	u, err := runUDP(ctx, cfg, tb)
	if err != nil {
		return fmt.Errorf("%s: iperf3 -u: %w", name, err)
	}
	cfg.logf("[%s] udp %d B: %.0f datagrams/s sent, %.0f received", name, udpPayload, u.SentPPS(), u.RecvPPS())
	res.UDP = &u

	for n := range before {
		c, err := linkStats(ctx, cfg, tb, n)
		if err != nil {
			return err
		}
		res.Link[n] = c.sub(before[n])
	}
	if f, ok := tb.(finisher); ok {
		if err := f.Finish(ctx, res); err != nil {
			return err
		}
	}
	if p, ok := tb.(plainMeasurer); ok {
		pr, err := p.PlainRate(ctx, cfg.Duration/2)
		if errors.Is(err, errNotMeasured) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: plain receiver: %w", name, err)
		}
		cfg.logf("[%s] into a plain receiver: runtime %.0f frames/s, ceiling (UDP GSO sender) %.0f frames/s: %.0f%%", name, pr.RuntimeFPS, pr.CeilingFPS, 100*pr.RuntimeFPS/pr.CeilingFPS)
		res.Plain = &pr
	}
	return nil
}

// parallelStreams is iperf3 -P of the multi-stream runs.
const parallelStreams = 4

// udpPayload is the UDP payload of the datagram-rate run: one MTU-sized
// frame per datagram.
const udpPayload = mtu - 28

// runUDP runs iperf3 -u at full speed (-b 0) from A to B once.
func runUDP(ctx context.Context, cfg *config, tb testbed) (udpRun, error) {
	port := strconv.Itoa(cfg.Port)
	srv, err := startServer(ctx, cfg, tb, port)
	if err != nil {
		return udpRun{}, err
	}
	defer srv.Stop()
	secs := iperfSeconds(cfg)
	runCtx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	r, err := tb.Run(runCtx, nodeA, cfg.Tools.Iperf3, "-c", tb.ServerIP(), "-p", port, "-t", strconv.Itoa(secs),
		"-u", "-b", "0", "-l", strconv.Itoa(udpPayload), "-J", "--connect-timeout", "5000")
	if err != nil {
		return udpRun{}, err
	}
	u, err := parseIperfUDP(r.Stdout)
	if err != nil {
		return udpRun{}, fmt.Errorf("%w (%v)", err, r)
	}
	waitCtx, cancelWait := context.WithTimeout(ctx, 5*time.Second)
	srv.Wait(waitCtx)
	cancelWait()
	return u, nil
}

func revFlag(reverse bool) string {
	if reverse {
		return " -R"
	}
	return ""
}

func runPing(ctx context.Context, cfg *config, tb testbed, size int) (pingResult, error) {
	deadline := 10 + cfg.Pings/50 // seconds; ping stops earlier once all replies are in
	r, err := tb.Run(ctx, nodeA, cfg.Tools.Ping,
		"-c", strconv.Itoa(cfg.Pings), "-i", "0.01", "-q", "-s", strconv.Itoa(size), "-M", "do",
		"-w", strconv.Itoa(deadline), tb.ServerIP())
	if err != nil {
		return pingResult{}, err
	}
	p, perr := parsePing(r.Stdout)
	if perr != nil {
		return p, fmt.Errorf("%w (%v)", perr, r)
	}
	p.Size = size
	return p, nil
}

// runTCP runs one iperf3 measurement: a one-off server on B, the client on
// A, and the testbed's counters sampled right around the client.
func runTCP(ctx context.Context, cfg *config, tb testbed, reverse bool, parallel int) (tcpRun, error) {
	port := strconv.Itoa(cfg.Port)
	srv, err := startServer(ctx, cfg, tb, port)
	if err != nil {
		return tcpRun{}, err
	}
	defer srv.Stop()

	secs := iperfSeconds(cfg)
	args := []string{"-c", tb.ServerIP(), "-p", port, "-t", strconv.Itoa(secs), "-J", "--connect-timeout", "5000"}
	if reverse {
		args = append(args, "-R")
	}
	if parallel > 1 {
		args = append(args, "-P", strconv.Itoa(parallel))
	}
	runCtx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()

	s0, err := tb.Sample()
	if err != nil {
		return tcpRun{}, err
	}
	m0, err := readMachineCPU()
	if err != nil {
		return tcpRun{}, err
	}
	t0 := time.Now()
	r, err := tb.Run(runCtx, nodeA, append([]string{cfg.Tools.Iperf3}, args...)...)
	wall := time.Since(t0).Seconds()
	if err != nil {
		return tcpRun{}, err
	}
	m1, err := readMachineCPU()
	if err != nil {
		return tcpRun{}, err
	}
	s1, err := tb.Sample()
	if err != nil {
		return tcpRun{}, err
	}
	ir, err := parseIperf(r.Stdout)
	if err != nil {
		return tcpRun{}, fmt.Errorf("%w (%v)", err, r)
	}
	if r.RC != 0 {
		return tcpRun{}, fmt.Errorf("iperf3 client: %v", r)
	}
	// The one-off server exits once the client is done; give it a moment
	// so the next run finds the port free.
	waitCtx, cancelWait := context.WithTimeout(ctx, 5*time.Second)
	srv.Wait(waitCtx)
	cancelWait()

	run := tcpRun{IperfResult: ir, Reverse: reverse, Parallel: parallel, Wall: wall, Frames: s1.Frames - s0.Frames,
		Machine: machineCPU{Busy: m1.Busy - m0.Busy, Total: m1.Total - m0.Total}}
	for i, c := range s1.CPU {
		run.CPU = append(run.CPU, roleCPU{Role: c.Role, Seconds: c.Seconds - s0.CPU[i].Seconds})
	}
	// iperf3 reports its own CPU in percent of one core over the test.
	run.CPU = append(run.CPU,
		roleCPU{Role: "iperf3 client", Seconds: ir.ClientCPU / 100 * ir.Seconds},
		roleCPU{Role: "iperf3 server", Seconds: ir.ServerCPU / 100 * ir.Seconds})
	return run, nil
}

// startServer starts a one-off iperf3 server on B and waits until it
// listens.
func startServer(ctx context.Context, cfg *config, tb testbed, port string) (background, error) {
	srv, err := tb.Start(ctx, nodeB, cfg.Tools.Iperf3, "-s", "-1", "-p", port)
	if err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	if err := waitListening(ctx, cfg, tb, port); err != nil {
		srv.Stop()
		return nil, err
	}
	return srv, nil
}

// iperfSeconds is iperf3's -t: the run length in whole seconds.
func iperfSeconds(cfg *config) int {
	return wholeSeconds(cfg.Duration)
}

// waitListening polls ss on node B until the iperf3 server listens.
func waitListening(ctx context.Context, cfg *config, tb testbed, port string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := tb.Run(ctx, nodeB, cfg.Tools.SS, "-Hltn", "sport = :"+port)
		if err != nil {
			return err
		}
		if r.RC == 0 && len(r.Stdout) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("iperf3 server never listened on port %s (ss: %v)", port, r)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func linkStats(ctx context.Context, cfg *config, tb testbed, node int) (linkCounters, error) {
	r, err := tb.Run(ctx, node, cfg.Tools.IP, "-s", "-j", "link", "show", "dev", tb.LinkName())
	if err != nil {
		return linkCounters{}, err
	}
	if r.RC != 0 {
		return linkCounters{}, fmt.Errorf("ip link show %s: %v", tb.LinkName(), r)
	}
	return parseLinkJSON(r.Stdout)
}

func readMachineCPU() (machineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, err
	}
	return parseMachineStat(b)
}

// busyWarning is the background load, in CPUs, above which the numbers
// are flagged as skewed.
const busyWarning = 0.2

// backgroundBusy measures how many CPUs the machine keeps busy over d.
func backgroundBusy(ctx context.Context, d time.Duration) (float64, error) {
	m0, err := readMachineCPU()
	if err != nil {
		return 0, err
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	m1, err := readMachineCPU()
	if err != nil {
		return 0, err
	}
	if m1.Total <= m0.Total {
		return 0, nil
	}
	return (m1.Busy - m0.Busy) / (m1.Total - m0.Total) * float64(runtime.NumCPU()), nil
}

// processCPU returns the CPU seconds process pid has used so far.
func processCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseProcStat(b)
}

func readUDPRcvbufErrors() (uint64, error) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0, err
	}
	return udpRcvbufErrors(b)
}

// runScenario sets a testbed up, measures and always tears it down. A
// teardown failure is an error even when the measurements succeeded.
func runScenario(ctx context.Context, cfg *config, name string, setup func(context.Context, *config, *scenarioResult) (testbed, error)) (res *scenarioResult, err error) {
	res = &scenarioResult{Name: name}
	if busy, err := backgroundBusy(ctx, time.Second); err == nil {
		res.BackgroundBusy = busy
		if busy > busyWarning {
			cfg.logf("[%s] WARNING: %.2f CPUs already busy before the run; other work on this machine skews the numbers", name, busy)
		}
	}
	cfg.logf("[%s] setting up", name)
	tb, err := setup(ctx, cfg, res)
	if err != nil {
		return res, fmt.Errorf("%s: setup: %w", name, err)
	}
	defer func() {
		cfg.logf("[%s] tearing down", name)
		if cerr := tb.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("%s: teardown: %w", name, cerr))
		}
	}()
	if err := measure(ctx, cfg, name, tb, res); err != nil {
		return res, err
	}
	return res, nil
}
