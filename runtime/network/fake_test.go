package network

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/endpoint"
	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/link/linktest"
)

// This file runs the manager's logic without root, between two in-memory
// sides: a fake Attacher whose link is a linktest device (the test writes
// the payload's frames into it and reads what the payload receives, as the
// kernel would behind a TAP) and a fake Endpoint whose link is another (the
// test plays the ExeUnit).

// countingLink is a link with counters of its own, as a bridge or the
// endpoint socket has them.
type countingLink struct {
	link.Link
	counts       link.Counts
	krx, ktx     map[string]uint64
	kernelFailed error
}

func (c *countingLink) Counters() link.Counts { return c.counts }
func (c *countingLink) KernelDrops() (rx, tx map[string]uint64, err error) {
	return c.krx, c.ktx, c.kernelFailed
}

// fakeAttacher hands out its link once; err makes Attach fail.
type fakeAttacher struct {
	l   link.Link
	err error
	got netcfg.LinkConfig
}

func (f *fakeAttacher) Attach(_ context.Context, cfg netcfg.LinkConfig, hosts map[string]string) (link.Link, error) {
	if f.err != nil {
		return nil, f.err
	}
	if _, err := netcfg.CheckHosts(hosts); err != nil {
		return nil, err
	}
	f.got = cfg
	return f.l, nil
}

// fakeEndpoint is the ExeUnit's side: Link returns its link at once.
type fakeEndpoint struct {
	l      link.Link
	mu     sync.Mutex
	closes int
}

func (e *fakeEndpoint) Reply() api.Endpoint {
	return api.UDPEndpoint(netip.MustParseAddrPort("127.0.0.1:1"))
}
func (e *fakeEndpoint) Link(context.Context) (link.Link, error) { return e.l, nil }
func (e *fakeEndpoint) Close() error {
	e.mu.Lock()
	e.closes++
	e.mu.Unlock()
	return e.l.Close()
}

// fakeVPN is a manager between the two fake sides.
type fakeVPN struct {
	mgr              *Manager
	payload, exeunit *linktest.ChannelDevice
	iface, uplink    *countingLink
	att              *fakeAttacher
	ep               *fakeEndpoint
}

func newFakeVPN(t *testing.T) *fakeVPN {
	t.Helper()
	// The test plays the payload and the ExeUnit through the devices'
	// channels: Inbound is what the manager reads, Outbound what it wrote.
	payload, exeunit := linktest.NewChannelDevice(), linktest.NewChannelDevice()
	v := &fakeVPN{payload: payload, exeunit: exeunit,
		iface: &countingLink{Link: payload}, uplink: &countingLink{Link: exeunit}}
	v.att = &fakeAttacher{l: v.iface}
	v.ep = &fakeEndpoint{l: v.uplink}
	u, err := endpoint.Parse("udp://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	v.mgr = New(Options{VPN: &u, Attacher: v.att, Log: quietLog(),
		OpenEndpoint: func(endpoint.URL, endpoint.Options) (Endpoint, error) { return v.ep, nil }})
	t.Cleanup(func() {
		v.mgr.Close()
		payload.Close()
		exeunit.Close()
	})
	return v
}

func udpFrame(t *testing.T, srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	udp := &layers.UDP{SrcPort: 4000, DstPort: 5000}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, udp, gopacket.Payload("hello")); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// TestFakeManager: frames cross both ways, the filters drop a spoofed one,
// and gvpn.vpn holds the pump's counts and both links' by the payload's
// direction.
func TestFakeManager(t *testing.T) {
	v := newFakeVPN(t)
	// The links' own counters, in their own directions: the payload's
	// side loses on its way to Read (egress) and after Write (ingress),
	// the ExeUnit's side the other way round.
	v.iface.counts = link.Counts{RxDrops: map[string]uint64{"agent_no_route": 3}, TxDrops: map[string]uint64{"bridge_dropped": 5},
		Events: map[string]uint64{"bridge_accepted": 1}}
	v.iface.krx, v.iface.ktx = map[string]uint64{"tap_tx_dropped": 7}, map[string]uint64{"tap_rx_dropped": 11}
	v.uplink.counts = link.Counts{RxDrops: map[string]uint64{link.DropForeignSource: 2}}
	v.uplink.krx = map[string]uint64{link.DropSocketRcvbuf: 13}

	reply, err := v.mgr.Create(context.Background(), vpnRequest("10.0.0.0", "255.255.255.0", "", "10.0.0.2", map[string]string{"peer": "10.0.0.3"}))
	if err != nil {
		t.Fatal(err)
	}
	if reply.Kind() != api.EndpointUDPDatagram {
		t.Fatalf("reply %+v", reply)
	}
	if v.att.got.Net.IfAddr.String() != "10.0.0.2" || v.att.got.MTU != netcfg.DefaultMTU {
		t.Fatalf("attached with %+v", v.att.got)
	}
	own, peer := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	ownMAC, peerMAC := netcfg.MAC(own), netcfg.MAC(peer)

	// Egress: a spoofed frame is dropped, the good one arrives.
	v.payload.Inbound <- udpFrame(t, ownMAC, peerMAC, peer, own)
	out := udpFrame(t, ownMAC, peerMAC, own, peer)
	v.payload.Inbound <- out
	if got := <-v.exeunit.Outbound; !bytes.Equal(got, out) {
		t.Fatalf("egress: got %x, want %x", got, out)
	}
	// Ingress.
	in := udpFrame(t, peerMAC, ownMAC, peer, own)
	v.exeunit.Inbound <- in
	if got := <-v.payload.Outbound; !bytes.Equal(got, in) {
		t.Fatalf("ingress: got %x, want %x", got, in)
	}

	st := v.mgr.Stats()
	if !st.Up || st.Address != "10.0.0.2" || st.Network != "10.0.0.0/24" {
		t.Fatalf("stats %+v", st)
	}
	if st.Egress.Frames != 1 || st.Ingress.Frames != 1 || st.Egress.Bytes != uint64(len(out)) {
		t.Fatalf("frames: egress %+v ingress %+v", st.Egress, st.Ingress)
	}
	var spoofed uint64
	for reason, n := range st.Egress.Drops {
		if reason != "agent_no_route" {
			spoofed += n
		}
	}
	if spoofed != 1 {
		t.Errorf("egress drops %v: want the spoofed frame counted once", st.Egress.Drops)
	}
	for _, c := range []struct {
		what      string
		got       map[string]uint64
		key       string
		want      uint64
		wrongSide map[string]uint64
	}{
		{"iface rx drop", st.Egress.Drops, "agent_no_route", 3, st.Ingress.Drops},
		{"iface tx drop", st.Ingress.Drops, "bridge_dropped", 5, st.Egress.Drops},
		{"uplink rx drop", st.Ingress.Drops, link.DropForeignSource, 2, st.Egress.Drops},
		{"iface kernel rx", st.Egress.KernelDrops, "tap_tx_dropped", 7, st.Ingress.KernelDrops},
		{"iface kernel tx", st.Ingress.KernelDrops, "tap_rx_dropped", 11, st.Egress.KernelDrops},
		{"uplink kernel rx", st.Ingress.KernelDrops, link.DropSocketRcvbuf, 13, st.Egress.KernelDrops},
		{"event", st.Links, "bridge_accepted", 1, nil},
	} {
		if c.got[c.key] != c.want {
			t.Errorf("%s: %s = %d, want %d (stats %+v)", c.what, c.key, c.got[c.key], c.want, st)
		}
		if _, ok := c.wrongSide[c.key]; ok {
			t.Errorf("%s: %s also counted in the other direction", c.what, c.key)
		}
	}
	if st.KernelError != "" {
		t.Errorf("kernel error %q", st.KernelError)
	}
	// gvpn.vpn is the JSON of Stats: the links' events travel too.
	b, err := json.Marshal(st)
	if err != nil || !bytes.Contains(b, []byte(`"links":{"bridge_accepted":1}`)) {
		t.Errorf("gvpn.vpn %s (%v)", b, err)
	}

	v.uplink.kernelFailed = errors.New("socket gone")
	if st := v.mgr.Stats(); st.KernelError != "socket gone" || st.Egress.KernelDrops["tap_tx_dropped"] != 7 {
		t.Errorf("with one link's kernel counters failing: %+v", st)
	}

	if err := v.mgr.Close(); err != nil {
		t.Fatal(err)
	}
	v.mgr.Close()
	if v.ep.closes == 0 {
		t.Error("endpoint not closed")
	}
}

// TestFakeManagerRefusals: what the ExeUnit gets when either side fails,
// and that nothing is left open then.
func TestFakeManagerRefusals(t *testing.T) {
	t.Run("bad hosts", func(t *testing.T) {
		v := newFakeVPN(t)
		_, err := v.mgr.Create(context.Background(), vpnRequest("10.0.0.0", "255.255.255.0", "", "10.0.0.2", map[string]string{"bad name!": "10.0.0.3"}))
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.Response_BAD_REQUEST || ae.Field != "hosts" {
			t.Fatalf("err %v, want BAD_REQUEST on hosts", err)
		}
		if v.ep.closes != 1 {
			t.Errorf("endpoint closed %d times, want 1", v.ep.closes)
		}
		if st := v.mgr.Stats(); st.Up {
			t.Errorf("stats %+v after a refusal", st)
		}
	})
	t.Run("attach fails", func(t *testing.T) {
		v := newFakeVPN(t)
		v.att.err = errors.New("no TAP for you")
		_, err := v.mgr.Create(context.Background(), vpnRequest("10.0.0.0", "255.255.255.0", "", "10.0.0.2", nil))
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.Response_INTERNAL {
			t.Fatalf("err %v, want INTERNAL", err)
		}
	})
	t.Run("twice", func(t *testing.T) {
		v := newFakeVPN(t)
		req := vpnRequest("10.0.0.0", "255.255.255.0", "", "10.0.0.2", nil)
		if _, err := v.mgr.Create(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		var ae *api.Error
		if _, err := v.mgr.Create(context.Background(), req); !errors.As(err, &ae) || ae.Code != api.Response_BAD_REQUEST {
			t.Fatalf("second create: %v, want BAD_REQUEST", err)
		}
	})
}
