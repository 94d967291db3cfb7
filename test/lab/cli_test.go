package lab

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/golemnet/labcli"
	"github.com/gvpn/gvpn/test/privtest"
)

// runLab runs the gvpn-lab binary to its end.
func runLab(t *testing.T, cmd *exec.Cmd) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * guard):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v hung; stderr:\n%s", cmd.Args, e.String())
	}
	return o.String(), e.String(), code
}

func lab(args ...string) *exec.Cmd { return exec.Command(labBin, args...) }

// oneLine checks that stderr is exactly one line containing want.
func oneLine(t *testing.T, what, stderr, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Errorf("%s: stderr %q; want one line with %q", what, stderr, want)
	}
}

func TestDemoJSON(t *testing.T) {
	privtest.RequireRoot(t)
	stateDir := t.TempDir()
	start := time.Now()
	logDir := t.TempDir()
	stdout, stderr, code := runLab(t, lab("demo", "--json", "--sandbox-prefix", testPrefix, "--state-dir", stateDir, "--log-dir", logDir))
	t.Logf("demo took %v; progress:\n%s", time.Since(start).Round(time.Millisecond), stderr)
	if code != 0 {
		t.Fatalf("demo exit %d\n%s", code, stdout)
	}
	var sum labcli.DemoSummary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("stdout is not the JSON summary: %v\n%s", err, stdout)
	}
	if !sum.OK || sum.FailedStep != "" || len(sum.Steps) != 6 {
		t.Fatalf("summary: ok %v failed %q steps %d", sum.OK, sum.FailedStep, len(sum.Steps))
	}
	for _, s := range sum.Steps {
		if !s.OK {
			t.Errorf("step %s not ok: %s", s.Name, s.Result)
		}
	}
	if len(sum.Nodes) != 3 {
		t.Fatalf("%d nodes", len(sum.Nodes))
	}
	pairs := map[string]bool{}
	for _, p := range sum.Pings {
		pairs[p.From+">"+p.To] = true
		if !(p.RTTAvgMs > 0) || p.RTTMinMs > p.RTTAvgMs || p.RTTAvgMs > p.RTTMaxMs || p.Received < 1 || p.Sent != 3 {
			t.Errorf("ping %+v", p)
		}
		if p.Received != p.Sent {
			// Seen once with another benchmark saturating both cores;
			// nothing in the hub or the runtimes counted a drop.
			t.Logf("lost echoes %s → %s: %d/%d", p.From, p.To, p.Received, p.Sent)
		}
	}
	if len(pairs) != 6 {
		t.Errorf("%d distinct ordered pairs, want 6: %v", len(pairs), pairs)
	}
	if len(sum.HTTP) != 2 {
		t.Errorf("%d HTTP clients, want 2", len(sum.HTTP))
	}
	for _, h := range sum.HTTP {
		if !h.SHA256OK || h.Bytes != 8<<20 || !(h.BitsPerSecond > 0) || !strings.Contains(h.URL, "//node-a:") {
			t.Errorf("http %+v", h)
		}
	}
	if tp := sum.Throughput; tp == nil || !(tp.BitsPerSecond > 0) || tp.Seconds < 1 {
		t.Errorf("throughput %+v", sum.Throughput)
	}
	left, _ := netns.List(testPrefix)
	for _, n := range sum.Nodes {
		if n.MTU != 1220 || !strings.HasPrefix(n.MAC, "90:13:") {
			t.Errorf("%s: vpn0 MTU %d MAC %s", n.Name, n.MTU, n.MAC)
		}
		if n.Hub.RxFrames == 0 || n.Hub.TxFrames == 0 || n.Runtime == nil || n.Runtime.Egress.Frames == 0 {
			t.Errorf("%s: counters hub %+v runtime %+v", n.Name, n.Hub, n.Runtime)
		}
		if slices.Contains(left, n.Netns) {
			t.Errorf("%s: namespace %s left behind", n.Name, n.Netns)
		}
		if syscall.Kill(n.RuntimePid, 0) != syscall.ESRCH {
			t.Errorf("%s: runtime pid %d still exists", n.Name, n.RuntimePid)
		}
	}
	if runs, _ := filepath.Glob(filepath.Join(stateDir, "run-*")); len(runs) != 0 {
		t.Errorf("run dirs left: %v", runs)
	}
	// A passing demo printed no log path and keeps no logs; nothing in
	// the state dir (in /run by default) either.
	if left, _ := os.ReadDir(logDir); len(left) != 0 {
		t.Errorf("a passing demo left logs: %v", left)
	}
	if _, err := os.Stat(stateDir); err == nil {
		t.Errorf("the state dir %s is still there after the demo", stateDir)
	}
	if !strings.Contains(stderr, "[6/6] tear down") {
		t.Errorf("no progress on stderr")
	}
}

func TestCLIBadInput(t *testing.T) {
	privtest.RequireRoot(t)
	stateDir := t.TempDir()

	// Not root.
	cmd := lab("demo")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	_, stderr, code := runLab(t, cmd)
	if code == 0 {
		t.Error("demo as nobody: exit 0")
	}
	oneLine(t, "not root", stderr, "must run as root")

	// The runtime binary is nowhere to be found.
	alone := filepath.Join(t.TempDir(), "gvpn-lab")
	b, err := os.ReadFile(labBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(alone, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(alone, "up", "--state-dir", stateDir)
	cmd.Env = append(os.Environ(), "PATH="+t.TempDir())
	_, stderr, code = runLab(t, cmd)
	if code == 0 {
		t.Error("without a runtime: exit 0")
	}
	oneLine(t, "runtime not found", stderr, "gvpn-runtime not found")
	_, stderr, code = runLab(t, lab("demo", "--runtime", "/nonexistent/gvpn-runtime", "--state-dir", stateDir, "--log-dir", t.TempDir()))
	if code == 0 {
		t.Error("--runtime missing: exit 0")
	}
	oneLine(t, "--runtime missing", stderr, "not an executable file")

	// No lab running.
	for _, args := range [][]string{
		{"status", "--state-dir", stateDir},
		{"exec", "--state-dir", stateDir, "node-a", "--", "true"},
		{"fault", "node-a", "--cut", "--state-dir", stateDir},
	} {
		_, stderr, code := runLab(t, lab(args...))
		if code == 0 {
			t.Errorf("%v: exit 0", args)
		}
		oneLine(t, args[0]+" without a lab", stderr, "no lab is running")
	}

	// Input the lab cannot use.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"up", "--nodes", "4", "--net", "10.1.0.0/30"}, "too small for 4 nodes"},
		{[]string{"up", "--net", "fd00::/64"}, "IPv4"},
		{[]string{"up", "--nodes", "0"}, "at least 1 node"},
		{[]string{"launch"}, "unknown command"},
	} {
		stdout, stderr, code := runLab(t, lab(tc.args...))
		if code != 2 || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q; want 2 and nothing", tc.args, code, stdout)
		}
		oneLine(t, strings.Join(tc.args, " "), stderr, tc.want)
	}
	if runs, _ := filepath.Glob(filepath.Join(stateDir, "run-*")); len(runs) != 0 {
		t.Errorf("bad input left run dirs: %v", runs)
	}
}

// lineReader hands out stdout lines of a running process.
type lineReader struct{ lines chan string }

func newLineReader(r io.Reader) *lineReader {
	lr := &lineReader{lines: make(chan string, 1000)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lr.lines <- sc.Text()
		}
		close(lr.lines)
	}()
	return lr
}

// waitLine waits for a line containing s and returns what came before.
func (lr *lineReader) waitLine(t *testing.T, s string) string {
	t.Helper()
	var seen strings.Builder
	timeout := time.After(guard)
	for {
		select {
		case l, ok := <-lr.lines:
			if !ok {
				t.Fatalf("output ended before %q:\n%s", s, seen.String())
			}
			seen.WriteString(l + "\n")
			if strings.Contains(l, s) {
				return seen.String()
			}
		case <-timeout:
			t.Fatalf("no %q within %v:\n%s", s, guard, seen.String())
		}
	}
}

func TestUpExecStatusFaultAndCtrlC(t *testing.T) {
	privtest.RequireRoot(t)
	stateDir := t.TempDir()
	logDir := t.TempDir()
	up := lab("up", "--nodes", "2", "--sandbox-prefix", testPrefix, "--state-dir", stateDir, "--log-dir", logDir,
		"--runtime-arg=--mem-gib=0.5", "--runtime-arg=--cpu-cores=1")
	var upErr bytes.Buffer
	up.Stderr = &upErr
	out, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	upDone := make(chan error, 1)
	go func() { upDone <- up.Wait() }()
	t.Cleanup(func() {
		select {
		case <-upDone:
		default:
			up.Process.Kill() // the runtimes see stdin EOF and clean up
			<-upDone
		}
		if t.Failed() {
			t.Logf("stderr of gvpn-lab up:\n%s", upErr.String())
		}
	})
	banner := newLineReader(out).waitLine(t, "Runtime logs:")
	for _, want := range []string{"2 nodes up on 192.168.0.0/24", "exec --state-dir " + stateDir + " node-b -- ping -c 3 node-a", "ip netns exec " + testPrefix} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	sd := []string{"--state-dir", stateDir}
	execArgs := func(node string, argv ...string) []string {
		return append(append([]string{"exec"}, append(sd, node, "--")...), argv...)
	}

	stdout, stderr, code := runLab(t, lab(execArgs("node-b", "ping", "-c", "1", "-W", "3", "node-a")...))
	if code != 0 || !strings.Contains(stdout, "1 received") {
		t.Errorf("exec ping: exit %d\n%s%s", code, stdout, stderr)
	}
	stdout, stderr, code = runLab(t, lab(execArgs("node-a", "sh", "-c", "echo out; echo err >&2; hostname; exit 7")...))
	if code != 7 || stdout != "out\nnode-a\n" || stderr != "err\n" {
		t.Errorf("exec sh: exit %d stdout %q stderr %q; want 7 \"out\\nnode-a\\n\" \"err\\n\"", code, stdout, stderr)
	}
	_, stderr, code = runLab(t, lab(execArgs("node-z", "true")...))
	if code == 0 {
		t.Error("exec on an unknown node: exit 0")
	}
	oneLine(t, "unknown node", stderr, `unknown node "node-z" (nodes: node-a, node-b)`)
	_, stderr, code = runLab(t, lab(execArgs("node-a", "no-such-command-gvpn")...))
	if code != 127 {
		t.Errorf("exec of a missing command: exit %d, want 127", code)
	}
	oneLine(t, "missing command", stderr, "no-such-command-gvpn")

	// Output streams while the command runs, and Ctrl-C reaches it.
	live := lab(execArgs("node-a", "sh", "-c", "echo first; sleep 30; echo never")...)
	liveOut, err := live.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	liveLines := newLineReader(liveOut)
	liveLines.waitLine(t, "first")
	live.Process.Signal(syscall.SIGINT)
	liveDone := make(chan error, 1)
	go func() { liveDone <- live.Wait() }()
	select {
	case err := <-liveDone:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 128+int(syscall.SIGINT) {
			t.Errorf("interrupted exec: %v, want exit 130", err)
		}
	case <-time.After(guard):
		live.Process.Kill()
		t.Fatal("exec did not end on Ctrl-C")
	}
	for l := range liveLines.lines {
		if strings.Contains(l, "never") {
			t.Error("the command went on after Ctrl-C")
		}
	}

	// A second lab on the same state dir is refused.
	_, stderr, code = runLab(t, lab("up", "--nodes", "1", "--sandbox-prefix", testPrefix, "--state-dir", stateDir, "--log-dir", logDir))
	if code == 0 {
		t.Error("second up: exit 0")
	}
	oneLine(t, "second up", stderr, "already running")

	// Faults reach the hub.
	stdout, stderr, code = runLab(t, lab(append([]string{"fault", "node-a", "--cut"}, sd...)...))
	if code != 0 || !strings.Contains(stdout, "node-a: cut") {
		t.Errorf("fault --cut: exit %d %q %q", code, stdout, stderr)
	}
	if _, _, code = runLab(t, lab(execArgs("node-b", "ping", "-c", "1", "-W", "1", "192.168.0.2")...)); code == 0 {
		t.Error("ping through a cut link succeeded")
	}
	// A container fault is refused by a local lab, saying so, never
	// answered with exit 0 and nothing done.
	for _, f := range []string{"--pause", "--unpause", "--kill", "--restart", "--partition", "--heal"} {
		stdout, stderr, code = runLab(t, lab(append([]string{"fault", "node-a", f}, sd...)...))
		if code == 0 || !strings.Contains(stderr, f+" is a fault of a --docker lab") {
			t.Errorf("fault %s on a local lab: exit %d %q %q; want a refusal naming --docker", f, code, stdout, stderr)
		}
	}
	if _, stderr, code = runLab(t, lab(append([]string{"fault", "node-a", "--restore"}, sd...)...)); code != 0 {
		t.Errorf("fault --restore: exit %d %s", code, stderr)
	}
	if _, _, code = runLab(t, lab(execArgs("node-b", "ping", "-c", "1", "-W", "3", "192.168.0.2")...)); code != 0 {
		t.Error("ping after --restore failed")
	}

	stdout, stderr, code = runLab(t, lab(append([]string{"status", "--json"}, sd...)...))
	if code != 0 {
		t.Fatalf("status: exit %d %s", code, stderr)
	}
	var st labcli.StatusJSON
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, stdout)
	}
	if len(st.Nodes) != 2 || st.Pid != up.Process.Pid || st.Network != "192.168.0.0/24" {
		t.Fatalf("status %+v", st)
	}
	for _, n := range st.Nodes {
		if !n.Alive || n.RuntimePid == 0 || n.Hub.RxFrames == 0 || n.Hub.Drops["cut"]+n.Hub.TxFrames == 0 || n.Fault.Cut {
			t.Errorf("status of %s: %+v", n.Name, n)
		}
		// The payload's usage, against the agreement the lab passed.
		if p := n.Payload; p == nil || p.MemBytes != 512<<20 || p.CPUCores != 1 || p.CPUSeconds <= 0 || p.PeakMemBytes == 0 {
			t.Errorf("payload usage of %s: %+v", n.Name, p)
		}
	}
	if stdout, _, code = runLab(t, lab(append([]string{"status"}, sd...)...)); code != 0 || !strings.Contains(stdout, "HUB RX") || !strings.Contains(stdout, "PEAK MEMORY") {
		t.Errorf("status table: exit %d\n%s", code, stdout)
	}

	// Ctrl-C: everything goes.
	up.Process.Signal(syscall.SIGINT)
	select {
	case err := <-upDone:
		upDone <- err // for the cleanup
		if err != nil {
			t.Errorf("up after Ctrl-C: %v, want exit 0", err)
		}
	case <-time.After(guard):
		t.Fatal("up did not stop on Ctrl-C")
	}
	if !strings.Contains(upErr.String(), "nothing left behind") {
		t.Errorf("up's stderr:\n%s", upErr.String())
	}
	left, _ := netns.List(testPrefix)
	for _, n := range st.Nodes {
		if slices.Contains(left, n.Netns) {
			t.Errorf("%s: namespace %s left behind", n.Name, n.Netns)
		}
		if syscall.Kill(n.RuntimePid, 0) != syscall.ESRCH {
			t.Errorf("%s: runtime pid %d still exists", n.Name, n.RuntimePid)
		}
	}
	if runs, _ := filepath.Glob(filepath.Join(stateDir, "run-*")); len(runs) != 0 {
		t.Errorf("run dirs left: %v", runs)
	}
	if _, err := os.Stat(filepath.Join(stateDir, labcli.ControlSocketName)); err == nil {
		t.Error("control socket left behind")
	}
	if _, err := os.Stat(stateDir); err == nil {
		t.Errorf("the state dir %s is still there after the lab stopped", stateDir)
	}
	// The logs whose path up printed are kept, teardown included.
	for _, n := range st.Nodes {
		logs, _ := filepath.Glob(filepath.Join(logDir, "up-*", n.Name+".log"))
		if len(logs) != 1 {
			t.Errorf("%s: kept logs %v, want one", n.Name, logs)
			continue
		}
		if b, _ := os.ReadFile(logs[0]); !bytes.Contains(b, []byte("teardown complete")) {
			t.Errorf("%s: kept log %s lacks the teardown:\n%s", n.Name, logs[0], b)
		}
		if !strings.Contains(upErr.String(), filepath.Dir(logs[0])) {
			t.Errorf("up never printed the log dir %s", filepath.Dir(logs[0]))
		}
	}
	_, stderr, code = runLab(t, lab(append([]string{"status"}, sd...)...))
	if code == 0 {
		t.Error("status after Ctrl-C: exit 0")
	}
	oneLine(t, "status after Ctrl-C", stderr, "no lab is running")
}
