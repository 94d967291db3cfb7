package agent

import (
	"errors"
	"sync"
	"time"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/offload"
	"github.com/gvpn/gvpn/vsock"
)

// countersEvery is how often the Box asks the agent to report its counters
// (vsock.Configure.CountersMS): about as often as the service's gvpn.vpn
// events may read them.
const countersEvery = time.Second

// agentPrefix marks the agent's counters among the runtime's in gvpn.vpn.
const agentPrefix = "agent_"

// agentCounters keeps the agent's counter reports (vsock.Counters) as one
// growing total, across agents: a report of another instance than the last
// one comes from a new agent (the command was run again), and the old
// agent's last report is kept as a base under it. (Without instances, from
// an agent that sends none, a report whose frames went down is taken for a
// new agent's.)
type agentCounters struct {
	mu   sync.Mutex
	base vsock.Counters // agents gone
	last vsock.Counters // the current agent's latest report
}

// report takes one report from the agent.
func (a *agentCounters) report(c vsock.Counters) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if newAgent(c, a.last) {
		addCounters(&a.base, a.last)
	}
	a.last = c
}

// total returns the sum of every agent's counters.
func (a *agentCounters) total() vsock.Counters {
	a.mu.Lock()
	defer a.mu.Unlock()
	var t vsock.Counters
	addCounters(&t, a.base)
	addCounters(&t, a.last)
	t.KernelError = a.last.KernelError
	return t
}

func addCounters(into *vsock.Counters, c vsock.Counters) {
	for _, d := range [...]struct {
		into *vsock.CounterDir
		from vsock.CounterDir
	}{{&into.Egress, c.Egress}, {&into.Ingress, c.Ingress}} {
		d.into.Frames += d.from.Frames
		d.into.Bytes += d.from.Bytes
		d.into.Drops = link.AddCounts(d.into.Drops, d.from.Drops)
		d.into.KernelDrops = link.AddCounts(d.into.KernelDrops, d.from.KernelDrops)
	}
	into.Events = link.AddCounts(into.Events, c.Events)
}

// newAgent reports whether report c comes from another agent than last.
func newAgent(c, last vsock.Counters) bool {
	if c.Instance != "" || last.Instance != "" {
		return c.Instance != last.Instance
	}
	return c.Egress.Frames < last.Egress.Frames || c.Ingress.Frames < last.Ingress.Frames
}

// bridgeLink is the link Attach returns: the offload link over the bridge,
// whose counters also hold the agent's (agentPrefix before each name). It
// is the pump's payload side, so what it reads is the payload's egress:
// the agent's egress counts are its rx, the ingress ones its tx.
type bridgeLink struct {
	*offload.Link
	agent *agentCounters
}

var (
	_ link.Counters      = (*bridgeLink)(nil)
	_ link.KernelDropper = (*bridgeLink)(nil)
)

// Counters implements link.Counters: the bridge's and the agent's.
func (l *bridgeLink) Counters() link.Counts {
	c := l.Link.Counters()
	t := l.agent.total()
	c.RxDrops = addPrefixed(c.RxDrops, t.Egress.Drops)
	c.TxDrops = addPrefixed(c.TxDrops, t.Ingress.Drops)
	c.Events = addPrefixed(c.Events, t.Events)
	if t.Egress.Frames > 0 || t.Ingress.Frames > 0 {
		c.Events = addPrefixed(c.Events, map[string]uint64{
			"egress_frames": t.Egress.Frames, "ingress_frames": t.Ingress.Frames,
		})
	}
	return c
}

// KernelDrops implements link.KernelDropper with the guest kernel's drops
// at the agent's TAP, as the agent last reported them.
func (l *bridgeLink) KernelDrops() (rx, tx map[string]uint64, err error) {
	t := l.agent.total()
	if t.KernelError != "" {
		err = errors.New("gvpn-agent: " + t.KernelError)
	}
	return addPrefixed(nil, t.Egress.KernelDrops), addPrefixed(nil, t.Ingress.KernelDrops), err
}

func addPrefixed(into, from map[string]uint64) map[string]uint64 {
	for k, v := range from {
		if into == nil {
			into = make(map[string]uint64, len(from))
		}
		into[agentPrefix+k] += v
	}
	return into
}
