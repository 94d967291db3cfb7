package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/sandbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// journal records what the fakes did, in order, together with the replies
// the test read, so ordering rules can be checked.
type journal struct {
	mu      sync.Mutex
	entries []string
}

func (j *journal) add(s string) {
	j.mu.Lock()
	j.entries = append(j.entries, s)
	j.mu.Unlock()
}

func (j *journal) index(s string) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i, e := range j.entries {
		if e == s {
			return i
		}
	}
	return -1
}

type fakeProcess struct {
	pid uint64
	j   *journal
}

func (p *fakeProcess) Pid() uint64 { return p.pid }
func (p *fakeProcess) Stream(sink func(sandbox.Event)) {
	p.j.add("stream")
	go func() {
		sink(sandbox.Event{Pid: p.pid, Stdout: []byte("hi\n")})
		sink(sandbox.Event{Pid: p.pid, Exited: true, ReturnCode: 3})
	}()
}

type fakeSandbox struct{ j *journal }

func (s *fakeSandbox) Start(spec sandbox.ProcessSpec) (sandbox.Process, error) {
	if spec.Bin == "/missing" {
		return nil, sandbox.ErrNotFound
	}
	s.j.add("start")
	return &fakeProcess{pid: 7, j: s.j}, nil
}
func (s *fakeSandbox) Kill(pid uint64, sig syscall.Signal) error {
	if pid != 7 {
		return sandbox.ErrNoProcess
	}
	s.j.add("kill")
	return nil
}
func (s *fakeSandbox) Close() error {
	time.Sleep(50 * time.Millisecond) // teardown takes a while
	s.j.add("sandbox closed")
	return nil
}

type fakeNetwork struct{ j *journal }

func (n *fakeNetwork) Create(ctx context.Context, req *api.Request_CreateNetwork) (api.Endpoint, error) {
	return api.Endpoint{}, &api.Error{Code: api.Response_BAD_REQUEST, Field: "if_addr", Message: "invalid if_addr"}
}
func (n *fakeNetwork) Stats() api.VPNStats { return api.VPNStats{} }
func (n *fakeNetwork) Close() error        { n.j.add("network closed"); return nil }

// harness runs Serve on pipes, like the ExeUnit's stdin and stdout.
type harness struct {
	j    *journal
	w    *api.Writer
	r    *api.Reader
	in   io.WriteCloser
	done chan error
}

func newHarness(t *testing.T) *harness {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	j := &journal{}
	h := &harness{j: j, w: api.NewWriter(inW), r: api.NewReader(outR, 0), in: inW, done: make(chan error, 1)}
	log := logrus.New()
	log.SetOutput(io.Discard)
	go func() {
		h.done <- Serve(context.Background(), Config{
			In: inR, Out: outW, Version: "test", Sandbox: &fakeSandbox{j}, Network: &fakeNetwork{j},
			StatsInterval: -1, Log: logrus.NewEntry(log),
		})
		outW.Close()
	}()
	t.Cleanup(func() { inW.Close(); outR.Close() })
	return h
}

func (h *harness) call(t *testing.T, req *api.Request) *api.Response {
	t.Helper()
	if err := h.w.WriteRequest(req); err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := h.r.ReadResponse()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetEvent() {
			continue
		}
		if !api.ReplyMatches(req, resp) {
			t.Fatalf("reply %s to %s: the real ExeUnit would panic", api.ResponseName(resp), api.CommandName(req))
		}
		return resp
	}
}

func TestRepliesMatchTheirRequests(t *testing.T) {
	h := newHarness(t)
	if v := h.call(t, &api.Request{Id: 2, Command: &api.Request_Hello_{Hello: &api.Request_Hello{Version: "0.1.0"}}}).GetHello().GetVersion(); v != "test" {
		t.Fatalf("hello version %q", v)
	}
	if e := h.call(t, &api.Request{Id: 3}).GetError(); e == nil || e.GetCode() != api.Response_BAD_REQUEST {
		t.Fatalf("empty command: %v", e)
	}
	e := h.call(t, &api.Request{Id: 4, Command: &api.Request_Network{Network: &api.Request_CreateNetwork{}}}).GetError()
	if e == nil || e.GetCode() != api.Response_BAD_REQUEST || e.GetContext()["field"] != "if_addr" {
		t.Fatalf("network error %v: want BAD_REQUEST with context field=if_addr", e)
	}
	if e := h.call(t, &api.Request{Id: 5, Command: &api.Request_Run{Run: &api.Request_RunProcess{Bin: "/missing"}}}).GetError(); e.GetCode() != api.Response_NOT_FOUND {
		t.Fatalf("missing binary: %v", e)
	}
	if e := h.call(t, &api.Request{Id: 6, Command: &api.Request_Kill{Kill: &api.Request_KillProcess{Pid: 99}}}).GetError(); e.GetCode() != api.Response_NOT_FOUND {
		t.Fatalf("kill of an unknown pid: %v", e)
	}
	// A signal Linux does not have is the requestor's mistake, named; the
	// sandbox never sees it.
	for _, sig := range []int32{9999, 65, -9} {
		e := h.call(t, &api.Request{Id: 7, Command: &api.Request_Kill{Kill: &api.Request_KillProcess{Pid: 7, Signal: sig}}}).GetError()
		if e.GetCode() != api.Response_BAD_REQUEST || e.GetContext()["field"] != "signal" || !strings.Contains(e.GetMessage(), fmt.Sprint(sig)) {
			t.Fatalf("kill with signal %d: %v; want BAD_REQUEST naming the field and the value", sig, e)
		}
	}
	if h.j.index("kill") >= 0 {
		t.Fatalf("an out-of-range signal reached the sandbox: %v", h.j.entries)
	}
	h.in.Close() // stdin EOF: clean teardown, nil
	if err := <-h.done; err != nil {
		t.Fatalf("Serve after stdin EOF: %v", err)
	}
	if h.j.index("sandbox closed") < 0 || h.j.index("network closed") < 0 {
		t.Fatalf("no teardown at stdin EOF: %v", h.j.entries)
	}
}

func TestOutputOnlyAfterTheRunReply(t *testing.T) {
	h := newHarness(t)
	if err := h.w.WriteRequest(&api.Request{Id: 2, Command: &api.Request_Run{Run: &api.Request_RunProcess{Bin: "/bin/true"}}}); err != nil {
		t.Fatal(err)
	}
	first, err := h.r.ReadResponse()
	if err != nil {
		t.Fatal(err)
	}
	if first.GetEvent() || first.GetRun().GetPid() != 7 {
		t.Fatalf("first message %v: the reply must come before any status event", first)
	}
	out, _ := h.r.ReadResponse()
	exit, _ := h.r.ReadResponse()
	if string(out.GetStatus().GetStdout()) != "hi\n" || !out.GetEvent() || exit.GetStatus().GetRunning() || exit.GetStatus().GetReturnCode() != 3 {
		t.Fatalf("events %v %v", out, exit)
	}
	h.in.Close()
	<-h.done
}

func TestShutdownTearsDownBeforeItReplies(t *testing.T) {
	h := newHarness(t)
	h.call(t, &api.Request{Id: 2, Command: &api.Request_Shutdown_{Shutdown: &api.Request_Shutdown{}}})
	h.j.add("reply read")
	if closed, reply := h.j.index("sandbox closed"), h.j.index("reply read"); closed < 0 || closed > reply {
		t.Fatalf("journal %v: the sandbox must be gone before the Shutdown reply (the ExeUnit SIGKILLs right after it)", h.j.entries)
	}
	if err := <-h.done; err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

func TestBrokenStreamIsAnError(t *testing.T) {
	h := newHarness(t)
	h.in.Write([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	if err := <-h.done; !errors.Is(err, ErrProtocol) {
		t.Fatalf("Serve on garbage: %v, want ErrProtocol", err)
	}
	if h.j.index("sandbox closed") < 0 {
		t.Fatal("no teardown after a broken stream")
	}
}

// superNetwork reports a VPN whose offload link refused forged superframes.
type superNetwork struct{ fakeNetwork }

func (n *superNetwork) Stats() api.VPNStats {
	return api.VPNStats{Address: "10.0.0.2", Networks: []string{"10.0.0.2/24"},
		Links: map[string]uint64{"superframes_split": 5, "superframes_coalesced": 4, "superframes_malformed": 3, "superframes_small_gso": 3}}
}

// TestSuperframeCountersAreLoggedPeriodically: the superframe counters (a
// malicious agent's forged headers among them) are in the periodic counter
// line, not only in the bridge's last words at teardown.
func TestSuperframeCountersAreLoggedPeriodically(t *testing.T) {
	inR, inW := io.Pipe()
	log, hook := logtest.NewNullLogger()
	done := make(chan error, 1)
	j := &journal{}
	go func() {
		done <- Serve(context.Background(), Config{
			In: inR, Out: io.Discard, Version: "test", Sandbox: &fakeSandbox{j}, Network: &superNetwork{fakeNetwork{j}},
			StatsInterval: time.Millisecond, Log: logrus.NewEntry(log),
		})
	}()
	periodic := func() *logrus.Entry {
		for _, e := range hook.AllEntries() {
			if e.Message == "VPN counters" {
				return e
			}
		}
		return nil
	}
	var e *logrus.Entry
	for deadline := time.Now().Add(10 * time.Second); e == nil; e = periodic() {
		if time.Now().After(deadline) {
			t.Fatal("no periodic counter line")
		}
		time.Sleep(time.Millisecond)
	}
	inW.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]uint64{"link_superframes_small_gso": 3, "link_superframes_split": 5, "link_superframes_coalesced": 4, "link_superframes_malformed": 3} {
		if e.Data[f] != want {
			t.Errorf("periodic line: %s = %v, want %d (%v)", f, e.Data[f], want, e.Data)
		}
	}
}
