package agent

import (
	"strings"
	"sync"
	"testing"

	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/test/privtest"
)

// recorder is a Stream sink that keeps the events as strings.
type recorder struct {
	mu  sync.Mutex
	evs []string
}

func (r *recorder) sink(e sandbox.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, eventString(e))
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.evs, " ")
}

// TestProcessTable: notices reach their process in order, queued until
// Stream; the exit is the last event and only one; a reused pid ends the
// process that had it; finishAll ends every process with -1 and empties
// the table; a forgotten process gets nothing.
func TestProcessTable(t *testing.T) {
	tab := newProcessTable(privtest.Log(t))
	p1 := tab.add(1)
	if !tab.output(1, []byte("a"), []byte("b")) || !tab.output(1, nil, []byte("c")) {
		t.Fatal("output of a known pid refused")
	}
	if !tab.exited(1, 3) {
		t.Fatal("exit of a known pid refused")
	}
	if tab.has(1) || tab.output(1, []byte("late"), nil) || tab.exited(1, 4) {
		t.Fatal("pid 1 still known after its exit")
	}
	var r1 recorder
	p1.Stream(r1.sink)
	if got, want := r1.String(), "out:a err:b err:c exit:3"; got != want {
		t.Fatalf("queued events %q, want %q", got, want)
	}

	// Streamed first: events go straight to the sink.
	p2 := tab.add(2)
	var r2 recorder
	p2.Stream(r2.sink)
	tab.output(2, []byte("x"), nil)
	if got := r2.String(); got != "out:x" {
		t.Fatalf("streamed events %q", got)
	}

	// The agent reports pid 2 started again: the old process is over.
	p2b := tab.add(2)
	if got := r2.String(); got != "out:x exit:-1" {
		t.Fatalf("events of a process whose pid was reused %q", got)
	}
	if p2b == p2 || p2b.Pid() != 2 {
		t.Fatal("add did not make a new process for the reused pid")
	}

	// forget: only the process given, without an event.
	tab.forget(p2)
	if !tab.has(2) {
		t.Fatal("forget of an old process removed the one now under its pid")
	}
	tab.forget(p2b)
	if tab.has(2) {
		t.Fatal("forgotten process still known")
	}
	var r2b recorder
	p2b.Stream(r2b.sink)
	if got := r2b.String(); got != "" {
		t.Fatalf("forgotten process got events %q", got)
	}

	// finishAll: every process ends with -1, once, and the table is empty.
	p3, p4 := tab.add(3), tab.add(4)
	var r3, r4 recorder
	p3.Stream(r3.sink)
	tab.finishAll("test")
	p4.Stream(r4.sink)
	tab.finishAll("test again")
	tab.exited(3, 0)
	if r3.String() != "exit:-1" || r4.String() != "exit:-1" {
		t.Fatalf("after finishAll: %q and %q, want one exit:-1 each", r3.String(), r4.String())
	}
	if tab.has(3) || tab.has(4) {
		t.Fatal("finishAll left processes in the table")
	}
}
