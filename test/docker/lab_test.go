package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gvpn/gvpn/test/dockerlab"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/golemnet/labcli"
	"github.com/gvpn/gvpn/test/privtest"
)

// guard bounds every wait; conditions are polled, never timed.
const guard = 3 * time.Minute

func splitLines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

// syncBuffer collects a process's output while tests read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// upLab is a `gvpn-lab up --docker` running in the background.
type upLab struct {
	t              *testing.T
	id, stateDir   string
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan error
	stopOnce       sync.Once
}

func startLab(t *testing.T, id, subnet string, args ...string) *upLab {
	t.Helper()
	u := &upLab{t: t, id: id, stateDir: t.TempDir(), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
	u.cmd = exec.Command(labBin, append([]string{"up", "--docker", "--image", image, "--lab-id", id,
		"--docker-subnet", subnet, "--state-dir", u.stateDir, "--log-level", "info"}, args...)...)
	u.cmd.Stdout, u.cmd.Stderr = u.stdout, u.stderr
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { u.done <- u.cmd.Wait() }()
	t.Cleanup(u.stop)
	deadline := time.Now().Add(guard)
	for !strings.Contains(u.stdout.String(), "Ctrl-C to stop") {
		select {
		case err := <-u.done:
			u.done <- err
			t.Fatalf("gvpn-lab up exited (%v) before the lab was up:\n%s", err, u.stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("lab not up after %v:\n%s", guard, u.stderr.String())
		}
	}
	t.Logf("lab up:\n%s", u.stdout.String())
	return u
}

// stop interrupts the lab as Ctrl-C does and checks it exits cleanly. It
// may be called twice.
func (u *upLab) stop() {
	u.stopOnce.Do(func() {
		u.cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-u.done:
			if err != nil {
				u.t.Errorf("gvpn-lab up: %v\n%s", err, u.stderr.String())
			}
		case <-time.After(guard):
			u.cmd.Process.Kill()
			<-u.done
			u.t.Errorf("gvpn-lab up did not stop after Ctrl-C:\n%s", u.stderr.String())
		}
	})
}

// lab runs a gvpn-lab client command against this lab.
func (u *upLab) lab(cmd string, args ...string) (stdout, stderr string, code int) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	c := exec.CommandContext(ctx, labBin, append([]string{cmd, "--state-dir", u.stateDir}, args...)...)
	var o, e bytes.Buffer
	c.Stdout, c.Stderr = &o, &e
	err := c.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		u.t.Fatalf("gvpn-lab %s: %v", cmd, err)
	}
	return o.String(), e.String(), code
}

// exec runs argv in node and fails the test unless it exits 0.
func (u *upLab) exec(node string, argv ...string) string {
	u.t.Helper()
	out, errOut, code := u.lab("exec", append([]string{node, "--"}, argv...)...)
	if code != 0 {
		u.t.Fatalf("%s: %v: exit %d\n%s%s", node, argv, code, out, errOut)
	}
	return out
}

func (u *upLab) fault(node, flag string) string {
	u.t.Helper()
	out, errOut, code := u.lab("fault", node, flag)
	if code != 0 {
		u.t.Fatalf("fault %s %s: exit %d: %s", node, flag, code, errOut)
	}
	return out
}

func (u *upLab) status() labcli.StatusJSON {
	u.t.Helper()
	out, errOut, code := u.lab("status", "--json")
	if code != 0 {
		u.t.Fatalf("status: exit %d: %s", code, errOut)
	}
	var st labcli.StatusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		u.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

func (u *upLab) node(name string) labcli.NodeJSON {
	u.t.Helper()
	for _, n := range u.status().Nodes {
		if n.Name == name {
			return n
		}
	}
	u.t.Fatalf("status has no node %s", name)
	return labcli.NodeJSON{}
}

// eventually polls cond until it holds or guard passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, guard)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ping checks that from reaches to by hostname.
func (u *upLab) ping(from, to string) {
	u.t.Helper()
	out := u.exec(from, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "3", to)
	if st, err := labcli.ParsePing([]byte(out)); err != nil || st.Received == 0 {
		u.t.Fatalf("%s → %s: %v\n%s", from, to, err, out)
	}
}

// fetchScript downloads $1 with curl in a node and prints the byte count
// and the SHA-256 of what arrived.
const fetchScript = `f=$(mktemp) && curl -fsS --max-time 600 -o "$f" -w '%{size_download} ' "$1" && sha256sum "$f"; rc=$?; rm -f "$f"; exit $rc`

func parseFetch(out string) (n int64, sum string, err error) {
	_, err = fmt.Sscan(out, &n, &sum)
	return n, sum, err
}

func TestDockerLab(t *testing.T) {
	requireImage(t)
	id := privtest.UniqueName("gvpn11-t-")
	label := dockerlab.LabelLab + "=" + id
	// A crashed lab of the same id left a container and a network: up
	// removes them.
	ctx := context.Background()
	if _, err := docker.Run(ctx, "network", "create", "--label", label, id+"-stale"); err != nil {
		t.Fatal(err)
	}
	if _, err := docker.Run(ctx, "create", "--label", label, "--name", id+"-stale", image, "true"); err != nil {
		t.Fatal(err)
	}
	u := startLab(t, id, "172.31.213.0/24", "--nodes", "4", "--agent-nodes", "1")
	if !strings.Contains(u.stderr.String(), "removed what a crashed lab left") {
		t.Errorf("no word of the crashed lab's leftovers:\n%s", u.stderr.String())
	}
	for _, kind := range []string{"container", "network"} {
		if docker.Exists(ctx, kind, id+"-stale") {
			t.Errorf("the stale %s is still there", kind)
		}
	}
	nodes := []string{"node-a", "node-b", "node-c", "node-d"}

	t.Run("labels", func(t *testing.T) {
		out, err := docker.Run(ctx, "ps", "--filter", "label="+label, "--format", `{{.Names}} {{.Label "gvpn.node"}} {{.Label "gvpn.role"}}`)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, l := range splitLines(out) {
			got[l] = true
		}
		for _, want := range []string{id + "-hub hub hub", id + "-node-a node-a node", id + "-node-d node-d node",
			id + "-node-d-payload node-d payload"} {
			if !got[want] {
				t.Errorf("no container %q among:\n%s", want, out)
			}
		}
		if len(got) != 6 {
			t.Errorf("%d containers labelled %s, want 6 (4 nodes, the hub, a payload):\n%s", len(got), label, out)
		}
		if out, _ := docker.Run(ctx, "network", "ls", "--filter", "label="+label, "--format", "{{.Name}}"); out != id {
			t.Errorf("networks labelled %s: %q, want %s", label, out, id)
		}
		st := u.status()
		if st.Docker == nil || st.Docker.LabID != id || st.Docker.Subnet != "172.31.213.0/24" {
			t.Fatalf("status docker %+v", st.Docker)
		}
		for i, n := range st.Nodes {
			want := fmt.Sprintf("172.31.213.%d", 10+i)
			if n.Docker == nil || n.Docker.Address != want || n.Docker.State != "running" || n.Docker.Container != id+"-"+n.Name || !n.Alive {
				t.Errorf("%s: status %+v docker %+v, want address %s, running", n.Name, n, n.Docker, want)
			}
		}
	})

	t.Run("every pair pings by hostname", func(t *testing.T) {
		for _, a := range nodes {
			others := slices.DeleteFunc(slices.Clone(nodes), func(b string) bool { return b == a })
			// One exec per node: the pings of one source, in turn.
			out := u.exec(a, append([]string{"sh", "-c", `for h; do ping -n -c 2 -i 0.2 -W 3 "$h" || exit 1; done`, "ping"}, others...)...)
			for _, b := range others {
				if !strings.Contains(out, "--- "+b+" ping statistics ---\n2 packets transmitted, 2 received") {
					t.Errorf("%s → %s: no clean ping in:\n%s", a, b, out)
				}
			}
		}
	})

	// serve starts gvpn-lab serve-http in node, stopped at the test's end.
	serve := func(t *testing.T, node string) {
		t.Helper()
		c := exec.Command(labBin, "exec", "--state-dir", u.stateDir, node, "--", "gvpn-lab", "serve-http", "--listen", ":8080")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Signal(syscall.SIGINT); c.Wait() })
		eventually(t, node+" listens on 8080", func() bool {
			// cat fails when IPv6 is off (no tcp6); its output counts.
			out, _, _ := u.lab("exec", node, "--", "cat", "/proc/net/tcp", "/proc/net/tcp6")
			return golemnet.TCPListening([]byte(out), 8080)
		})
	}
	// fetch runs curl in node and returns the size and the SHA-256 of what
	// it got.
	fetch := func(t *testing.T, node, url string) (int64, string) {
		t.Helper()
		out := u.exec(node, "sh", "-c", fetchScript, "fetch", url)
		n, sum, err := parseFetch(out)
		if err != nil {
			t.Fatalf("%s: curl said %q", node, out)
		}
		return n, sum
	}

	t.Run("HTTP 24 MiB by hostname, hash checked", func(t *testing.T) {
		serve(t, "node-a")
		const size = 24 << 20
		n, sum := fetch(t, "node-b", fmt.Sprintf("http://node-a:8080/data?size=%d", size))
		if n != size || sum != labcli.PayloadSHA256(size) {
			t.Fatalf("got %d bytes sha256 %s, want %d bytes %s", n, sum, size, labcli.PayloadSHA256(size))
		}
	})

	t.Run("partition 10s during a TCP transfer", func(t *testing.T) {
		serve(t, "node-a")
		// 6 MiB at 1 MiB/s: the transfer runs when the partition starts.
		const size = 6 << 20
		url := fmt.Sprintf("http://node-a:8080/data?size=%d&rate=1M", size)
		type result struct {
			n   int64
			sum string
			err error
		}
		res := make(chan result, 1)
		go func() {
			c := exec.Command(labBin, "exec", "--state-dir", u.stateDir, "node-b", "--", "sh", "-c", fetchScript, "fetch", url)
			out, err := c.Output()
			var r result
			r.err = err
			if err == nil {
				r.n, r.sum, r.err = parseFetch(string(out))
			}
			res <- r
		}()
		eventually(t, "the transfer is under way", func() bool { return u.node("node-a").Hub.RxBytes > 1<<20 })
		u.fault("node-a", "--partition")
		if st := u.node("node-a").Docker.State; st != "partitioned" {
			t.Errorf("node-a state %q while partitioned", st)
		}
		before := u.node("node-a").Hub
		time.Sleep(10 * time.Second) // the partition's length, not an assertion
		after := u.node("node-a").Hub
		select {
		case r := <-res:
			t.Fatalf("the transfer ended during the partition: %+v", r)
		default:
		}
		if after.RxFrames != before.RxFrames {
			t.Errorf("frames from node-a reached the hub during the partition: %d → %d", before.RxFrames, after.RxFrames)
		}
		u.fault("node-a", "--heal")
		var r result
		select {
		case r = <-res:
		case <-time.After(guard):
			t.Fatal("the transfer did not complete after the heal")
		}
		if r.err != nil || r.n != size || r.sum != labcli.PayloadSHA256(size) {
			t.Fatalf("after the heal: %d bytes sha256 %s err %v; want %d bytes %s", r.n, r.sum, r.err, size, labcli.PayloadSHA256(size))
		}
		if n := u.node("node-a"); n.Docker.State != "running" || n.Docker.Address != "172.31.213.10" {
			t.Errorf("node-a after the heal: %+v", n.Docker)
		}
	})

	t.Run("kill one node, the others keep talking, restart it", func(t *testing.T) {
		u.fault("node-c", "--kill")
		eventually(t, "the lab reports node-c lost", func() bool {
			n := u.node("node-c")
			return n.Docker.Lost != "" && n.Docker.State == "exited" && !n.Alive
		})
		if !strings.Contains(u.stderr.String(), "the node is lost") {
			t.Errorf("no loss in the lab's log:\n%s", u.stderr.String())
		}
		u.ping("node-a", "node-b")
		u.ping("node-b", "node-a")
		if out, _, code := u.lab("exec", "node-a", "--", "ping", "-n", "-c", "1", "-W", "1", "node-c"); code == 0 {
			t.Errorf("node-c answers while killed:\n%s", out)
		}

		out := u.fault("node-c", "--restart")
		if !strings.Contains(out, "192.168.0.4") {
			t.Errorf("restart said %q", out)
		}
		n := u.node("node-c")
		if n.IP != "192.168.0.4" || n.Docker.Lost != "" || n.Docker.State != "running" || !n.Alive {
			t.Errorf("node-c after restart: %+v %+v", n, n.Docker)
		}
		if out := u.exec("node-c", "ip", "-o", "-4", "addr", "show", "dev", "vpn0"); !strings.Contains(out, "192.168.0.4/24") {
			t.Errorf("node-c's vpn0 after restart: %s", out)
		}
		u.ping("node-a", "node-c")
		u.ping("node-c", "node-b")
	})

	t.Run("pause and unpause", func(t *testing.T) {
		u.fault("node-b", "--pause")
		if st := u.node("node-b").Docker.State; st != "paused" {
			t.Errorf("node-b state %q", st)
		}
		u.fault("node-b", "--unpause")
		u.ping("node-a", "node-b")
	})

	t.Run("payload in a container of its own", func(t *testing.T) {
		payload := id + "-node-d-payload"
		out, err := docker.Run(ctx, "inspect", "--format",
			"{{.HostConfig.Privileged}} {{.HostConfig.NetworkMode}} {{.HostConfig.CapAdd}} {{len .HostConfig.Devices}}", payload)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(out, "false none ") || !strings.Contains(out, "NET_ADMIN") {
			t.Errorf("payload container: privileged, network, caps, devices = %s", out)
		}
		// The command runs in the payload container, not the node's.
		if host := u.exec("node-d", "cat", "/proc/1/cmdline"); !strings.Contains(host, "gvpn-agent") {
			t.Errorf("node-d's commands run beside %q, not gvpn-agent", host)
		}
		u.ping("node-d", "node-a")
		serve(t, "node-d")
		const size = 4 << 20
		n, sum := fetch(t, "node-a", fmt.Sprintf("http://node-d:8080/data?size=%d", size))
		if n != size || sum != labcli.PayloadSHA256(size) {
			t.Fatalf("from node-d: %d bytes sha256 %s", n, sum)
		}
	})

	u.stop()
	u.stop()
	if cs, ns, err := docker.Labeled(ctx, label); err != nil || len(cs)+len(ns) > 0 {
		t.Errorf("left behind: containers %v networks %v (%v)", cs, ns, err)
	}
	if !strings.Contains(u.stderr.String(), "no container or network left") {
		t.Errorf("up's last words:\n%s", u.stderr.String())
	}
}

func TestDemoDocker(t *testing.T) {
	requireImage(t)
	id := privtest.UniqueName("gvpn11-d-")
	ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
	defer cancel()
	c := exec.CommandContext(ctx, labBin, "demo", "--docker", "--json", "--image", image, "--lab-id", id,
		"--docker-subnet", "172.31.215.0/24", "--state-dir", t.TempDir())
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	t.Logf("progress:\n%s", stderr.String())
	if err != nil {
		t.Fatalf("demo --docker: %v\n%s", err, out)
	}
	var sum labcli.DemoSummary
	if err := json.Unmarshal(out, &sum); err != nil {
		t.Fatalf("not the JSON summary: %v\n%s", err, out)
	}
	if !sum.OK || len(sum.Steps) != 6 || len(sum.Pings) != 6 || len(sum.HTTP) != 2 || sum.Throughput == nil {
		t.Fatalf("summary: %s", out)
	}
	for _, h := range sum.HTTP {
		if !h.SHA256OK || h.Bytes != 8<<20 {
			t.Errorf("http %+v", h)
		}
	}
	for _, n := range sum.Nodes {
		if n.Docker == nil || n.Docker.Container != id+"-"+n.Name || n.Hub.RxFrames == 0 || n.MTU != 1220 || !strings.HasPrefix(n.MAC, "90:13:") {
			t.Errorf("%s: %+v", n.Name, n)
		}
	}
	if cs, ns, err := docker.Labeled(context.Background(), dockerlab.LabelLab+"="+id); err != nil || len(cs)+len(ns) > 0 {
		t.Errorf("left behind: containers %v networks %v (%v)", cs, ns, err)
	}
}
