package agent

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/endpoint"
	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/link/linktest"
	"github.com/gvpn/gvpn/runtime/network"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/vsock"
)

// memEndpoint is the ExeUnit's side of the network manager, in memory.
type memEndpoint struct{ l link.Link }

func (e memEndpoint) Reply() api.Endpoint                     { return api.UnixStreamEndpoint("/mem") }
func (e memEndpoint) Link(context.Context) (link.Link, error) { return e.l, nil }
func (e memEndpoint) Close() error                            { return e.l.Close() }

// TestAgentCountersInVPNStats: the counters the agent reports on the
// control connection reach gvpn.vpn through the network manager, as drops
// of the right direction named agent_…, and stay a growing total when the
// agent is replaced.
func TestAgentCountersInVPNStats(t *testing.T) {
	cfg, _ := testConfig(t, "")
	b, a := openWithAgent(t, cfg)
	u, err := endpoint.Parse("udp://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	exeunit := linktest.NewChannelDevice()
	mgr := network.New(network.Options{VPN: &u, Attacher: b, Log: cfg.Log,
		OpenEndpoint: func(endpoint.URL, endpoint.Options) (network.Endpoint, error) { return memEndpoint{exeunit}, nil }})
	defer mgr.Close()

	got := a.serveOne(func(m vsock.Message) []vsock.Message {
		return []vsock.Message{vsock.ConfiguredFor(m.(vsock.Configure).ID, nil)}
	})
	req := &api.Request_CreateNetwork{Networks: []*api.Network{{Addr: "10.5.0.0", Mask: "255.255.255.0", IfAddr: "10.5.0.2"}}}
	if _, err := mgr.Create(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if c := (<-got).(vsock.Configure); c.CountersMS <= 0 {
		t.Fatalf("configure %+v does not ask for counters", c)
	}

	// report sends the agent's counters, then answers a run: the Box reads
	// the control connection in order, so once Start returns the report
	// has been taken.
	report := func(c vsock.Counters) {
		t.Helper()
		got := a.serveOne(func(m vsock.Message) []vsock.Message {
			return []vsock.Message{c, vsock.Failed{ID: m.(vsock.Run).ID, Error: "sync"}}
		})
		if _, err := b.Start(sandbox.ProcessSpec{Bin: "/bin/x"}); err == nil {
			t.Fatal("Start succeeded")
		}
		<-got
	}
	first := vsock.Counters{
		Instance: "one",
		Egress: vsock.CounterDir{Frames: 10, Drops: map[string]uint64{"spoofed_ip": 4},
			KernelDrops: map[string]uint64{"tap_tx_dropped": 6}},
		Ingress: vsock.CounterDir{Frames: 20, Drops: map[string]uint64{"bridge_dropped": 2, "unconfigured": 1}},
		Events:  map[string]uint64{"bridge_reconnects": 3},
	}
	report(first)
	st := mgr.Stats()
	want := []struct {
		dir  map[string]uint64
		name string
		n    uint64
	}{
		{st.Egress.Drops, "agent_spoofed_ip", 4},
		{st.Ingress.Drops, "agent_bridge_dropped", 2},
		{st.Ingress.Drops, "agent_unconfigured", 1},
		{st.Egress.KernelDrops, "agent_tap_tx_dropped", 6},
		{st.Links, "agent_bridge_reconnects", 3},
		{st.Links, "agent_egress_frames", 10},
		{st.Links, "agent_ingress_frames", 20},
	}
	for _, w := range want {
		if w.dir[w.name] != w.n {
			t.Errorf("%s = %d, want %d; stats %+v", w.name, w.dir[w.name], w.n, st)
		}
	}
	if _, ok := st.Ingress.Drops["agent_spoofed_ip"]; ok {
		t.Errorf("the agent's egress drop shows as ingress: %+v", st.Ingress.Drops)
	}
	// gvpn.vpn's value is the JSON of these stats.
	js, _ := json.Marshal(st)
	if !strings.Contains(string(js), `"agent_spoofed_ip":4`) {
		t.Errorf("gvpn.vpn %s lacks the agent's drop", js)
	}

	// The same agent counts on; a new agent starts from zero, and the
	// old one's counts stay under its.
	later := first
	later.Egress.Frames, later.Egress.Drops = 12, map[string]uint64{"spoofed_ip": 5}
	report(later)
	if n := mgr.Stats().Egress.Drops["agent_spoofed_ip"]; n != 5 {
		t.Errorf("after a later report: %d, want 5", n)
	}
	// A report that lacks counts the last had (the TAP's kernel counts,
	// say) is still the same agent's.
	same := later
	same.Egress.KernelDrops = nil
	report(same)
	if n := mgr.Stats().Egress.Drops["agent_spoofed_ip"]; n != 5 {
		t.Errorf("after a report without kernel counts: %d, want 5", n)
	}
	report(vsock.Counters{Instance: "two", Egress: vsock.CounterDir{Frames: 100, Drops: map[string]uint64{"spoofed_ip": 1}}})
	if n := mgr.Stats().Egress.Drops["agent_spoofed_ip"]; n != 6 {
		t.Errorf("after a new agent's report: %d, want 5+1", n)
	}
}
