package integration

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/test/privtest"
)

func serialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// TestBadFramesAreDroppedCountedAndHarmless feeds a runtime garbage from
// the network side and makes its payload send as someone else: every bad
// frame is dropped and counted by reason, and the VPN keeps working.
func TestBadFramesAreDroppedCountedAndHarmless(t *testing.T) {
	// The payload plays an attacker with root in its own VM: it changes
	// its interface's MAC, which needs CAP_NET_ADMIN, so
	// this test alone runs payloads as root.
	_, nodes := twoNodes(t, "--payload-root")
	a, b := nodes[0], nodes[1]
	ctx := privtest.Context(t, 60*time.Second)
	a.run(t, ctx, "/bin/ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.0.3")

	peerMAC := net.HardwareAddr{0x90, 0x13, 192, 168, 0, 3}
	ownMAC := net.HardwareAddr{0x90, 0x13, 192, 168, 0, 2}
	eth := func(t layers.EthernetType) *layers.Ethernet {
		return &layers.Ethernet{SrcMAC: peerMAC, DstMAC: ownMAC, EthernetType: t}
	}
	ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.IP{192, 168, 0, 3}, DstIP: net.IP{192, 168, 0, 2}}
	udp := &layers.UDP{SrcPort: 1, DstPort: 9}
	udp.SetNetworkLayerForChecksum(ip4)
	good := serialize(t, eth(layers.EthernetTypeIPv4), ip4, udp, gopacket.Payload([]byte("x")))
	oversize := serialize(t, eth(layers.EthernetTypeIPv4), ip4, udp, gopacket.Payload(make([]byte, 1400)))
	ip6 := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolNoNextHeader,
		SrcIP: net.ParseIP("fe80::1"), DstIP: net.ParseIP("ff02::1")}
	ipv6 := serialize(t, eth(layers.EthernetTypeIPv6), ip6)
	lldp := serialize(t, eth(layers.EthernetType(0x88cc)), gopacket.Payload(make([]byte, 40)))

	injected := map[string][]byte{
		"empty datagram": {},
		"garbage":        {0xde, 0xad, 0xbe, 0xef, 0x01},
		"truncated IPv4": good[:14+12],
		"oversize":       oversize,
		"IPv6":           ipv6,
		"LLDP":           lldp,
	}
	for name, f := range injected {
		if err := a.hub.Inject(f); err != nil {
			t.Fatalf("inject %s: %v", name, err)
		}
	}
	// The payload speaks with another MAC: ExeUnits would learn wrong
	// routes from it. (Another IPv4 source is every kind's contract, in
	// test/contract.)
	a.run(t, ctx, "/sbin/ip", "link", "set", "vpn0", "address", "02:00:00:00:00:01")
	a.eu.Run(ctx, "/bin/ping", "-c", "2", "-i", "0.2", "-W", "1", "192.168.0.3")
	a.run(t, ctx, "/sbin/ip", "link", "set", "vpn0", "address", "90:13:c0:a8:00:02")

	st := a.waitStats(t, "every drop reason", func(s api.VPNStats) bool {
		in, out := s.Ingress.Drops, s.Egress.Drops
		return in["short"] >= 2 && in["malformed"] >= 1 && in["oversize"] >= 1 && in["ipv6"] >= 1 &&
			in["ethertype"] >= 1 && out["spoofed_mac"] >= 1
	})
	t.Logf("node-a drops: ingress %v egress %v", st.Ingress.Drops, st.Egress.Drops)
	if !st.Up {
		t.Fatal("the pump stopped on bad input")
	}
	// And the VPN still works both ways.
	a.run(t, ctx, "/bin/ping", "-c", "3", "-i", "0.2", "-W", "2", "192.168.0.3")
	b.run(t, ctx, "/bin/ping", "-c", "3", "-i", "0.2", "-W", "2", "node-a")
	// Node B never saw any of it.
	if d := b.stats(t).Ingress.Drops; d["spoofed_ip"]+d["spoofed_mac"] != 0 {
		t.Fatalf("node-b ingress drops %v", d)
	}
}
