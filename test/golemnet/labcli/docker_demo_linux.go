package labcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/test/dockerlab"
	"github.com/gvpn/gvpn/test/golemnet"
)

// Exec runs argv in the node through its ExeUnit's RunProcess, as `gvpn-lab
// exec` does, and returns its output and return code.
func (l *dockerLab) Exec(ctx context.Context, node string, argv ...string) (golemnet.Result, error) {
	p, err := l.Spawn(ctx, node, argv...)
	if err != nil {
		return golemnet.Result{}, err
	}
	defer p.Stop()
	return p.Wait(ctx)
}

// dockerProc is a command running in a Docker lab node.
type dockerProc struct {
	node string
	c    net.Conn
	cc   *ctlConn
}

// Spawn starts argv in the node and returns once the runtime runs it.
func (l *dockerLab) Spawn(ctx context.Context, node string, argv ...string) (*dockerProc, error) {
	n, err := l.Lookup(node)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", filepath.Join(n.Dir, ControlSocketName))
	if err != nil {
		return nil, fmt.Errorf("node %s does not answer: %w", node, err)
	}
	p := &dockerProc{node: node, c: c, cc: newCtlConn(c)}
	if err := p.cc.send(ctlRequest{Op: "exec", Node: node, Argv: argv}); err != nil {
		c.Close()
		return nil, err
	}
	return p, nil
}

// Wait reads the command's output until it ends.
func (p *dockerProc) Wait(ctx context.Context) (golemnet.Result, error) {
	var res golemnet.Result
	stop := context.AfterFunc(ctx, func() { p.c.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		r, err := p.cc.next()
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return res, fmt.Errorf("%s: %w", p.node, err)
		}
		res.Stdout = append(res.Stdout, r.Stdout...)
		res.Stderr = append(res.Stderr, r.Stderr...)
		switch {
		case r.Error != "":
			return res, errors.New(r.Error)
		case r.Exit != nil:
			res.ReturnCode = *r.Exit
			return res, nil
		}
	}
}

// Stop ends the command (the node kills a command whose client left).
func (p *dockerProc) Stop() { p.c.Close() }

// WaitListening waits until a TCP socket listens on port in the node.
func (l *dockerLab) WaitListening(ctx context.Context, node string, port uint16) error {
	for {
		res, err := l.Exec(ctx, node, "cat", "/proc/net/tcp", "/proc/net/tcp6")
		if err != nil {
			return fmt.Errorf("node %s: waiting for a listener on port %d: %w", node, port, err)
		}
		if golemnet.TCPListening(res.Stdout, port) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s: nothing listens on TCP port %d: %w", node, port, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dockerDemo is `gvpn-lab demo --docker`: the demo's steps with every node
// a container.
type dockerDemo struct {
	cfg     dockerLabConfig
	flags   *dockerFlags
	p       *progress
	size    int64
	seconds int
	lab     *dockerLab
	links   map[string]LinkInfo
	sum     DemoSummary
}

func demoDocker(cfg golemnet.LabConfig, lf *labFlags, f *dockerFlags, subnet netip.Prefix, size int64, seconds int,
	asJSON bool, log *logrus.Entry, stdout, stderr io.Writer) int {
	lock, err := lockStateDir(lf.stateDir)
	if err != nil {
		return fail(stderr, "demo", err)
	}
	defer lock.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d := &dockerDemo{cfg: newDockerLabConfig(cfg, f, subnet, lf.stateDir, "", log), flags: f,
		p: newProgress(stderr, terminalWidth(stderr), 6), size: size, seconds: seconds, links: map[string]LinkInfo{}}
	d.run(ctx)
	d.p.Close()
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(d.sum)
	} else {
		writeDemo(stdout, d.sum)
	}
	os.RemoveAll(d.cfg.Dir)
	if errors.Is(ctx.Err(), context.Canceled) {
		fmt.Fprintln(stderr, "gvpn-lab demo: interrupted; the lab was torn down")
		return 130
	}
	if !d.sum.OK {
		fmt.Fprintf(stderr, "gvpn-lab demo: step %s failed: %s\n", d.sum.FailedStep, d.sum.Error)
		return 1
	}
	return 0
}

func (d *dockerDemo) run(ctx context.Context) {
	d.sum.Network = d.cfg.Net.String()
	runDemo(ctx, d.p, &d.sum, []demoStepSpec{
		{"images and containers up", 15 * time.Minute, d.bringUp},
		{"ping every pair by name", 60 * time.Second, d.pingPairs},
		{"HTTP by hostname", 2 * time.Minute, d.httpByName},
		{"throughput", time.Duration(d.seconds)*time.Second + 60*time.Second, d.throughput},
		{"counters", 10 * time.Second, d.counters},
	}, func() {
		if d.lab != nil {
			d.sum.Nodes = d.nodes(context.Background())
		}
	}, d.teardown)
}

// nodes is the lab's status with what the payloads saw of vpn0.
func (d *dockerDemo) nodes(ctx context.Context) []NodeJSON {
	nodes := d.lab.status(ctx).Nodes
	for i := range nodes {
		li := d.links[nodes[i].Name]
		nodes[i].MTU, nodes[i].MAC = li.MTU, li.MAC
	}
	return nodes
}

func (d *dockerDemo) teardown() (string, error) {
	if d.lab == nil {
		return "nothing to tear down", nil
	}
	d.p.Detail("docker stop (the nodes Shutdown their runtimes), then removing containers and network")
	if err := d.lab.Close(); err != nil {
		return "", err
	}
	return "every container and the network removed", nil
}

func (d *dockerDemo) bringUp(ctx context.Context) (string, error) {
	dc := dockerlab.CLI{}
	d.p.Detail("images: gvpn-base (debootstrap, cached) and gvpn-lab (make build's binaries)")
	image, err := d.flags.dockerImage(ctx, dc, progressWriter{d.p})
	if err != nil {
		return "", err
	}
	cfg := d.cfg
	cfg.Image = image
	cfg.Progress = func(node, step string) {
		if node != "" && step != "up" {
			d.p.Detail("%s: %s", node, step)
		}
	}
	lab, err := newDockerLab(ctx, dc, cfg)
	if err != nil {
		return "", err
	}
	d.lab = lab
	for _, n := range lab.nodes {
		d.p.Detail("%s: checking vpn0", n.Name)
		res, err := lab.Exec(ctx, n.Name, "ip", "-o", "link", "show", "dev", "vpn0")
		if err != nil || res.ReturnCode != 0 {
			return "", fmt.Errorf("%s: no vpn0 in the payload (%v): %s", n.Name, err, lastLine(res.Stderr))
		}
		li, err := ParseIPLink(res.Stdout)
		if err != nil {
			return "", fmt.Errorf("%s: %w", n.Name, err)
		}
		if want := wantMAC(n.IP); li.MAC != want || !li.Up {
			return "", fmt.Errorf("%s: vpn0 has MAC %s (up %v), want %s and up", n.Name, li.MAC, li.Up, want)
		}
		d.links[n.Name] = li
	}
	return fmt.Sprintf("%s; %d node containers + hub on %s; ready after %s", image, len(lab.nodes), lab.cfg.Subnet, lab.readyTimes()), nil
}

// progressWriter shows each line written to it as the step's detail.
type progressWriter struct{ p *progress }

func (w progressWriter) Write(b []byte) (int, error) {
	if s := strings.TrimSpace(string(b)); s != "" {
		lines := strings.Split(s, "\n")
		w.p.Detail("%s", strings.TrimPrefix(lines[len(lines)-1], "gvpn-lab images: "))
	}
	return len(b), nil
}

func (d *dockerDemo) pingPairs(ctx context.Context) (string, error) {
	var sum float64
	for _, a := range d.lab.nodes {
		for _, b := range d.lab.nodes {
			if a == b {
				continue
			}
			d.p.Detail("%s → %s", a.Name, b.Name)
			res, err := d.lab.Exec(ctx, a.Name, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", b.Name)
			if err != nil {
				return "", fmt.Errorf("%s → %s: %w", a.Name, b.Name, err)
			}
			st, perr := ParsePing(res.Stdout)
			if res.ReturnCode != 0 || perr != nil || st.Received == 0 {
				return "", fmt.Errorf("%s → %s: ping exit %d: %s", a.Name, b.Name, res.ReturnCode, lastLine(append(res.Stdout, res.Stderr...)))
			}
			d.sum.Pings = append(d.sum.Pings, PingResult{From: a.Name, To: b.Name, IP: b.IP.String(), Sent: st.Sent,
				Received: st.Received, RTTMinMs: st.MinMs, RTTAvgMs: st.AvgMs, RTTMaxMs: st.MaxMs})
			sum += st.AvgMs
		}
	}
	n := len(d.sum.Pings)
	return fmt.Sprintf("%d/%d pairs answer by hostname, mean RTT %.3f ms", n, n, sum/float64(n)), nil
}

func (d *dockerDemo) httpByName(ctx context.Context) (string, error) {
	srv := d.lab.nodes[0]
	proc, err := d.lab.Spawn(ctx, srv.Name, "gvpn-lab", "serve-http", "--listen", fmt.Sprintf(":%d", demoHTTPPort))
	if err != nil {
		return "", err
	}
	defer proc.Stop()
	if err := d.lab.WaitListening(ctx, srv.Name, demoHTTPPort); err != nil {
		return "", err
	}
	want := PayloadSHA256(d.size)
	url := fmt.Sprintf("http://%s:%d/data?size=%d", srv.Name, demoHTTPPort, d.size)
	var rates []string
	for _, c := range d.lab.nodes[1:] {
		d.p.Detail("%s: curl %s | sha256sum", c.Name, url)
		r, err := d.lab.fetch(ctx, c.Name, url)
		if err != nil {
			return "", err
		}
		r.SHA256OK = r.SHA256 == want && r.Bytes == d.size
		d.sum.HTTP = append(d.sum.HTTP, r)
		if !r.SHA256OK {
			return "", fmt.Errorf("%s: got %d bytes with sha256 %s, want %d bytes with %s", c.Name, r.Bytes, r.SHA256, d.size, want)
		}
		rates = append(rates, humanBits(r.BitsPerSecond))
	}
	return fmt.Sprintf("%s fetched from http://%s:%d by name, sha256 ok (%s)",
		humanBytes(float64(d.size)), srv.Name, demoHTTPPort, strings.Join(rates, ", ")), nil
}

// fetch downloads url in the node with curl and hashes it there.
func (l *dockerLab) fetch(ctx context.Context, node, url string) (HTTPResult, error) {
	script := `f=$(mktemp) && curl -fsS --max-time 100 -o "$f" -w '%{size_download} %{time_total} ' "$1" && sha256sum "$f"; rc=$?; rm -f "$f"; exit $rc`
	res, err := l.Exec(ctx, node, "sh", "-c", script, "fetch", url)
	if err != nil {
		return HTTPResult{}, fmt.Errorf("%s: curl: %w", node, err)
	}
	if res.ReturnCode != 0 {
		return HTTPResult{}, fmt.Errorf("%s: curl %s: exit %d: %s", node, url, res.ReturnCode, lastLine(res.Stderr))
	}
	f := strings.Fields(string(res.Stdout))
	if len(f) < 3 {
		return HTTPResult{}, fmt.Errorf("%s: curl printed %q", node, res.Stdout)
	}
	n, _ := strconv.ParseInt(f[0], 10, 64)
	secs, _ := strconv.ParseFloat(f[1], 64)
	r := HTTPResult{Client: node, URL: url, Bytes: n, SHA256: f[2], Seconds: secs}
	if secs > 0 {
		r.BitsPerSecond = float64(n) * 8 / secs
	}
	return r, nil
}

func (d *dockerDemo) throughput(ctx context.Context) (string, error) {
	srv, cli := d.lab.nodes[0], d.lab.nodes[1]
	r, err := d.lab.iperf(ctx, cli.Name, srv.Name, d.seconds)
	if err != nil {
		return "", err
	}
	d.sum.Throughput = &r
	return fmt.Sprintf("%s → %s %s over TCP (%d retransmits)", cli.Name, srv.Name, humanBits(r.BitsPerSecond), r.Retransmits), nil
}

// iperf measures TCP throughput from node cli to node srv.
func (l *dockerLab) iperf(ctx context.Context, cli, srv string, seconds int) (IperfRunResult, error) {
	port := strconv.Itoa(demoIperfPort)
	proc, err := l.Spawn(ctx, srv, "iperf3", "-s", "-1", "-p", port)
	if err != nil {
		return IperfRunResult{}, err
	}
	defer proc.Stop()
	if err := l.WaitListening(ctx, srv, demoIperfPort); err != nil {
		return IperfRunResult{}, err
	}
	res, err := l.Exec(ctx, cli, "iperf3", "-c", srv, "-p", port, "-t", strconv.Itoa(seconds), "-J")
	if err != nil {
		return IperfRunResult{}, fmt.Errorf("%s: iperf3 -c: %w", cli, err)
	}
	r, perr := ParseIperf3(res.Stdout)
	if perr != nil {
		return IperfRunResult{}, fmt.Errorf("%s → %s: exit %d: %v", cli, srv, res.ReturnCode, perr)
	}
	return IperfRunResult{From: cli, To: srv, Protocol: "tcp", Seconds: r.Seconds, BitsPerSecond: r.BitsPerSecond, Retransmits: r.Retransmits}, nil
}

func (d *dockerDemo) counters(ctx context.Context) (string, error) {
	time.Sleep(1200 * time.Millisecond) // the runtimes report every second
	d.sum.Nodes = d.nodes(ctx)
	var frames, drops uint64
	for _, n := range d.sum.Nodes {
		frames += n.Hub.RxFrames
		for _, v := range n.Hub.Drops {
			drops += v
		}
	}
	return fmt.Sprintf("the hub container moved %d frames, dropped %d", frames, drops), nil
}
