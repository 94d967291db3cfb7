package agent

import (
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/sandbox"
)

// processTable is the payload's processes the agent started and has not
// reported exited, by their pid in the payload.
//
// The control session fills it from the agent's notices (started, output,
// exited); the Box looks pids up for Kill and calls finishAll when the
// agent that ran them is gone (its command exited, or Close). It knows
// neither of them. Its methods are safe for concurrent use; it has no
// Close: finishAll ends every process it holds, and a table may be used
// again after it (the next agent's processes).
type processTable struct {
	log *logrus.Entry

	mu    sync.Mutex
	procs map[uint64]*process
}

func newProcessTable(log *logrus.Entry) *processTable {
	return &processTable{log: log, procs: make(map[uint64]*process)}
}

// add registers a new process under pid. A process the table still held
// under that pid (the agent reused a pid whose exit never came) is
// reported exited (-1).
func (t *processTable) add(pid uint64) *process {
	p := &process{pid: pid}
	t.mu.Lock()
	old := t.procs[pid]
	t.procs[pid] = p
	t.mu.Unlock()
	if old != nil {
		old.finish(-1)
	}
	return p
}

// forget removes p without an exit event: nobody got it (its Start gave
// up).
func (t *processTable) forget(p *process) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.procs[p.pid] == p {
		delete(t.procs, p.pid)
	}
}

// has reports whether pid is a process whose exit has not been reported.
func (t *processTable) has(pid uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.procs[pid] != nil
}

// output delivers a chunk of pid's output, stdout first; false when pid is
// unknown.
func (t *processTable) output(pid uint64, stdout, stderr []byte) bool {
	t.mu.Lock()
	p := t.procs[pid]
	t.mu.Unlock()
	if p == nil {
		return false
	}
	if len(stdout) > 0 {
		p.deliver(sandbox.Event{Pid: pid, Stdout: stdout})
	}
	if len(stderr) > 0 {
		p.deliver(sandbox.Event{Pid: pid, Stderr: stderr})
	}
	return true
}

// exited delivers pid's exit, its last event, and removes it; false when
// pid is unknown.
func (t *processTable) exited(pid uint64, rc int32) bool {
	t.mu.Lock()
	p := t.procs[pid]
	delete(t.procs, pid)
	t.mu.Unlock()
	if p == nil {
		return false
	}
	p.finish(rc)
	return true
}

// finishAll reports every process exited with -1 and empties the table:
// the agent that ran them is gone (why says how, in the log).
func (t *processTable) finishAll(why string) {
	t.mu.Lock()
	procs := t.procs
	t.procs = make(map[uint64]*process)
	t.mu.Unlock()
	for _, p := range procs {
		t.log.WithField("pid", p.pid).Warn(why + ": process reported exited (-1)")
		p.finish(-1)
	}
}

// process is a payload process started through the agent. Its events wait
// in a queue until Stream: the service writes the RunProcess reply first.
type process struct {
	pid uint64

	mu       sync.Mutex
	sink     func(sandbox.Event)
	queue    []sandbox.Event
	streamed bool
	done     bool
}

var _ sandbox.Process = (*process)(nil)

// Pid is the process's pid inside the payload, as the agent reported it.
func (p *process) Pid() uint64 { return p.pid }

// Stream delivers the queued events, then every later one, to sink, in the
// order the agent sent them; the exit event is the last. sink is called
// one event at a time. A second call does nothing.
func (p *process) Stream(sink func(sandbox.Event)) {
	if sink == nil {
		sink = func(sandbox.Event) {}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.streamed {
		return
	}
	p.streamed = true
	for _, ev := range p.queue {
		sink(ev)
	}
	p.queue = nil
	p.sink = sink
}

func (p *process) deliver(ev sandbox.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	if ev.Exited {
		p.done = true
	}
	if p.sink == nil {
		p.queue = append(p.queue, ev)
		return
	}
	p.sink(ev)
}

func (p *process) finish(rc int32) {
	p.deliver(sandbox.Event{Pid: p.pid, Exited: true, ReturnCode: rc})
}
