package agent

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/test/privtest"
	"github.com/gvpn/gvpn/vsock"
)

// pipeListener hands out the far ends of in-memory pipes that dial makes:
// a control session without sockets.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "unix"} }

// dial connects a fake agent that says hello with id.
func (l *pipeListener) dial(t *testing.T, id string) *fakeAgent {
	t.Helper()
	near, far := net.Pipe()
	select {
	case l.conns <- far:
	case <-time.After(guard):
		t.Fatal("the control session does not accept")
	}
	a := &fakeAgent{t: t, ctl: vsock.NewControlConn(near)}
	t.Cleanup(func() { a.ctl.Close() })
	a.send(vsock.Hello{Version: vsock.ProtocolVersion, AgentID: id})
	return a
}

// testControl is a control session on a pipe listener; framings records
// what the session told the data link.
func testControl(t *testing.T) (c *control, l *pipeListener, tab *processTable, framings chan bool) {
	t.Helper()
	l = newPipeListener()
	tab = newProcessTable(privtest.Log(t))
	framings = make(chan bool, 16)
	c = newControl(l, controlConfig{log: privtest.Log(t), timeout: guard, procs: tab, counts: &agentCounters{},
		framing: func(on bool) { framings <- on },
		noHello: func() error { return errors.New("no hello yet") }})
	t.Cleanup(c.close)
	return c, l, tab, framings
}

type result struct {
	r   reply
	err error
}

// requestAsync runs a request in a goroutine.
func requestAsync(c *control, ctx context.Context, build func(uint64, *session) vsock.Message) chan result {
	ch := make(chan result, 1)
	go func() {
		r, err := c.request(ctx, build)
		ch <- result{r, err}
	}()
	return ch
}

func killMsg(pid int) func(uint64, *session) vsock.Message {
	return func(id uint64, _ *session) vsock.Message { return vsock.Kill{ID: id, PID: pid, Signal: 15} }
}

func await(t *testing.T, ch chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(guard):
		t.Fatal("no result")
		return result{}
	}
}

// TestControlRequests: each answer goes to the request of its id whatever
// the order; a request made while the agent is away waits for its next
// connection; one pending when the connection drops fails with
// ErrAgentGone; started registers the process in the table before its
// notices, which reach it.
func TestControlRequests(t *testing.T) {
	c, l, tab, _ := testControl(t)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()

	// Sent before any agent: waits for the hello.
	first := requestAsync(c, ctx, killMsg(1))
	a := l.dial(t, "one")
	k1 := a.expect().(vsock.Kill)
	second := requestAsync(c, ctx, killMsg(2))
	k2 := a.expect().(vsock.Kill)
	if k1.ID == k2.ID || k1.PID != 1 || k2.PID != 2 {
		t.Fatalf("requests %+v and %+v", k1, k2)
	}
	a.send(vsock.Killed{ID: k2.ID, OK: true})
	a.send(vsock.Killed{ID: k1.ID, Error: "no such process"})
	if r := await(t, first); r.err != nil || r.r.m.(vsock.Killed).Error != "no such process" {
		t.Fatalf("first request got %+v, %v", r.r.m, r.err)
	}
	if r := await(t, second); r.err != nil || !r.r.m.(vsock.Killed).OK {
		t.Fatalf("second request got %+v, %v", r.r.m, r.err)
	}

	// started: the process is in the table, with what follows it.
	run := requestAsync(c, ctx, func(id uint64, _ *session) vsock.Message { return vsock.Run{ID: id, Bin: "/bin/x"} })
	r := a.expect().(vsock.Run)
	a.send(vsock.Started{ID: r.ID, PID: 9})
	a.send(vsock.Output{PID: 9, Stdout: []byte("hi")})
	a.send(vsock.Exited{PID: 9, ReturnCode: 2})
	res := await(t, run)
	if res.err != nil || res.r.p == nil || res.r.p.Pid() != 9 {
		t.Fatalf("run got %+v, %v", res.r, res.err)
	}
	if ev := collect(t, res.r.p); len(ev) != 2 || ev[0] != "out:hi" || ev[1] != "exit:2" {
		t.Fatalf("events %v", ev)
	}
	if tab.has(9) {
		t.Fatal("exited process still in the table")
	}

	// The connection drops under a pending request.
	pending := requestAsync(c, ctx, killMsg(3))
	a.expect()
	a.ctl.Close()
	if r := await(t, pending); !errors.Is(r.err, ErrAgentGone) {
		t.Fatalf("pending request on a dropped connection: %v", r.err)
	}

	// Away: the next request goes to the agent's next connection.
	next := requestAsync(c, ctx, killMsg(4))
	a2 := l.dial(t, "two")
	k := a2.expect().(vsock.Kill)
	a2.send(vsock.Killed{ID: k.ID, OK: true})
	if r := await(t, next); r.err != nil || r.r.s.agentID != "two" {
		t.Fatalf("request across the reconnect: %+v, %v", r.r, r.err)
	}
}

// TestControlReconfigure: the configuration the agent accepted goes again
// to its next connection; superframes are asked for only where offered,
// and the data link glues them only while the current connection agreed.
func TestControlReconfigure(t *testing.T) {
	c, l, _, framings := testControl(t)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	near, far := net.Pipe()
	l.conns <- far
	a := &fakeAgent{t: t, ctl: vsock.NewControlConn(near)}
	defer a.ctl.Close()
	a.send(vsock.Hello{Version: vsock.ProtocolVersion, AgentID: "one", VNetHdr: true})

	done := make(chan error, 1)
	go func() {
		cr, err := c.configure(ctx, vsock.Configure{Name: "vpn0", IfAddr: "10.5.0.2", Mask: "255.255.255.0", MTU: 1220})
		if err == nil && !cr.OK {
			err = errors.New(cr.Error)
		}
		done <- err
	}()
	got := a.expect().(vsock.Configure)
	if !got.VNetHdr || got.CountersMS <= 0 {
		t.Fatalf("configure %+v: want superframes and counters asked for", got)
	}
	ok := vsock.ConfiguredFor(got.ID, nil)
	ok.VNetHdr = true
	a.send(ok)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if on := <-framings; !on {
		t.Fatal("superframes agreed but the data link was told plain")
	}

	a.ctl.Close()
	if on := <-framings; on {
		t.Fatal("the connection that agreed is gone but the data link still glues")
	}
	a2 := l.dial(t, "two") // offers no superframes
	again := a2.expect().(vsock.Configure)
	if again.IfAddr != got.IfAddr || again.Mask != got.Mask || again.VNetHdr {
		t.Fatalf("configure after reconnect %+v, want %+v without superframes", again, got)
	}
	a2.send(vsock.ConfiguredFor(again.ID, nil))
	// The answer was taken before this request's (one reader, in order).
	k := requestAsync(c, ctx, killMsg(1))
	a2.send(vsock.Killed{ID: a2.expect().(vsock.Kill).ID, OK: true})
	await(t, k)
	select {
	case on := <-framings:
		t.Fatalf("data link told %v by an agent that agreed to nothing", on)
	default:
	}
}

// TestControlEnds: before any hello a request times out with noHello's
// error; after fail, waitHello and requests fail with its error at once;
// closing refuses requests with sandbox.ErrClosed; close twice is fine.
func TestControlEnds(t *testing.T) {
	c, _, _, _ := testControl(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := c.request(ctx, killMsg(1))
	cancel()
	if err == nil || err.Error() != "no hello yet" {
		t.Fatalf("request before any hello: %v", err)
	}

	gone := errors.New("the command exited")
	waiting := make(chan error, 1)
	go func() { waiting <- c.waitHello(context.Background()) }()
	c.fail(gone)
	select {
	case err := <-waiting:
		if err != gone {
			t.Fatalf("waitHello after fail: %v", err)
		}
	case <-time.After(guard):
		t.Fatal("waitHello did not end on fail")
	}
	if _, err := c.request(context.Background(), killMsg(1)); err != gone {
		t.Fatalf("request after fail: %v", err)
	}

	c.closing()
	if _, err := c.request(context.Background(), killMsg(1)); !errors.Is(err, sandbox.ErrClosed) {
		t.Fatalf("request while closing: %v", err)
	}
	c.close()
	c.close()
}
