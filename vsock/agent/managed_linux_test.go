package agent

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/link/linktest"
	"github.com/gvpn/gvpn/tap"
	"github.com/gvpn/gvpn/test/privtest"
	"github.com/gvpn/gvpn/vsock"
)

// guard bounds every wait: a deadlock guard, never a performance check.
const guard = 20 * time.Second

var fast = vsock.BackoffOptions{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond}

// fakeRuntime is the runtime's end of a bridge, driven by the test.
type fakeRuntime struct {
	t      *testing.T
	addr   vsock.Addr
	ctlL   net.Listener
	dataL  net.Listener
	ctl    *vsock.ControlConn
	nextID uint64
	// notices holds output and exited messages read while waiting for a
	// reply.
	notices []vsock.Message
	// counters is the agent's latest counters report.
	counters *vsock.Counters
}

func newFakeRuntime(t *testing.T) *fakeRuntime {
	t.Helper()
	dir, err := os.MkdirTemp("", "gvt-ag-u-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	addr := vsock.Addr{Scheme: vsock.SchemeUnix, Path: filepath.Join(dir, "b.sock")}
	dl, err := vsock.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := vsock.ListenControl(addr)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRuntime{t: t, addr: addr, ctlL: cl, dataL: dl}
	t.Cleanup(func() {
		dl.Close()
		cl.Close()
		if f.ctl != nil {
			f.ctl.Close()
		}
	})
	return f
}

func accept(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(ch)
			return
		}
		ch <- c
	}()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("accept failed")
		}
		return c
	case <-time.After(guard):
		t.Fatal("no connection from the agent")
		return nil
	}
}

// acceptControl accepts the agent's control connection and checks hello.
func (f *fakeRuntime) acceptControl() vsock.Hello {
	f.t.Helper()
	f.ctl = vsock.NewControlConn(accept(f.t, f.ctlL))
	f.ctl.Conn().SetReadDeadline(time.Now().Add(guard))
	m, err := f.ctl.Receive()
	if err != nil {
		f.t.Fatalf("receive hello: %v", err)
	}
	h, ok := m.(vsock.Hello)
	if !ok || h.Version != vsock.ProtocolVersion {
		f.t.Fatalf("first message %#v, want hello version %d", m, vsock.ProtocolVersion)
	}
	return h
}

// call sends a request with a fresh id and returns its reply; notices read
// meanwhile are kept.
func (f *fakeRuntime) call(build func(id uint64) vsock.Message) vsock.Message {
	f.t.Helper()
	f.nextID++
	id := f.nextID
	if err := f.ctl.Send(build(id)); err != nil {
		f.t.Fatal(err)
	}
	for {
		m := f.receive()
		switch m := m.(type) {
		case vsock.Output, vsock.Exited:
			f.notices = append(f.notices, m)
		case vsock.Counters:
			f.counters = &m
		case vsock.Configured:
			if m.ID == id {
				return m
			}
		case vsock.Started:
			if m.ID == id {
				return m
			}
		case vsock.Failed:
			if m.ID == id {
				return m
			}
		case vsock.Killed:
			if m.ID == id {
				return m
			}
		case vsock.ShutdownDone:
			if m.ID == id {
				return m
			}
		default:
			f.t.Fatalf("unexpected %#v", m)
		}
	}
}

func (f *fakeRuntime) receive() vsock.Message {
	f.t.Helper()
	f.ctl.Conn().SetReadDeadline(time.Now().Add(guard))
	m, err := f.ctl.Receive()
	if err != nil {
		f.t.Fatalf("receive: %v", err)
	}
	return m
}

// waitExit collects pid's output until its exited notice.
func (f *fakeRuntime) waitExit(pid int) (stdout, stderr string, rc int) {
	f.t.Helper()
	var o, e strings.Builder
	take := func(m vsock.Message) bool {
		switch m := m.(type) {
		case vsock.Output:
			if m.PID == pid {
				o.Write(m.Stdout)
				e.Write(m.Stderr)
			}
		case vsock.Exited:
			if m.PID == pid {
				rc = m.ReturnCode
				return true
			}
		}
		return false
	}
	rest := f.notices[:0]
	done := false
	for _, m := range f.notices {
		if done {
			rest = append(rest, m)
			continue
		}
		done = take(m)
	}
	f.notices = rest
	for !done {
		done = take(f.receive())
	}
	return o.String(), e.String(), rc
}

// runAgent runs the agent in the background; wait returns Run's result
// (blocking until then), as often as it is called. The agent is stopped at
// the end of the test.
func runAgent(t *testing.T, cfg Config) (cancel func(), wait func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() {
		err = Run(ctx, cfg)
		close(done)
	}()
	wait = func() error {
		select {
		case <-done:
			return err
		case <-time.After(guard):
			t.Fatal("agent did not stop")
			return nil
		}
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(guard):
			t.Error("agent did not stop")
		}
	})
	return cancel, wait
}

// TestManagedProcesses: the agent runs processes for the runtime with the
// netns sandbox's semantics, and answers the exact errors.
func TestManagedProcesses(t *testing.T) {
	rt := newFakeRuntime(t)
	runAgent(t, Config{Bridge: rt.addr, AgentID: "unit", Backoff: fast, DrainTimeout: 300 * time.Millisecond, Log: privtest.Log(t)})
	if h := rt.acceptControl(); h.AgentID != "unit" {
		t.Fatalf("hello %+v", h)
	}

	run := func(bin string, args []string, env []string) vsock.Message {
		return rt.call(func(id uint64) vsock.Message { return vsock.Run{ID: id, Bin: bin, Args: args, Env: env} })
	}
	m := run("/bin/sh", []string{"sh", "-c", "echo hi; echo err >&2; exit 3"}, nil)
	st, ok := m.(vsock.Started)
	if !ok || st.PID <= 0 {
		t.Fatalf("run: %#v", m)
	}
	if o, e, rc := rt.waitExit(st.PID); o != "hi\n" || e != "err\n" || rc != 3 {
		t.Fatalf("stdout %q stderr %q rc %d", o, e, rc)
	}

	// argv[0] is passed as given; a bare name is searched in the request's
	// PATH.
	m = run("sh", []string{"custom-argv0", "-c", "echo $0"}, []string{"PATH=/usr/bin:/bin"})
	if st, ok = m.(vsock.Started); !ok {
		t.Fatalf("bare name: %#v", m)
	}
	if o, _, rc := rt.waitExit(st.PID); o != "custom-argv0\n" || rc != 0 {
		t.Fatalf("argv0: %q rc %d", o, rc)
	}

	// Large output arrives whole, in order, in chunks.
	m = run("/bin/sh", []string{"sh", "-c", "seq 1 100000"}, nil)
	st = m.(vsock.Started)
	want, _ := exec.Command("seq", "1", "100000").Output()
	if o, _, rc := rt.waitExit(st.PID); o != string(want) || rc != 0 {
		t.Fatalf("seq output: %d bytes, want %d; rc %d", len(o), len(want), rc)
	}

	// Failures carry the reason the runtime maps to NOT_FOUND.
	for _, tc := range []struct {
		bin, reason string
		env         []string
	}{
		{"/no/such/program", vsock.FailedNotFound, nil},
		{"no-such-program-anywhere", vsock.FailedNotFound, nil},
		{"/etc/hostname", vsock.FailedNotExecutable, nil},
		{"hostname", vsock.FailedNotFound, []string{"PATH=/nonexistent"}},
	} {
		m := run(tc.bin, nil, tc.env)
		f, ok := m.(vsock.Failed)
		if !ok || f.Reason != tc.reason || f.Error == "" {
			t.Errorf("run %s: %#v, want failed with reason %q", tc.bin, m, tc.reason)
		}
	}
	// run.user: the image's user, resolved in the agent's root (here the
	// host's, where nobody is 65534).
	m = rt.call(func(id uint64) vsock.Message {
		return vsock.Run{ID: id, Bin: "/bin/sh", Args: []string{"sh", "-c", "id -u; id -g"}, User: "nobody:65534"}
	})
	if st, ok = m.(vsock.Started); !ok {
		t.Fatalf("run as nobody: %#v", m)
	}
	if o, _, rc := rt.waitExit(st.PID); o != "65534\n65534\n" || rc != 0 {
		t.Fatalf("as nobody: %q rc %d", o, rc)
	}
	m = rt.call(func(id uint64) vsock.Message { return vsock.Run{ID: id, Bin: "/bin/true", User: "no-such-user-here"} })
	if f, ok := m.(vsock.Failed); !ok || !strings.Contains(f.Error, `no user "no-such-user-here"`) {
		t.Fatalf("unknown user: %#v", m)
	}
	m = rt.call(func(id uint64) vsock.Message { return vsock.Run{ID: id, Bin: "/bin/true", Dir: "/no/such/dir"} })
	if f, ok := m.(vsock.Failed); !ok || f.Reason != "" || !strings.Contains(f.Error, "/no/such/dir") {
		t.Fatalf("bad dir: %#v", m)
	}

	// kill signals the process group; the exit code follows the shell's
	// convention.
	m = run("/bin/sh", []string{"sh", "-c", "sleep 1000 & wait"}, nil)
	st = m.(vsock.Started)
	if k := rt.call(func(id uint64) vsock.Message { return vsock.Kill{ID: id, PID: st.PID, Signal: 15} }); !k.(vsock.Killed).OK {
		t.Fatalf("kill: %#v", k)
	}
	if _, _, rc := rt.waitExit(st.PID); rc != 128+15 {
		t.Fatalf("rc after SIGTERM %d, want 143", rc)
	}
	if k := rt.call(func(id uint64) vsock.Message { return vsock.Kill{ID: id, PID: st.PID, Signal: 15} }).(vsock.Killed); k.OK || k.Error == "" {
		t.Fatalf("kill of an exited pid: %#v", k)
	}
	if k := rt.call(func(id uint64) vsock.Message { return vsock.Kill{ID: id, PID: 1, Signal: 9} }).(vsock.Killed); k.OK {
		t.Fatal("the agent killed a process it did not start")
	}

	// A background child that keeps the pipes open does not hold up the
	// exit notice for long.
	m = run("/bin/sh", []string{"sh", "-c", "echo before; (sleep 30; echo late) & exit 0"}, nil)
	st = m.(vsock.Started)
	if o, _, rc := rt.waitExit(st.PID); o != "before\n" || rc != 0 {
		t.Fatalf("background child: %q rc %d", o, rc)
	}

	// Unknown and malformed messages are refused without a reply; the
	// connection goes on.
	rt.ctl.Conn().Write([]byte("\x00\x00\x00\x0f{\"type\":\"nope\"}"))
	rt.ctl.Conn().Write([]byte("\x00\x00\x00\x02[]"))
	if _, ok := run("/bin/true", nil, nil).(vsock.Started); !ok {
		t.Fatal("agent stopped answering after bad messages")
	}

	// shutdown stops the processes (each with its exited notice first) and
	// ends the agent.
	m = run("/bin/sleep", []string{"sleep", "1000"}, nil)
	st = m.(vsock.Started)
	if _, ok := rt.call(func(id uint64) vsock.Message { return vsock.Shutdown{ID: id} }).(vsock.ShutdownDone); !ok {
		t.Fatal("no shutdown_done")
	}
	found := false
	for _, n := range rt.notices {
		if e, ok := n.(vsock.Exited); ok && e.PID == st.PID && e.ReturnCode == 128+15 {
			found = true
		}
	}
	if !found {
		t.Fatalf("no exited notice (rc 143) for pid %d before shutdown_done: %#v", st.PID, rt.notices)
	}
}

// TestManagedControlReconnect: when the control connection drops the agent
// dials again and says hello again; a process's exit that happened
// meanwhile is reported on the new connection.
func TestManagedControlReconnect(t *testing.T) {
	rt := newFakeRuntime(t)
	_, wait := runAgent(t, Config{Bridge: rt.addr, Backoff: fast, Log: privtest.Log(t)})
	rt.acceptControl()
	m := rt.call(func(id uint64) vsock.Message {
		return vsock.Run{ID: id, Bin: "/bin/sh", Args: []string{"sh", "-c", "sleep 0.3; echo done"}}
	})
	st := m.(vsock.Started)
	rt.ctl.Close()
	rt.acceptControl()
	_, _, rc := rt.waitExit(st.PID)
	if rc != 0 {
		t.Fatalf("rc %d", rc)
	}
	_ = wait // the agent must still be running: it answers on the new connection
	if _, ok := rt.call(func(id uint64) vsock.Message { return vsock.Run{ID: id, Bin: "/bin/true"} }).(vsock.Started); !ok {
		t.Fatal("no answer on the new control connection")
	}
}

// TestManagedConfigureErrors: configure requests the agent cannot apply are
// answered with the member at fault; without privileges the TAP cannot be
// created and the answer says so.
func TestManagedConfigureErrors(t *testing.T) {
	rt := newFakeRuntime(t)
	runAgent(t, Config{Bridge: rt.addr, Backoff: fast, Log: privtest.Log(t)})
	rt.acceptControl()
	good := vsock.Configure{Name: "vpn0", IfAddr: "10.1.0.2", Mask: "255.255.255.0", MTU: 1220}
	for _, tc := range []struct {
		mut   func(*vsock.Configure)
		field string
	}{
		{func(c *vsock.Configure) { c.Mask = "255.0.255.0" }, "mask"},
		{func(c *vsock.Configure) { c.IfAddr = "10.1.0.0" }, "if_addr"},   // the network's address
		{func(c *vsock.Configure) { c.IfAddr = "10.1.0.255" }, "if_addr"}, // its broadcast
		{func(c *vsock.Configure) { c.Gateway = "10.2.0" }, "gateway"},
		{func(c *vsock.Configure) { c.MTU = 20 }, "mtu"},
		{func(c *vsock.Configure) { c.Name = "" }, "name"},
		{func(c *vsock.Configure) { c.Hosts = map[string]string{"a b": "1.2.3.4"} }, "hosts"},
	} {
		c := good
		tc.mut(&c)
		r := rt.call(func(id uint64) vsock.Message { c.ID = id; return c }).(vsock.Configured)
		if r.OK || r.Field != tc.field || r.Error == "" {
			t.Errorf("configure %+v: %+v, want refused with field %q", c, r, tc.field)
		}
	}
	if os.Geteuid() != 0 {
		r := rt.call(func(id uint64) vsock.Message { c := good; c.ID = id; return c }).(vsock.Configured)
		if r.OK || r.Error == "" {
			t.Fatalf("configure without privileges: %+v", r)
		}
	}
}

// TestManagedConfigure (root): configure creates and configures the TAP
// in the agent's namespace, the same configure again changes nothing, a new
// address is applied in place, a new name is refused; frames flow between
// the bridge and the TAP only after configure; shutdown removes the TAP.
func TestManagedConfigure(t *testing.T) {
	privtest.RequireRoot(t)
	nsName, ns := privtest.NewNetns(t, "gvt-ag-")
	rt := newFakeRuntime(t)
	hosts := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(hosts, []byte("127.0.0.1\tlocalhost\n"), 0o644)
	_, wait := runAgent(t, Config{Bridge: rt.addr, NS: ns, HostsFile: hosts, Backoff: fast, Log: privtest.Log(t)})
	rt.acceptControl()
	data := vsock.DataLink(accept(t, rt.dataL))
	defer data.Close()

	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c := vsock.Configure{Name: "vpn0", IfAddr: "10.1.0.2", Mask: "255.255.255.0", MTU: 1220, Hosts: map[string]string{"peer": "10.1.0.3"},
		CountersMS: 100}
	configure := func(c vsock.Configure) vsock.Configured {
		return rt.call(func(id uint64) vsock.Message { c.ID = id; return c }).(vsock.Configured)
	}
	if r := configure(c); !r.OK {
		t.Fatalf("configure: %+v", r)
	}
	l, err := h.LinkByName("vpn0")
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().MTU != 1220 || l.Attrs().HardwareAddr.String() != "90:13:0a:01:00:02" {
		t.Fatalf("vpn0 mtu %d mac %s", l.Attrs().MTU, l.Attrs().HardwareAddr)
	}
	if b, _ := os.ReadFile(hosts); !strings.Contains(string(b), "10.1.0.3\tpeer") {
		t.Fatalf("hosts file:\n%s", b)
	}
	index := l.Attrs().Index
	if r := configure(c); !r.OK {
		t.Fatalf("same configure again: %+v", r)
	}
	c2 := c
	c2.IfAddr = "10.1.0.9"
	if r := configure(c2); !r.OK {
		t.Fatalf("new address: %+v", r)
	}
	l, _ = h.LinkByName("vpn0")
	addrs, _ := h.AddrList(l, netlink.FAMILY_V4)
	if l.Attrs().Index != index || len(addrs) != 1 || addrs[0].IP.String() != "10.1.0.9" {
		t.Fatalf("after a new address: index %d (was %d), addresses %v", l.Attrs().Index, index, addrs)
	}
	c3 := c2
	c3.Name = "vpn1"
	if r := configure(c3); r.OK || r.Field != "name" {
		t.Fatalf("new name: %+v, want refused (name)", r)
	}

	// The payload's ARP request for a peer comes out on the bridge, from
	// the interface's own MAC.
	bufs, sizes := linktest.Bufs(1)
	got := make(chan []byte, 1)
	go func() {
		if _, err := data.Read(bufs, sizes, link.Headroom); err == nil {
			got <- bufs[0][link.Headroom : link.Headroom+sizes[0]]
		}
		close(got)
	}()
	pinged := make(chan struct{})
	go func() {
		exec.Command("ip", "netns", "exec", nsName, "ping", "-c", "1", "-W", "1", "10.1.0.3").Run()
		close(pinged)
	}()
	defer func() { <-pinged }()
	select {
	case f := <-got:
		if len(f) < 14 || !bytes.Equal(f[6:12], []byte{0x90, 0x13, 10, 1, 0, 9}) {
			t.Fatalf("frame from the TAP: % x", f[:min(len(f), 14)])
		}
	case <-time.After(guard):
		t.Fatal("no frame from the TAP on the bridge")
	}

	// A frame from the runtime that the agent's filter refuses (too short
	// for Ethernet) shows up in the counters the agent reports.
	short := append(make([]byte, link.Headroom), 1, 2, 3)
	if _, err := data.Write([][]byte{short}, link.Headroom); err != nil {
		t.Fatal(err)
	}
	for rt.counters == nil || rt.counters.Ingress.Drops["short"] == 0 {
		if m, ok := rt.receive().(vsock.Counters); ok {
			rt.counters = &m
		}
	}

	rt.counters = nil
	if _, ok := rt.call(func(id uint64) vsock.Message { return vsock.Shutdown{ID: id} }).(vsock.ShutdownDone); !ok {
		t.Fatal("no shutdown_done")
	}
	// The final counts come before shutdown_done.
	if c := rt.counters; c == nil || c.Ingress.Drops["short"] != 1 || c.Egress.Frames == 0 || c.Instance == "" {
		t.Fatalf("final counters %+v, want the short frame dropped, the ARP request passed and the agent's instance", c)
	}
	// The TAP is gone by then; its kernel counts are the last ones read.
	if _, ok := rt.counters.Egress.KernelDrops[tap.DropQueueFull]; !ok {
		t.Fatalf("final counters %+v lack the TAP's kernel drops", rt.counters)
	}
	if err := wait(); err != nil {
		t.Fatalf("Run after shutdown: %v", err)
	}
	if _, err := h.LinkByName("vpn0"); err == nil {
		t.Fatal("vpn0 still exists after shutdown")
	}
}

// TestManagedSIGTERM: a signalled agent stops its processes and still
// reports their exits on the control connection before it leaves.
func TestManagedSIGTERM(t *testing.T) {
	rt := newFakeRuntime(t)
	cancel, wait := runAgent(t, Config{Bridge: rt.addr, Backoff: fast, Log: privtest.Log(t)})
	rt.acceptControl()
	st := rt.call(func(id uint64) vsock.Message {
		return vsock.Run{ID: id, Bin: "/bin/sleep", Args: []string{"sleep", "1000"}}
	}).(vsock.Started)
	cancel()
	if _, _, rc := rt.waitExit(st.PID); rc != 128+15 {
		t.Fatalf("rc %d, want 143", rc)
	}
	if err := wait(); err != nil {
		t.Fatalf("Run after SIGTERM: %v", err)
	}
}
