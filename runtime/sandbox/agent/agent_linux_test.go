package agent

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/test/privtest"
	"github.com/gvpn/gvpn/vsock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// guard bounds every wait: a deadlock guard, never a performance check.
const guard = 20 * time.Second

// testConfig returns a Config with a unix bridge in a fresh directory and
// a command that records its pid in dir/pid and then sleeps (the fake
// agent is played by the test).
func testConfig(t *testing.T, command string) (Config, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "gvt-ag-b-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if command == "" {
		command = "echo $$ > " + filepath.Join(dir, "pid") + "; exec sleep 60"
	}
	return Config{
		Bridge:    vsock.Addr{Scheme: vsock.SchemeUnix, Path: filepath.Join(dir, "sock", "bridge.sock")},
		SocketDir: filepath.Join(dir, "sock"),
		Launch: Launch{
			Command: command,
			Restart: vsock.BackoffOptions{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
			Output:  privtest.Writer(t),
		},
		Timeout:     5 * time.Second,
		StopTimeout: 2 * time.Second,
		Log:         privtest.Log(t),
	}, dir
}

// fakeAgent plays gvpn-agent's control side.
type fakeAgent struct {
	t   *testing.T
	ctl *vsock.ControlConn
}

// dialAgent dials the control address until it answers, and says hello.
func dialAgent(ctl vsock.Addr) (*fakeAgent, error) {
	return dialAgentSaying(ctl, vsock.Hello{Version: vsock.ProtocolVersion, AgentID: "fake"})
}

// dialAgentSaying dials the control address until it answers, and says h.
func dialAgentSaying(ctl vsock.Addr, h vsock.Hello) (*fakeAgent, error) {
	deadline := time.Now().Add(guard)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := vsock.Dial(ctx, ctl)
		cancel()
		if err == nil {
			cc := vsock.NewControlConn(c)
			if err := cc.Send(h); err != nil {
				cc.Close()
				return nil, err
			}
			return &fakeAgent{ctl: cc}, nil
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// openWithAgent opens a Box while a fake agent connects to it.
func openWithAgent(t *testing.T, cfg Config) (*Box, *fakeAgent) {
	t.Helper()
	ctl, _ := cfg.Bridge.Control()
	type res struct {
		a   *fakeAgent
		err error
	}
	ch := make(chan res, 1)
	go func() {
		a, err := dialAgent(ctl)
		ch <- res{a, err}
	}()
	b, err := Open(context.Background(), cfg)
	r := <-ch
	if err != nil {
		if r.a != nil {
			r.a.ctl.Close()
		}
		t.Fatalf("Open: %v", err)
	}
	if r.err != nil {
		b.Close()
		t.Fatalf("fake agent: %v", r.err)
	}
	r.a.t = t
	t.Cleanup(func() { r.a.ctl.Close(); b.Close() })
	return b, r.a
}

func (a *fakeAgent) expect() vsock.Message {
	a.t.Helper()
	a.ctl.Conn().SetReadDeadline(time.Now().Add(guard))
	m, err := a.ctl.Receive()
	if err != nil {
		a.t.Fatalf("fake agent: receive: %v", err)
	}
	return m
}

func (a *fakeAgent) send(m vsock.Message) {
	a.t.Helper()
	if err := a.ctl.Send(m); err != nil {
		a.t.Fatalf("fake agent: send: %v", err)
	}
}

// serveOne answers the next request in a goroutine (so that the Box's
// blocking call can run on the test goroutine) with what answer returns.
func (a *fakeAgent) serveOne(answer func(m vsock.Message) []vsock.Message) chan vsock.Message {
	got := make(chan vsock.Message, 1)
	go func() {
		defer close(got)
		a.ctl.Conn().SetReadDeadline(time.Now().Add(guard))
		m, err := a.ctl.Receive()
		if err != nil {
			return
		}
		for _, r := range answer(m) {
			if a.ctl.Send(r) != nil {
				return
			}
		}
		got <- m
	}()
	return got
}

func linkConfig() netcfg.LinkConfig {
	return netcfg.LinkConfig{Name: "vpn0", MTU: 1220, Net: netcfg.Network{
		Prefix: netip.MustParsePrefix("10.5.0.0/24"), IfAddr: netip.MustParseAddr("10.5.0.2"), Gateway: netip.MustParseAddr("10.5.0.1")}}
}

func TestOpenTimeoutLeavesNothing(t *testing.T) {
	cfg, dir := testConfig(t, "")
	cfg.Timeout = 300 * time.Millisecond
	_, err := Open(context.Background(), cfg)
	if !errors.Is(err, ErrAgentTimeout) || !strings.Contains(err.Error(), "no hello") || !strings.Contains(err.Error(), "printed nothing") {
		t.Fatalf("Open without an agent: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 {
		t.Fatalf("the command did not run (pid file %q)", b)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("the agent command (pid %d) survived the failed Open: %v", pid, err)
	}
	if _, err := os.Stat(cfg.SocketDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket directory left: %v", err)
	}
}

func TestOpenCommandExits(t *testing.T) {
	cfg, _ := testConfig(t, "echo the VM would not boot >&2; exit 4")
	_, err := Open(context.Background(), cfg)
	if !errors.Is(err, ErrCommandExited) || !strings.Contains(err.Error(), "exit status 4") || !strings.Contains(err.Error(), "the VM would not boot") {
		t.Fatalf("Open with a failing command: %v", err)
	}
}

// TestLazyLauncher: with Lazy, Open returns while the payload boots, and
// requests report a launcher that ends (or never brings the agent up) with
// its last output, without waiting for a timeout in the first case.
func TestLazyLauncher(t *testing.T) {
	cfg, _ := testConfig(t, "")
	cfg.Launch.Command = ""
	cfg.Launch.Argv = []string{"/bin/sh", "-c", "echo Kernel panic - not syncing >&2; exit 1"}
	cfg.Launch.Name, cfg.Kind, cfg.Lazy = "QEMU", "vm", true
	cfg.Timeout = time.Minute
	b, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("lazy Open: %v", err)
	}
	t0 := time.Now()
	_, err = b.Start(sandbox.ProcessSpec{Bin: "/bin/true"})
	if !errors.Is(err, ErrCommandExited) || !strings.Contains(err.Error(), "QEMU ended before the agent said hello") ||
		!strings.Contains(err.Error(), "Kernel panic") {
		t.Fatalf("Start after the launcher died: %v", err)
	}
	if time.Since(t0) > 30*time.Second {
		t.Fatalf("Start waited %v for a launcher that had ended", time.Since(t0))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	cfg, _ = testConfig(t, "echo booting...; exec sleep 60")
	cfg.Lazy, cfg.Launch.Name = true, "QEMU"
	cfg.Timeout = 300 * time.Millisecond
	b, err = Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("lazy Open: %v", err)
	}
	defer b.Close()
	_, err = b.Attach(context.Background(), linkConfig(), nil)
	if !errors.Is(err, ErrAgentTimeout) || !strings.Contains(err.Error(), "never said hello since QEMU started") ||
		!strings.Contains(err.Error(), "booting...") {
		t.Fatalf("Attach to a payload that never brings its agent up: %v", err)
	}
}

func TestOpenBadConfig(t *testing.T) {
	cfg, _ := testConfig(t, "")
	cfg.Launch.Command = " "
	if _, err := Open(context.Background(), cfg); err == nil {
		t.Fatal("Open without a command succeeded")
	}
	cfg, _ = testConfig(t, "")
	cfg.Bridge = vsock.Addr{Scheme: vsock.SchemeVsock, CID: vsock.CIDAny, Port: 0xFFFFFFFE}
	if _, err := Open(context.Background(), cfg); !errors.Is(err, vsock.ErrInvalidAddr) {
		t.Fatalf("Open with no room for the control port: %v", err)
	}
}

// TestBox drives a Box the way the service and the network manager do,
// against a fake agent: configure, frames, processes, reconnect, shutdown.
func TestBox(t *testing.T) {
	cfg, dir := testConfig(t, "")
	cfg.Launch.Env = []string{"GVPN_HOSTNAME=node-x"}
	b, a := openWithAgent(t, cfg)

	// Attach: the configure carries the ExeUnit's network and the
	// runtime's interface settings.
	hosts := map[string]string{"peer": "10.5.0.3"}
	got := a.serveOne(func(m vsock.Message) []vsock.Message {
		return []vsock.Message{vsock.ConfiguredFor(m.(vsock.Configure).ID, nil)}
	})
	l, err := b.Attach(context.Background(), linkConfig(), hosts)
	if err != nil {
		t.Fatal(err)
	}
	c := (<-got).(vsock.Configure)
	if c.Name != "vpn0" || c.IfAddr != "10.5.0.2" || c.Mask != "255.255.255.0" || c.Gateway != "10.5.0.1" || c.MTU != 1220 || c.Hosts["peer"] != "10.5.0.3" {
		t.Fatalf("configure %+v", c)
	}
	if _, err := b.Attach(context.Background(), linkConfig(), nil); err == nil {
		t.Fatal("second Attach succeeded")
	}

	// Frames go through the data connection the agent dials.
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	dc, err := vsock.Dial(ctx, cfg.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	peer := vsock.DataLink(dc)
	defer peer.Close()
	frame := append(make([]byte, link.Headroom), bytes.Repeat([]byte{0xab}, 100)...)
	if _, err := peer.Write([][]byte{frame}, link.Headroom); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := [][]byte{make([]byte, link.BufSize)}, []int{0}
	if n, err := l.Read(bufs, sizes, link.Headroom); err != nil || n != 1 || sizes[0] != 100 {
		t.Fatalf("frame from the agent: n %d size %d err %v", n, sizes[0], err)
	}

	// A process whose output and exit arrive before Stream: the events wait
	// and come out in order.
	got = a.serveOne(func(m vsock.Message) []vsock.Message {
		r := m.(vsock.Run)
		return []vsock.Message{vsock.Started{ID: r.ID, PID: 42},
			vsock.Output{PID: 42, Stdout: []byte("out")}, vsock.Output{PID: 42, Stderr: []byte("err")},
			vsock.Output{PID: 42, Stdout: []byte("1"), Stderr: []byte("2")}, vsock.Exited{PID: 42, ReturnCode: 5}}
	})
	p, err := b.Start(sandbox.ProcessSpec{Bin: "/bin/x", Args: []string{"x", "-y"}, Dir: "/tmp"})
	if err != nil {
		t.Fatal(err)
	}
	if r := (<-got).(vsock.Run); r.Bin != "/bin/x" || len(r.Args) != 2 || r.Args[1] != "-y" || r.Dir != "/tmp" || r.Env != nil {
		t.Fatalf("run %+v", r)
	}
	if p.Pid() != 42 {
		t.Fatalf("pid %d", p.Pid())
	}
	events := collect(t, p)
	want := []string{"out:out", "err:err", "out:1", "err:2", "exit:5"}
	if strings.Join(events, " ") != strings.Join(want, " ") {
		t.Fatalf("events %v, want %v", events, want)
	}

	// Start failures map to the netns sandbox's errors.
	for reason, want := range map[string]error{vsock.FailedNotFound: sandbox.ErrNotFound, vsock.FailedNotExecutable: sandbox.ErrNotExecutable, "": sandbox.ErrSetup} {
		got = a.serveOne(func(m vsock.Message) []vsock.Message {
			return []vsock.Message{vsock.Failed{ID: m.(vsock.Run).ID, Error: "nope", Reason: reason}}
		})
		if _, err := b.Start(sandbox.ProcessSpec{Bin: "/bin/x"}); !errors.Is(err, want) || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("failed %q: %v, want %v", reason, err, want)
		}
		<-got
	}
	if _, err := b.Start(sandbox.ProcessSpec{}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("empty bin: %v", err)
	}

	// Kill: an unknown pid is refused locally; a known one goes to the
	// agent with its signal.
	if err := b.Kill(42, syscall.SIGTERM); !errors.Is(err, sandbox.ErrNoProcess) {
		t.Fatalf("kill of an exited pid: %v", err)
	}
	got = a.serveOne(func(m vsock.Message) []vsock.Message {
		return []vsock.Message{vsock.Started{ID: m.(vsock.Run).ID, PID: 43}}
	})
	p43, err := b.Start(sandbox.ProcessSpec{Bin: "/bin/sleep"})
	if err != nil {
		t.Fatal(err)
	}
	<-got
	var mu sync.Mutex
	var ev43 []string
	p43.Stream(func(e sandbox.Event) { mu.Lock(); ev43 = append(ev43, eventString(e)); mu.Unlock() })
	got = a.serveOne(func(m vsock.Message) []vsock.Message {
		return []vsock.Message{vsock.Killed{ID: m.(vsock.Kill).ID, OK: true}}
	})
	if err := b.Kill(43, 0); err != nil {
		t.Fatal(err)
	}
	if k := (<-got).(vsock.Kill); k.PID != 43 || k.Signal != 9 {
		t.Fatalf("kill %+v, want pid 43 signal 9 (0 means SIGKILL)", k)
	}
	got = a.serveOne(func(m vsock.Message) []vsock.Message {
		return []vsock.Message{vsock.Killed{ID: m.(vsock.Kill).ID, Error: "pid 43 has exited"}}
	})
	if err := b.Kill(43, syscall.SIGTERM); !errors.Is(err, sandbox.ErrNoProcess) {
		t.Fatalf("refused kill: %v", err)
	}
	<-got
	if err := b.Kill(43, 99); err == nil || errors.Is(err, sandbox.ErrNoProcess) {
		t.Fatalf("invalid signal: %v", err)
	}

	// The agent reconnects: the new connection gets the configuration
	// again, and requests go there.
	a.ctl.Close()
	a2, err := dialAgent(b.Control())
	if err != nil {
		t.Fatal(err)
	}
	a2.t = t
	defer a2.ctl.Close()
	c2 := a2.expect().(vsock.Configure)
	if c2.IfAddr != c.IfAddr || c2.Mask != c.Mask || c2.Gateway != c.Gateway || c2.Hosts["peer"] != "10.5.0.3" {
		t.Fatalf("configure after reconnect %+v, want %+v", c2, c)
	}
	a2.send(vsock.ConfiguredFor(c2.ID, nil))

	// The command's pid, once its shell has written it (the fake agent
	// plays the agent, so the test can get here before the shell runs).
	var pid int
	for deadline := time.Now().Add(guard); pid <= 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the agent command never wrote its pid")
		}
		pidb, _ := os.ReadFile(filepath.Join(dir, "pid"))
		pid, _ = strconv.Atoi(strings.TrimSpace(string(pidb)))
	}

	// Close: shutdown to the agent; the command is stopped; the process
	// whose exit never came is reported exited (-1); sockets are gone.
	got = a2.serveOne(func(m vsock.Message) []vsock.Message {
		return []vsock.Message{vsock.ShutdownDone{ID: m.(vsock.Shutdown).ID}}
	})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := (<-got).(vsock.Shutdown); !ok {
		t.Fatal("no shutdown request")
	}
	mu.Lock()
	if strings.Join(ev43, " ") != "exit:-1" {
		t.Fatalf("events of the unfinished process: %v", ev43)
	}
	mu.Unlock()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("agent command %d survived Close: %v", pid, err)
	}
	if _, err := os.Stat(cfg.SocketDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket directory left: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := b.Start(sandbox.ProcessSpec{Bin: "/bin/x"}); !errors.Is(err, sandbox.ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
}

func eventString(e sandbox.Event) string {
	switch {
	case e.Exited:
		return "exit:" + strconv.Itoa(int(e.ReturnCode))
	case e.Stdout != nil:
		return "out:" + string(e.Stdout)
	default:
		return "err:" + string(e.Stderr)
	}
}

// collect streams p until its exit event.
func collect(t *testing.T, p interface{ Stream(func(sandbox.Event)) }) []string {
	t.Helper()
	var mu sync.Mutex
	var evs []string
	done := make(chan struct{})
	p.Stream(func(e sandbox.Event) {
		mu.Lock()
		evs = append(evs, eventString(e))
		mu.Unlock()
		if e.Exited {
			close(done)
		}
	})
	select {
	case <-done:
	case <-time.After(guard):
		t.Fatal("no exit event")
	}
	mu.Lock()
	defer mu.Unlock()
	return append([]string(nil), evs...)
}

// TestAttachRefusals: the agent's refusal reaches the network manager as a
// field error when the ExeUnit's input is at fault, as a plain error
// otherwise.
func TestAttachRefusals(t *testing.T) {
	cfg, _ := testConfig(t, "")
	b, a := openWithAgent(t, cfg)
	for _, tc := range []struct {
		field     string
		wantField string
	}{
		{"mask", "mask"}, {"if_addr", "if_addr"}, {"gateway", "gateway"}, {"hosts", "hosts"}, {"mtu", ""}, {"name", ""}, {"", ""},
	} {
		got := a.serveOne(func(m vsock.Message) []vsock.Message {
			return []vsock.Message{vsock.Configured{ID: m.(vsock.Configure).ID, Error: "no good", Field: tc.field}}
		})
		_, err := b.Attach(context.Background(), linkConfig(), map[string]string{"a": "10.5.0.9"})
		<-got
		var fe *netcfg.FieldError
		isField := errors.As(err, &fe)
		if err == nil || !strings.Contains(err.Error(), "no good") || isField != (tc.wantField != "") || (isField && fe.Field != tc.wantField) {
			t.Errorf("refusal with field %q: %v (field error %v)", tc.field, err, isField)
		}
	}
	// A timeout is an error too, not a hang.
	b.cfg.Timeout = 100 * time.Millisecond
	got := a.serveOne(func(vsock.Message) []vsock.Message { return nil })
	if _, err := b.Attach(context.Background(), linkConfig(), nil); !errors.Is(err, ErrAgentTimeout) {
		t.Fatalf("Attach without an answer: %v", err)
	}
	<-got
}

// TestCommandRestart: when the command exits after the agent said hello,
// the payload is gone: its processes are reported exited (-1) and the
// command runs again.
func TestCommandRestart(t *testing.T) {
	cfg, dir := testConfig(t, "")
	runs := filepath.Join(dir, "runs")
	cfg.Launch.Command = "echo run >> " + runs + "; sleep 0.3"
	b, a := openWithAgent(t, cfg)
	got := a.serveOne(func(m vsock.Message) []vsock.Message {
		return []vsock.Message{vsock.Started{ID: m.(vsock.Run).ID, PID: 7}}
	})
	p, err := b.Start(sandbox.ProcessSpec{Bin: "/bin/sleep"})
	if err != nil {
		t.Fatal(err)
	}
	<-got
	if ev := collect(t, p); strings.Join(ev, " ") != "exit:-1" {
		t.Fatalf("events %v", ev)
	}
	// The old agent went with its command, so a request made now must wait
	// for the next agent and be answered by it, not fail on the old
	// connection.
	started := make(chan error, 1)
	go func() {
		_, err := b.Start(sandbox.ProcessSpec{Bin: "/bin/true"})
		started <- err
	}()
	ctl, _ := cfg.Bridge.Control()
	a2, err := dialAgent(ctl)
	if err != nil {
		t.Fatal(err)
	}
	a2.t = t
	t.Cleanup(func() { a2.ctl.Close() })
	if m := a2.expect(); m.Type() != "run" {
		t.Fatalf("the next agent got %s, want the run", m.Type())
	} else {
		a2.send(vsock.Started{ID: m.(vsock.Run).ID, PID: 8})
	}
	if err := <-started; err != nil {
		t.Fatalf("Start across the agent's restart: %v", err)
	}
	deadline := time.Now().Add(guard)
	for {
		b, _ := os.ReadFile(runs)
		if strings.Count(string(b), "run") >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command was not run again: %q", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
