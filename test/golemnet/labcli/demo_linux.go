package labcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

const demoUsage = `gvpn-lab demo — the whole tour of Golem VPN on this machine, in under a minute.

Usage:
  gvpn-lab demo [--json] [flags]

Steps:
  1. bring up 3 provider nodes (node-a, node-b, node-c on 192.168.0.0/24):
     for each, gvpn-runtime is run as yagna's ExeUnit runs it — test,
     deploy, start, Hello, CreateNetwork with every node in the hosts map
  2. ping every ordered pair of nodes (3 echoes each, by IP)
  3. an HTTP server on node-a, fetched by hostname from node-b and node-c
     with curl; size and SHA-256 checked
  4. TCP throughput node-b → node-a with iperf3
  5. frames and drops per node, from the hub and from the runtimes
  6. tear down: Shutdown to every runtime, then SIGKILL, as the ExeUnit does

Then a summary (a table, or JSON with --json) on stdout. Progress goes to
stderr. If a step fails, the demo still tears down, says which step failed
and exits 1. It needs ping, curl, iperf3 and ip (make deps installs them).

Examples:
  sudo gvpn-lab demo
  sudo gvpn-lab demo --json | jq '.pings[] | [.from, .to, .rtt_avg_ms]'
  sudo gvpn-lab demo --gateway first-host     # as released ExeUnits send it
  sudo gvpn-lab demo --vm                     # node-c is a QEMU guest (make vm-image)
  sudo gvpn-lab demo --docker                 # every node a container (builds the images once)
  sudo gvpn-lab demo --image app.gvmi         # every node deploys the image, as the ExeUnit does

With --image FILE (a GVMI, squashfs, OCI or docker save archive) every node
deploys and starts with --task-package FILE: the payloads run in the image,
with its tools. It needs busybox's sh, wget, sha256sum and ip in the image;
the HTTP server and the pinger are gvpn-lab's, uploaded to /golem/work (an
image's payload gets no raw socket for busybox's ping); step 4 is skipped.
gvpn-lab mkimage --busybox --out app.gvmi makes such an image offline.

Flags:
`

// Demo result types: the JSON summary (--json) and the table are made
// from them.
type (
	// DemoSummary is the demo's result.
	DemoSummary struct {
		OK              bool            `json:"ok"`
		FailedStep      string          `json:"failed_step,omitempty"`
		Error           string          `json:"error,omitempty"`
		Network         string          `json:"network"`
		DurationSeconds float64         `json:"duration_seconds"`
		Steps           []DemoStep      `json:"steps"`
		Nodes           []NodeJSON      `json:"nodes"`
		Pings           []PingResult    `json:"pings"`
		HTTP            []HTTPResult    `json:"http"`
		Throughput      *IperfRunResult `json:"throughput"`
	}
	// DemoStep is one step's outcome.
	DemoStep struct {
		Name    string  `json:"name"`
		OK      bool    `json:"ok"`
		Seconds float64 `json:"seconds"`
		Result  string  `json:"result"`
	}
	// PingResult is one ordered pair.
	PingResult struct {
		From     string  `json:"from"`
		To       string  `json:"to"`
		IP       string  `json:"ip"`
		Sent     int     `json:"sent"`
		Received int     `json:"received"`
		RTTMinMs float64 `json:"rtt_min_ms"`
		RTTAvgMs float64 `json:"rtt_avg_ms"`
		RTTMaxMs float64 `json:"rtt_max_ms"`
	}
	// HTTPResult is one download.
	HTTPResult struct {
		Client        string  `json:"client"`
		URL           string  `json:"url"`
		Bytes         int64   `json:"bytes"`
		SHA256        string  `json:"sha256"`
		SHA256OK      bool    `json:"sha256_ok"`
		Seconds       float64 `json:"seconds"`
		BitsPerSecond float64 `json:"bits_per_second"`
	}
	// IperfRunResult is the throughput run.
	IperfRunResult struct {
		From          string  `json:"from"`
		To            string  `json:"to"`
		Protocol      string  `json:"protocol"`
		Seconds       float64 `json:"seconds"`
		BitsPerSecond float64 `json:"bits_per_second"`
		Retransmits   int64   `json:"retransmits"`
	}
)

var errInterrupted = errors.New("interrupted")

// demoTools are the programs the demo runs inside the nodes.
var demoTools = []string{"ping", "curl", "iperf3", "ip", "cat"}

const (
	demoHTTPPort  = 8080
	demoIperfPort = 5201
)

type demoRun struct {
	lab     labBackend
	p       *progress
	self    string
	size    int64
	seconds int
	started bool
	info    labInfo
	nodes   []labNode
	links   map[string]LinkInfo
	sum     DemoSummary
}

func demo(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", demoUsage, stdout)
	asJSON := fs.Bool("json", false, "print the summary as JSON on stdout instead of tables")
	sizeFlag := fs.String("http-size", "8M", "`bytes` each HTTP client fetches (k, M, G suffixes)")
	seconds := fs.Int("iperf-time", 3, "`seconds` of the iperf3 run")
	withVM := fs.Bool("vm", false, "make the last node a QEMU guest (gvpn-runtime --sandbox vm; make vm-image first):\nit pings every node and fetches over HTTP with busybox, beside the netns nodes")
	var lf labFlags
	lf.add(fs.FlagSet)
	var df dockerFlags
	df.add(fs)
	if _, code, ok := parseFlags(fs, args, stderr, 0); !ok {
		return code
	}
	cfg, err := lf.config(3, "")
	if err != nil {
		return fail(stderr, "demo", err)
	}
	if cfg.NoHosts {
		return fail(stderr, "demo", usagef("--no-hosts: the demo fetches a file by hostname; use it with up"))
	}
	if *withVM {
		cfg.VMNodes = 1
	}
	if !df.docker && df.image != "" {
		// Without --docker, --image is a task package, not a lab image.
		if cfg.TaskPackage, err = filepath.Abs(df.image); err != nil {
			return fail(stderr, "demo", err)
		}
		if _, err := os.Stat(cfg.TaskPackage); err != nil {
			return fail(stderr, "demo", usagef("--image: %v", err))
		}
		if *withVM {
			return fail(stderr, "demo", usagef("--image and --vm together: the VM node boots the image too; use up --vm-nodes with a GVMI by hand"))
		}
		df.image, df.imageIsPackage = "", true
	}
	size, err := ParseSize(*sizeFlag)
	if err != nil || size < 1 || size > 1<<30 {
		return fail(stderr, "demo", usagef("--http-size %q: want 1 byte to 1G", *sizeFlag))
	}
	if *seconds < 1 || *seconds > 30 {
		return fail(stderr, "demo", usagef("--iperf-time %d: want 1 to 30 seconds", *seconds))
	}
	images := &progressWriter{}
	lab, lock, _, err := openLab(fs, &lf, &df, cfg, "--vm", demoTools, images, stderr)
	if err != nil {
		return fail(stderr, "demo", err)
	}
	defer lock.Close()
	self, err := os.Executable()
	if err != nil {
		return fail(stderr, "demo", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d := &demoRun{
		lab: lab, self: self, size: size, seconds: *seconds,
		p:     newProgress(stderr, terminalWidth(stderr), 6),
		links: map[string]LinkInfo{},
	}
	images.p = d.p
	d.sum.Network = cfg.Net.Masked().String()
	d.run(ctx)
	d.p.Close()
	os.Remove(lock.Name()) // still held: a lab that stopped leaves an empty state dir

	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(d.sum)
	} else {
		writeDemo(stdout, d.sum)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		lab.Cleanup(keepNothing) // nothing to debug
		fmt.Fprintln(stderr, "gvpn-lab demo: interrupted; the lab was torn down")
		return 130
	}
	if !d.sum.OK {
		msg := fmt.Sprintf("gvpn-lab demo: step %s failed: %s", d.sum.FailedStep, d.sum.Error)
		if logs := lab.Cleanup(keepAll); logs != "" {
			msg += " (runtime logs: " + logs + ")"
		}
		fmt.Fprintln(stderr, msg)
		return 1
	}
	lab.Cleanup(keepNothing) // a passing demo printed no log path
	return 0
}

// progressWriter shows each line written to it as the step's detail.
type progressWriter struct{ p *progress }

func (w *progressWriter) Write(b []byte) (int, error) {
	if s := strings.TrimSpace(string(b)); s != "" && w.p != nil {
		lines := strings.Split(s, "\n")
		w.p.Detail("%s", strings.TrimPrefix(lines[len(lines)-1], "gvpn-lab images: "))
	}
	return len(b), nil
}

func (d *demoRun) run(ctx context.Context) {
	runDemo(ctx, d.p, &d.sum, []demoStepSpec{
		// The back-end bounds its own bring-up (a VM boots, an image builds).
		{"bring up 3 nodes", 20 * time.Minute, d.bringUp},
		{"ping every pair", 60 * time.Second, d.pingPairs},
		{"HTTP by hostname", 2 * time.Minute, d.httpByName},
		{"throughput", time.Duration(d.seconds)*time.Second + 60*time.Second, d.throughput},
		{"counters", 10 * time.Second, d.counters},
	}, func() {
		if d.started {
			d.sum.Nodes = d.status(context.Background())
		}
	}, d.teardown)
}

// demoStepSpec is one step of a demo: its title, its time limit and its
// work, which returns the one-line result.
type demoStepSpec struct {
	title   string
	timeout time.Duration
	fn      func(context.Context) (string, error)
}

// runDemo runs the steps in order until one fails, shows each on p and
// records it in sum; then, whatever happened, it fills sum.Nodes with
// snapshot if no step did (a failed run still shows what the nodes saw)
// and runs teardown as the last step.
func runDemo(ctx context.Context, p *progress, sum *DemoSummary, steps []demoStepSpec, snapshot func(), teardown func() (string, error)) {
	start := time.Now()
	total := len(steps) + 1
	failed := false
	record := func(i int, title string, t0 time.Time, res string, err error) {
		sum.Steps = append(sum.Steps, DemoStep{Name: title, OK: err == nil, Seconds: time.Since(t0).Seconds(), Result: res})
		if err == nil {
			p.Done(res)
			return
		}
		p.Failed(err)
		sum.Steps[len(sum.Steps)-1].Result = err.Error()
		if !failed {
			sum.FailedStep = fmt.Sprintf("%d/%d (%s)", i, total, title)
			sum.Error = err.Error()
			failed = true
		}
	}
	for i, st := range steps {
		p.Step(i+1, st.title)
		t0 := time.Now()
		sctx, cancel := context.WithTimeout(ctx, st.timeout)
		res, err := st.fn(sctx)
		cancel()
		if ctx.Err() != nil {
			err = errInterrupted // whatever the step says, it was cut short
		}
		record(i+1, st.title, t0, res, err)
		if err != nil {
			break
		}
	}
	if sum.Nodes == nil {
		snapshot()
	}
	p.Step(total, "tear down")
	t0 := time.Now()
	res, err := teardown()
	record(total, "tear down", t0, res, err)
	sum.OK = !failed
	sum.DurationSeconds = time.Since(start).Seconds()
}

func (d *demoRun) bringUp(ctx context.Context) (string, error) {
	info, err := d.lab.Start(ctx, func(node, step string) {
		switch {
		case node == "" && step == "test":
			d.p.Detail("runtime self-test (gvpn-runtime test)")
		case node != "" && step != "up":
			d.p.Detail("%s: %s", node, step)
		}
	})
	if err != nil {
		return "", err
	}
	d.started, d.info, d.nodes = true, info, d.lab.Nodes()
	for _, n := range d.nodes {
		d.p.Detail("%s: checking vpn0", n.Name)
		res, err := labExec(ctx, d.lab, n.Name, "ip", "-o", "link", "show", "dev", "vpn0")
		if err != nil {
			return "", fmt.Errorf("%s: ip link: %w", n.Name, err)
		}
		if res.ReturnCode != 0 {
			return "", fmt.Errorf("%s: no vpn0 in the payload: %s", n.Name, lastLine(res.Stderr))
		}
		li, err := ParseIPLink(res.Stdout)
		if err != nil {
			return "", fmt.Errorf("%s: %w", n.Name, err)
		}
		if want := wantMAC(n.IP); li.MAC != want {
			return "", fmt.Errorf("%s: vpn0 has MAC %s, want %s (90:13:<ipv4>)", n.Name, li.MAC, want)
		}
		if !li.Up {
			return "", fmt.Errorf("%s: vpn0 is down", n.Name)
		}
		d.links[n.Name] = li
	}
	return fmt.Sprintf("%s; vpn0 MTU %d, MAC 90:13:<ip>", info.Up, d.links[d.nodes[0].Name].MTU), nil
}

// wantMAC is the MAC the runtime must give the payload's interface.
func wantMAC(ip netip.Addr) string {
	b := ip.As4()
	return fmt.Sprintf("90:13:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

func (d *demoRun) pingPairs(ctx context.Context) (string, error) {
	// A payload in an image gets no raw socket for busybox's ping: it
	// runs gvpn-lab's own (an ICMP datagram socket), uploaded like a
	// requestor's program.
	labPing := map[string]string{}
	for _, n := range d.nodes {
		if n.Image && !n.VM {
			bin, err := d.lab.Install(n.Name, d.self, "gvpn-lab")
			if err != nil {
				return "", fmt.Errorf("%s: upload gvpn-lab: %w", n.Name, err)
			}
			labPing[n.Name] = bin
		}
	}
	var sum float64
	for _, a := range d.nodes {
		for _, b := range d.nodes {
			if a == b {
				continue
			}
			d.p.Detail("%s → %s (%s)", a.Name, b.Name, b.IP)
			argv := []string{"ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", b.IP.String()}
			if bin := labPing[a.Name]; bin != "" {
				argv = []string{bin, "ping", "-c", "3", "-W", "2", b.IP.String()}
			} else if a.busybox() {
				argv = slices.Delete(argv, 1, 2) // busybox's ping prints numbers anyway and has no -n
			}
			res, err := labExec(ctx, d.lab, a.Name, argv...)
			if err != nil {
				return "", fmt.Errorf("%s → %s: %w", a.Name, b.Name, err)
			}
			st, perr := ParsePing(res.Stdout)
			if res.ReturnCode != 0 || perr != nil || st.Received == 0 {
				return "", fmt.Errorf("%s → %s (%s): ping exit %d: %s", a.Name, b.Name, b.IP, res.ReturnCode, lastLine(append(res.Stdout, res.Stderr...)))
			}
			d.sum.Pings = append(d.sum.Pings, PingResult{
				From: a.Name, To: b.Name, IP: b.IP.String(), Sent: st.Sent, Received: st.Received,
				RTTMinMs: st.MinMs, RTTAvgMs: st.AvgMs, RTTMaxMs: st.MaxMs,
			})
			sum += st.AvgMs
		}
	}
	n := len(d.sum.Pings)
	return fmt.Sprintf("%d/%d pairs answer, mean RTT %.3f ms", n, n, sum/float64(n)), nil
}

func (d *demoRun) httpByName(ctx context.Context) (string, error) {
	srv := d.nodes[0]
	d.p.Detail("starting an HTTP server on %s (gvpn-lab serve-http, through RunProcess)", srv.Name)
	bin, err := d.lab.Install(srv.Name, d.self, "gvpn-lab")
	if err != nil {
		return "", fmt.Errorf("%s: upload gvpn-lab: %w", srv.Name, err)
	}
	proc, err := d.lab.Spawn(ctx, srv.Name, bin, "serve-http", "--listen", fmt.Sprintf(":%d", demoHTTPPort))
	if err != nil {
		return "", fmt.Errorf("%s: start the HTTP server: %w", srv.Name, err)
	}
	defer proc.Stop()
	if err := waitListening(ctx, d.lab, srv.Name, demoHTTPPort); err != nil {
		return "", err
	}
	want := PayloadSHA256(d.size)
	url := fmt.Sprintf("http://%s:%d/data?size=%d", srv.Name, demoHTTPPort, d.size)
	var rates []string
	for _, c := range d.nodes[1:] {
		r, err := d.fetch(ctx, c, url)
		if err != nil {
			return "", err
		}
		r.SHA256OK = r.SHA256 == want && r.Bytes == d.size
		d.sum.HTTP = append(d.sum.HTTP, r)
		if !r.SHA256OK {
			return "", fmt.Errorf("%s: got %d bytes with sha256 %s, want %d bytes with %s", c.Name, r.Bytes, r.SHA256, d.size, want)
		}
		rate := humanBits(r.BitsPerSecond)
		switch {
		case c.VM:
			rate += " into the VM"
		case c.Image:
			rate += " into the image"
		}
		rates = append(rates, rate)
	}
	return fmt.Sprintf("%s and %s fetched %s from http://%s:%d by name, sha256 ok (%s)",
		d.nodes[1].Name, d.nodes[2].Name, humanBytes(float64(d.size)), srv.Name, demoHTTPPort, strings.Join(rates, ", ")), nil
}

// fetch downloads url in node c and hashes it there: with curl into the
// payload's /tmp, or in a busybox payload (a VM, an image) with wget
// piped into sha256sum. wget says nothing of the size, nor of the time:
// that is the whole RunProcess, so its rate slightly understates the
// transfer.
func (d *demoRun) fetch(ctx context.Context, c labNode, url string) (HTTPResult, error) {
	r := HTTPResult{Client: c.Name, URL: url}
	if c.busybox() {
		d.p.Detail("%s (busybox): wget %s | sha256sum", c.Name, url)
		t0 := time.Now()
		res, err := labExec(ctx, d.lab, c.Name, "sh", "-c", `wget -q -O - "$1" | sha256sum`, "fetch", url)
		r.Seconds = time.Since(t0).Seconds()
		if err != nil {
			return r, fmt.Errorf("%s: wget: %w", c.Name, err)
		}
		f := strings.Fields(string(res.Stdout))
		if res.ReturnCode != 0 || len(f) == 0 {
			return r, fmt.Errorf("%s: wget %s: exit %d: %s", c.Name, url, res.ReturnCode, lastLine(res.Stderr))
		}
		r.Bytes, r.SHA256, r.BitsPerSecond = d.size, f[0], float64(d.size)*8/r.Seconds
		return r, nil
	}
	d.p.Detail("%s: curl %s | sha256sum", c.Name, url)
	script := `f=$(mktemp) && curl -fsS --max-time 100 -o "$f" -w '%{size_download} %{time_total} ' "$1" && sha256sum "$f"; rc=$?; rm -f "$f"; exit $rc`
	res, err := labExec(ctx, d.lab, c.Name, "sh", "-c", script, "fetch", url)
	if err != nil {
		return r, fmt.Errorf("%s: curl: %w", c.Name, err)
	}
	if res.ReturnCode != 0 {
		return r, fmt.Errorf("%s: curl %s: exit %d: %s", c.Name, url, res.ReturnCode, lastLine(res.Stderr))
	}
	f := strings.Fields(string(res.Stdout))
	if len(f) < 3 {
		return r, fmt.Errorf("%s: curl printed %q", c.Name, res.Stdout)
	}
	r.Bytes, _ = strconv.ParseInt(f[0], 10, 64)
	r.Seconds, _ = strconv.ParseFloat(f[1], 64)
	r.SHA256 = f[2]
	if r.Seconds > 0 {
		r.BitsPerSecond = float64(r.Bytes) * 8 / r.Seconds
	}
	return r, nil
}

func (d *demoRun) throughput(ctx context.Context) (string, error) {
	srv, cli := d.nodes[0], d.nodes[1]
	if srv.Image || cli.Image {
		return "skipped: the payloads run in the image, which has no iperf3", nil
	}
	d.p.Detail("%s → %s: iperf3 -c %s -t %d (TCP)", cli.Name, srv.Name, srv.Name, d.seconds)
	r, err := iperf(ctx, d.lab, cli.Name, srv.Name, d.seconds)
	if err != nil {
		return "", err
	}
	d.sum.Throughput = &r
	return fmt.Sprintf("%s → %s %s over TCP (%d retransmits)", cli.Name, srv.Name, humanBits(r.BitsPerSecond), r.Retransmits), nil
}

func (d *demoRun) counters(ctx context.Context) (string, error) {
	// The runtimes report every second, when their counters changed:
	// wait for a report newer than the traffic, or two intervals.
	d.p.Detail("waiting for the runtimes' next gvpn.vpn reports")
	before := runtimeCounters(d.lab.Status(ctx).Nodes)
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(250 * time.Millisecond)
		now := runtimeCounters(d.lab.Status(ctx).Nodes)
		fresh := 0
		for name, c := range now {
			if c != before[name] {
				fresh++
			}
		}
		if fresh == len(before) {
			break
		}
	}
	d.sum.Nodes = d.status(ctx)
	var frames, drops uint64
	for _, n := range d.sum.Nodes {
		frames += n.Hub.RxFrames
		for _, v := range n.Hub.Drops {
			drops += v
		}
	}
	return fmt.Sprintf("the hub moved %d frames, dropped %d", frames, drops), nil
}

// runtimeCounters is each node's last reported counters, as JSON (a
// report that changed nothing is not sent).
func runtimeCounters(nodes []NodeJSON) map[string]string {
	out := map[string]string{}
	for _, n := range nodes {
		b, _ := json.Marshal(n.Runtime)
		out[n.Name] = string(b)
	}
	return out
}

// status is the lab's status with what the payloads saw of vpn0.
func (d *demoRun) status(ctx context.Context) []NodeJSON {
	nodes := d.lab.Status(ctx).Nodes
	for i := range nodes {
		li := d.links[nodes[i].Name]
		nodes[i].MTU, nodes[i].MAC = li.MTU, li.MAC
	}
	return nodes
}

func (d *demoRun) teardown() (string, error) {
	if !d.started {
		return "nothing to tear down", nil
	}
	d.p.Detail("Shutdown to every runtime, as the ExeUnit does; then removing what the lab made")
	if err := d.lab.Close(); err != nil {
		return "", err
	}
	return d.info.Gone, nil
}

func writeDemo(w io.Writer, s DemoSummary) {
	verdict := "all steps passed"
	if !s.OK {
		verdict = "FAILED at step " + s.FailedStep
	}
	fmt.Fprintf(w, "\ngvpn-lab demo: 3 nodes on %s, %s in %.1fs\n", s.Network, verdict, s.DurationSeconds)
	if len(s.Nodes) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tIP\tVPN0 MAC\tMTU\tNETNS\tREADY")
		for _, n := range s.Nodes {
			mtu := "-"
			if n.MTU > 0 {
				mtu = strconv.Itoa(n.MTU)
			}
			sb := orDash(n.Netns)
			if n.VM {
				sb = "(QEMU guest)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1fs\n", n.Name, n.IP, orDash(n.MAC), mtu, sb, n.ReadySeconds)
		}
		tw.Flush()
	}
	if len(s.Pings) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PING (by IP)\t\tRTT min / avg / max\tREPLIES")
		for _, p := range s.Pings {
			fmt.Fprintf(tw, "%s → %s\t%s\t%.3f / %.3f / %.3f ms\t%d/%d\n", p.From, p.To, p.IP, p.RTTMinMs, p.RTTAvgMs, p.RTTMaxMs, p.Received, p.Sent)
		}
		tw.Flush()
	}
	if len(s.HTTP) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "HTTP (by hostname)\tURL\tSIZE\tSHA-256\tRATE")
		for _, h := range s.HTTP {
			ok := "ok"
			if !h.SHA256OK {
				ok = "MISMATCH"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.Client, h.URL, humanBytes(float64(h.Bytes)), ok, humanBits(h.BitsPerSecond))
		}
		tw.Flush()
	}
	if t := s.Throughput; t != nil {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "THROUGHPUT (iperf3)\tPROTOCOL\tTIME\tRATE\tRETRANSMITS")
		fmt.Fprintf(tw, "%s → %s\t%s\t%.1fs\t%s\t%d\n", t.From, t.To, strings.ToUpper(t.Protocol), t.Seconds, humanBits(t.BitsPerSecond), t.Retransmits)
		tw.Flush()
	}
	if len(s.Nodes) > 0 {
		fmt.Fprintln(w)
		writeCounters(w, s.Nodes)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// lastLine returns the last non-empty line of out, for error messages.
func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if l == "" {
		return "(no output)"
	}
	return l
}

// terminalWidth returns w's width in columns if it is a terminal, else 0.
func terminalWidth(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col < 20 {
		return 80
	}
	return int(ws.Col)
}
