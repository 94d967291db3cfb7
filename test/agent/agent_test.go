package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/offload"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/payload"
	"github.com/gvpn/gvpn/test/privtest"
	"github.com/gvpn/gvpn/vsock"
)

// TestAgentNodesTalk: what the agent kind does beyond the contract every
// kind keeps (test/contract, which checks vpn0, ping and TCP both ways,
// RunProcess, KillProcess, the agent's drops in gvpn.vpn and a clean
// Shutdown): the payload runs in the agent's namespace, names resolve
// through the agent's hosts file and PATH, large outputs arrive whole,
// an unknown pid is NOT_FOUND, and the host's /etc/hosts is untouched.
func TestAgentNodesTalk(t *testing.T) {
	before := hostsHash(t)
	_, nodes := twoNodes(t, nodeOpts{})
	a, b := nodes[0], nodes[1]
	ctx := privtest.Context(t, 90*time.Second)

	nsFile, err := os.Stat(filepath.Join("/run/netns", a.ns.name))
	if err != nil {
		t.Fatal(err)
	}
	ino := nsFile.Sys().(*syscall.Stat_t).Ino
	if got := strings.TrimSpace(a.run(t, ctx, "/bin/readlink", "/proc/self/ns/net")); got != fmt.Sprintf("net:[%d]", ino) {
		t.Fatalf("payload process in %s, want the agent's namespace net:[%d]", got, ino)
	}
	if out := b.run(t, ctx, "/bin/ping", "-c", "1", "-W", "2", "node-a"); !strings.Contains(out, "192.168.7.2") {
		t.Fatalf("ping node-a did not resolve through the agent's hosts file: %s", out)
	}
	if out := a.run(t, ctx, "echo", "bare", "name"); out != "bare name\n" {
		t.Fatalf("bare program name through PATH: %q", out)
	}
	big := a.run(t, ctx, "/bin/sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x")
	if len(big) != 300000 || strings.Trim(big, "x") != "" {
		t.Fatalf("300000 bytes of output arrived as %d bytes", len(big))
	}
	var ce *golemnet.CallError
	if err := a.eu.KillProcess(ctx, 999999, syscall.SIGTERM); !errors.As(err, &ce) || ce.Code != api.Response_NOT_FOUND {
		t.Fatalf("kill of an unknown pid: %v, want NOT_FOUND", err)
	}
	for _, n := range nodes {
		if err := n.eu.ProtocolError(); err != nil {
			t.Fatal(err)
		}
		if err := n.eu.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		n.checkGone(t)
	}
	if hostsHash(t) != before {
		t.Fatal("the host's /etc/hosts changed")
	}
}

// httpBothWays serves size bytes over HTTP from each node's payload to the
// other's, by hostname, and compares the bodies by hash.
func httpBothWays(t *testing.T, ctx context.Context, a, b *node, size int) {
	t.Helper()
	self, _ := os.Executable()
	for _, dir := range []struct{ server, client *node }{{a, b}, {b, a}} {
		srv, err := dir.server.eu.Spawn(ctx, "/usr/bin/env", payload.Env+"=http-serve", self, "0.0.0.0:8080")
		if err != nil {
			t.Fatal(err)
		}
		dir.server.sh(t, ctx, "for i in $(seq 200); do ss -ltn | grep -q ':8080 ' && exit 0; sleep 0.05; done; exit 1")
		out := dir.client.sh(t, ctx, fmt.Sprintf("curl -sS --fail --max-time 30 http://%s:8080/bytes/%d | sha256sum", dir.server.name, size))
		if got := strings.Fields(out)[0]; got != payload.Hash(size) {
			t.Fatalf("HTTP %s → %s: body hash %s, want %s", dir.server.name, dir.client.name, got, payload.Hash(size))
		}
		if err := dir.server.eu.KillProcess(ctx, srv.Pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if r, err := srv.Wait(ctx); err != nil || r.ReturnCode != 128+15 {
			t.Fatalf("HTTP server after SIGTERM: rc %d err %v", r.ReturnCode, err)
		}
	}
}

// TestAgentSuperframes: the bridge carries superframes only when both ends
// agree (docs/bridge.md §2.4). With a new runtime and a new agent, the
// payload's TCP superframes cross the bridge whole and are cut by the
// runtime (its split count grows, the agent's stays 0); with an agent that
// does not offer them, or a runtime that does not ask, the bridge carries
// plain frames and the agent cuts and glues at its TAP, as before. Either
// way the transfers arrive intact, both ways.
func TestAgentSuperframes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		opts        nodeOpts
		superframes bool
	}{
		{"new runtime, new agent", nodeOpts{}, true},
		{"old agent", nodeOpts{agentArgs: []string{"--no-vnet-hdr"}}, false},
		{"old runtime", nodeOpts{runtimeArgs: []string{"--bridge-plain"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, nodes := twoNodes(t, tc.opts)
			a, b := nodes[0], nodes[1]
			ctx := privtest.Context(t, 90*time.Second)
			a.run(t, ctx, "/bin/ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.7.3")
			httpBothWays(t, ctx, a, b, 16<<20)
			if err := a.eu.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			file, err := os.ReadFile(api.LogPath(a.workdir))
			if err != nil {
				t.Fatal(err)
			}
			logs := string(file)
			runtimeSplit := logCounter(t, logs, "bridge data link closed", "split_superframes")
			runtimeGlued := logCounter(t, logs, "bridge data link closed", "coalesced_superframes")
			// The agent's own offload link (plain mode) reports its counts as
			// link events, which a line shows once they are non-zero.
			agentSplit := logEvent(t, logs, "final counters", offload.EventSplit)
			agentGlued := logEvent(t, logs, "final counters", offload.EventCoalesced)
			t.Logf("node-a: runtime split %d superframes from the bridge and glued %d for it; agent split %d and glued %d at its TAP",
				runtimeSplit, runtimeGlued, agentSplit, agentGlued)
			if tc.superframes {
				if runtimeSplit == 0 || runtimeGlued == 0 || agentSplit != 0 || agentGlued != 0 {
					t.Fatal("superframes agreed: the runtime must cut them and the agent must pass its TAP's packets unchanged")
				}
				if !strings.Contains(logs, "bridge: superframes with virtio-net headers") {
					t.Fatal("no log line says the bridge carries superframes")
				}
			} else if runtimeSplit != 0 || runtimeGlued != 0 || agentSplit == 0 {
				t.Fatal("plain bridge: the agent must cut its TAP's superframes, and the runtime receive none")
			}
		})
	}
}

// logCounter returns the number in the last log line containing msg that
// has the field name=N.
func logCounter(t *testing.T, logs, msg, name string) uint64 {
	t.Helper()
	re := regexp.MustCompile(`(?:^|\s)` + name + `=(\d+)`)
	var last string
	for line := range strings.Lines(logs) {
		if strings.Contains(line, msg) {
			if m := re.FindStringSubmatch(line); m != nil {
				last = m[1]
			}
		}
	}
	if last == "" {
		t.Fatalf("no log line %q with %s=N", msg, name)
	}
	n, _ := strconv.ParseUint(last, 10, 64)
	return n
}

// logEvent is logCounter for an event count, which a log line holds only
// once it is non-zero: 0 when the lines with msg lack it.
func logEvent(t *testing.T, logs, msg, name string) uint64 {
	t.Helper()
	seen := false
	for line := range strings.Lines(logs) {
		if strings.Contains(line, msg) {
			seen = true
			if strings.Contains(line, " "+name+"=") {
				return logCounter(t, logs, msg, name)
			}
		}
	}
	if !seen {
		t.Fatalf("no log line %q", msg)
	}
	return 0
}

// TestAgentReconnects: cutting the bridge between the agent and its
// runtime (both connections) loses some frames but never reorders them;
// the agent re-dials, keeps its interface, and traffic and RunProcess
// resume. Then the agent is killed outright: the runtime reports its
// processes gone, runs the command again, configures the new agent, and
// ping works again.
func TestAgentReconnects(t *testing.T) {
	privtest.RequireRoot(t)
	dir, err := os.MkdirTemp("", "gvt-ag-px-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	rt := filepath.Join(dir, "rt.sock")
	px := filepath.Join(dir, "px.sock")
	// The proxies must listen before the agent dials; the runtime's sockets
	// exist only once it runs, and the proxies dial them per connection.
	dataProxy := startProxy(t, px, rt)
	ctlProxy := startProxy(t, px+".ctl", rt+".ctl")
	_, nodes := twoNodes(t, nodeOpts{runtimeBridge: "unix://" + rt, agentArgs: []string{"--bridge", "unix://" + px}})
	a, b := nodes[0], nodes[1]
	ctx := privtest.Context(t, 90*time.Second)
	self, _ := os.Executable()

	a.run(t, ctx, "/bin/ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.7.3")
	ifBefore := a.run(t, ctx, "/sbin/ip", "-o", "link", "show", "vpn0")

	// A numbered UDP stream from a to b, with the bridge cut in the middle.
	recv, err := b.eu.Spawn(ctx, "/usr/bin/env", payload.Env+"=udp-seq-recv", self, "0.0.0.0:9000", "3s")
	if err != nil {
		t.Fatal(err)
	}
	b.sh(t, ctx, "for i in $(seq 200); do ss -lun | grep -q ':9000 ' && exit 0; sleep 0.05; done; exit 1")
	const count = 3000
	send, err := a.eu.Spawn(ctx, "/usr/bin/env", payload.Env+"=udp-seq-send", self, "192.168.7.3:9000", strconv.Itoa(count), "1ms")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if n := dataProxy.cut(); n == 0 {
		t.Fatal("no data connection through the proxy to cut")
	}
	if n := ctlProxy.cut(); n == 0 {
		t.Fatal("no control connection through the proxy to cut")
	}
	// The sender's exit notice may have to wait for the new control
	// connection: that is the point.
	if r, err := send.Wait(ctx); err != nil || r.ReturnCode != 0 {
		t.Fatalf("sender: rc %d err %v stderr %s", r.ReturnCode, err, r.Stderr)
	}
	r, err := recv.Wait(ctx)
	if err != nil || r.ReturnCode != 0 {
		t.Fatalf("receiver: rc %d err %v stderr %s", r.ReturnCode, err, r.Stderr)
	}
	var got, last, reordered int
	if _, err := fmt.Sscanf(lastLine(string(r.Stdout)), "received %d last %d reordered %d", &got, &last, &reordered); err != nil {
		t.Fatalf("receiver output %q: %v", r.Stdout, err)
	}
	t.Logf("numbered stream across the cut: %d of %d datagrams arrived, last %d, %d out of order", got, count, last, reordered)
	if reordered != 0 {
		t.Fatalf("%d datagrams arrived after a higher-numbered one: frames were reordered", reordered)
	}
	if got >= count {
		t.Fatalf("all %d datagrams arrived: the cut did not happen while the stream ran", got)
	}
	if last < count-100 || got < count/4 {
		t.Fatalf("only %d datagrams, last %d: traffic did not resume after the reconnect", got, last)
	}
	if dataProxy.open() == 0 || ctlProxy.open() == 0 {
		t.Fatalf("the agent did not reconnect (data %d, control %d connections)", dataProxy.open(), ctlProxy.open())
	}
	// Same interface (same index, same address): it stayed up across the
	// reconnect.
	if ifAfter := a.run(t, ctx, "/sbin/ip", "-o", "link", "show", "vpn0"); strings.Fields(ifAfter)[0] != strings.Fields(ifBefore)[0] {
		t.Fatalf("vpn0 was recreated across a reconnect:\nbefore %s\nafter  %s", ifBefore, ifAfter)
	}
	a.run(t, ctx, "/bin/ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.7.3")
	b.run(t, ctx, "/bin/ping", "-c", "2", "-i", "0.2", "-W", "2", "node-a")

	// Now kill the agent itself. Its processes die with it (the runtime
	// reports them exited with -1); the runtime runs the command again and
	// configures the new agent; the VPN comes back.
	sleeper, err := a.eu.Spawn(ctx, "/bin/sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	pids := a.agentPIDs(t)
	if len(pids) != 1 {
		t.Fatalf("gvpn-agent processes in %s: %v, want one", a.ns.name, pids)
	}
	if out, err := exec.Command("kill", "-KILL", pids[0]).CombinedOutput(); err != nil {
		t.Fatalf("kill agent: %v %s", err, out)
	}
	if r, err := sleeper.Wait(ctx); err != nil || r.ReturnCode != -1 {
		t.Fatalf("process of the killed agent: rc %d err %v, want -1", r.ReturnCode, err)
	}
	a.sh(t, ctx, "for i in $(seq 40); do ping -c 1 -W 1 192.168.7.3 >/dev/null && exit 0; done; exit 1")
	b.run(t, ctx, "/bin/ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.7.2")
	if pids2 := a.agentPIDs(t); len(pids2) != 1 || pids2[0] == pids[0] {
		t.Fatalf("gvpn-agent processes after the kill: %v (killed %s)", pids2, pids[0])
	}
	for _, n := range nodes {
		if err := n.eu.ProtocolError(); err != nil {
			t.Fatal(err)
		}
	}
	st := a.stats(t)
	if !st.Up {
		t.Fatalf("node-a pump down after reconnects: %+v", st)
	}
	// The agent's counters reach gvpn.vpn over the control connection
	// (docs/bridge.md §3.4), across its reconnect and its replacement:
	// the stream's frames it passed, and those it dropped while its
	// bridge was cut, are there behind agent_.
	t.Logf("node-a gvpn.vpn after the cut: egress drops %v, ingress drops %v, links %v", st.Egress.Drops, st.Ingress.Drops, st.Links)
	if st.Links["agent_egress_frames"] < uint64(got) {
		t.Errorf("gvpn.vpn counts %d frames the agent passed, want at least the %d datagrams that arrived", st.Links["agent_egress_frames"], got)
	}
	if st.Egress.Drops["agent_"+vsock.CounterDropped] == 0 {
		t.Errorf("gvpn.vpn has no agent_%s egress drops after the bridge was cut mid-stream: %v", vsock.CounterDropped, st.Egress.Drops)
	}

	// Superframes go with the control connection (docs/bridge.md §2.4):
	// agreed at the start, dropped with the cut connection, agreed again
	// with the reconnected agent and with the new one, and TCP works
	// through them after all that.
	httpBothWays(t, ctx, a, b, 4<<20)
	file, err := os.ReadFile(api.LogPath(a.workdir))
	if err != nil {
		t.Fatal(err)
	}
	logs := string(file)
	for _, want := range []struct {
		line string
		min  int
	}{
		{"bridge: superframes with virtio-net headers both ways (segmented here", 3}, // the runtime
		{"bridge: plain frames to the agent", 2},
		{"bridge: superframes with virtio-net headers both ways (the runtime segments them)", 3}, // two agents
	} {
		if n := strings.Count(logs, want.line); n < want.min {
			t.Errorf("%d log lines %q, want at least %d", n, want.line, want.min)
		}
	}
}

// TestAgentRefusalReachesTheExeUnit: a CreateNetwork the agent refuses (a
// hosts entry that cannot go into a hosts file) is answered with the
// agent's error as BAD_REQUEST naming the field, and leaves no interface; a
// correct one afterwards succeeds.
func TestAgentRefusalReachesTheExeUnit(t *testing.T) {
	privtest.RequireRoot(t)
	hub := golemnet.NewHub(nil)
	t.Cleanup(func() { hub.Close() })
	n := &node{name: "node-r", ip: "192.168.8.2"}
	hn, err := hub.AddNode(n.name, netip.MustParseAddr(n.ip))
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.Start(); err != nil {
		t.Fatal(err)
	}
	n.hub = hn
	startNode(t, n, nodeOpts{})
	ctx := privtest.Context(t, 60*time.Second)
	net := golemnet.VPNNetwork{Addr: "192.168.8.0", Mask: "255.255.255.0", IfAddr: n.ip}
	_, err = n.eu.CreateNetwork(ctx, net, map[string]string{"bad_name": "192.168.8.3"})
	var ce *golemnet.CallError
	if !errors.As(err, &ce) || ce.Code != api.Response_BAD_REQUEST || !strings.Contains(ce.Message, "hosts") || !strings.Contains(ce.Message, "gvpn-agent") {
		t.Fatalf("CreateNetwork with a bad hosts entry: %v; want BAD_REQUEST naming hosts and the agent", err)
	}
	if out, _ := exec.Command("ip", "-n", n.ns.name, "-o", "link").Output(); strings.Contains(string(out), "vpn0") {
		t.Fatalf("vpn0 left after a refused configuration:\n%s", out)
	}
	if _, err := n.eu.CreateNetwork(ctx, net, map[string]string{"node-s": "192.168.8.3"}); err != nil {
		t.Fatalf("CreateNetwork after a refusal: %v", err)
	}
	if out := n.run(t, ctx, "/bin/cat", "/etc/hosts"); !strings.Contains(out, "192.168.8.3\tnode-s") {
		t.Fatalf("payload's /etc/hosts:\n%s", out)
	}
}

// TestAgentStartFailsClearly: an agent command that cannot work makes
// `start` fail with the reason, not hang.
func TestAgentStartFailsClearly(t *testing.T) {
	privtest.RequireRoot(t)
	workdir := t.TempDir()
	logs := &logWriter{}
	cmd := exec.Command(runtimeBin, "--workdir", workdir, "--sandbox-prefix", nsPrefix, "--sandbox", "agent",
		"--agent-command", "echo no payload here >&2; exit 7", "start")
	cmd.Stderr = logs
	cmd.Stdin = strings.NewReader("")
	var out strings.Builder
	cmd.Stdout = &out
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("start with a failing agent command: %v, want exit 1\n%s", err, logs)
	}
	// The log file (stderr is /dev/null under a real provider) has the
	// command's own output and its exit status.
	file, _ := os.ReadFile(api.LogPath(workdir))
	if !strings.Contains(string(file), "exit status 7") || !strings.Contains(string(file), "no payload here") {
		t.Fatalf("the log file does not say why:\n%s", file)
	}
	if out.Len() != 0 {
		t.Fatalf("stdout got %q", out.String())
	}
}

// TestManualAgentsPing: the simplest use by hand: two agents configured by
// flags, one listening and one dialling, bridged directly over a unix
// socket with no runtime: ping works both ways; SIGTERM removes the
// interfaces and exits 0.
func TestManualAgentsPing(t *testing.T) {
	privtest.RequireRoot(t)
	ns1, ns2 := newPayloadNS(t), newPayloadNS(t)
	dir, err := os.MkdirTemp("", "gvt-ag-m-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := "unix://" + filepath.Join(dir, "vpn.sock")
	start := func(ns payloadNS, args ...string) (*exec.Cmd, *logWriter) {
		logs := &logWriter{}
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name, agentBin, "--bridge", sock, "--hosts-file", ns.hosts}, args...)...)
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("agent in %s:\n%s", ns.name, logs)
			}
		})
		return cmd, logs
	}
	// The dialling side may start first: it retries until the listener is
	// there.
	c2, _ := start(ns2, "--ip", "10.77.0.2/24", "--connect", "--host", "left=10.77.0.1")
	c1, _ := start(ns1, "--ip", "10.77.0.1/24", "--listen")

	ping := func(ns payloadNS, dst string) {
		t.Helper()
		script := "for i in $(seq 50); do ping -c 1 -W 1 " + dst + " >/dev/null && exit 0; sleep 0.1; done; exit 1"
		if out, err := exec.Command("ip", "netns", "exec", ns.name, "sh", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("ping %s from %s: %v %s", dst, ns.name, err, out)
		}
	}
	ping(ns2, "10.77.0.1")
	ping(ns1, "10.77.0.2")
	ping(ns2, "left") // --host went into the namespace's hosts file

	for _, c := range []*exec.Cmd{c1, c2} {
		c.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("agent after SIGTERM: %v, want exit 0", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("agent did not exit after SIGTERM")
		}
	}
	for _, ns := range []payloadNS{ns1, ns2} {
		if out, _ := exec.Command("ip", "-n", ns.name, "-o", "link").Output(); strings.Contains(string(out), "vpn0") {
			t.Fatalf("vpn0 left in %s after SIGTERM:\n%s", ns.name, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "vpn.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("listening agent left its socket: %v", err)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
