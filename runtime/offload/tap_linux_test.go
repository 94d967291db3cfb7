package offload_test

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/netcfg/nsthread"
	"github.com/gvpn/gvpn/runtime/frame"
	"github.com/gvpn/gvpn/runtime/offload"
	"github.com/gvpn/gvpn/runtime/pump"
	"github.com/gvpn/gvpn/tap"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// node is one end of the test VPN: a namespace with an offload TAP.
type node struct {
	ns   netns.NsHandle
	tap  *tap.TAP
	link *offload.Link
	ip   netip.Addr
}

func newNode(t *testing.T, name, ip string) *node {
	t.Helper()
	name = fmt.Sprintf("gvpn13-%s-%d", name, os.Getpid())
	ns, err := nsthread.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close(); nsthread.DeleteNamed(name) })
	dev, err := tap.Create(ns, tap.Config{Offload: true})
	if err != nil {
		t.Fatal(err)
	}
	if !dev.VNetHdr() {
		dev.Close()
		t.Skipf("the kernel refused the virtio-net header: %s", dev.Offloads())
	}
	t.Logf("%s: offloads %s", name, dev.Offloads())
	n, err := netcfg.ParseNetwork("192.168.13.0", "255.255.255.0", "", ip)
	if err != nil {
		t.Fatal(err)
	}
	if err := netcfg.Apply(ns, netcfg.LinkConfig{Name: dev.Name(), Net: n, MTU: 1220}); err != nil {
		dev.Close()
		t.Fatal(err)
	}
	return &node{ns: ns, tap: dev, link: offload.NewLink(dev), ip: n.IfAddr}
}

// TestTCPThroughOffloadTAPs joins two offload TAPs with the pump, its
// anti-spoofing filter on the way out of A, and moves 64 MiB each way over
// the kernel's TCP: the bytes arrive intact, the filter passed every
// segment (none over the MTU), and superframes were cut and glued.
func TestTCPThroughOffloadTAPs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and TAP devices")
	}
	a, b := newNode(t, "offa", "192.168.13.2"), newNode(t, "offb", "192.168.13.3")
	p := pump.Start(pump.Config{
		Iface:   a.link,
		Uplink:  b.link,
		Egress:  &pump.EgressFilter{MAC: frame.MAC(netcfg.MAC(a.ip)), IP: a.ip, MaxFrame: 1234},
		Ingress: &pump.EgressFilter{MAC: frame.MAC(netcfg.MAC(b.ip)), IP: b.ip, MaxFrame: 1234},
	})
	defer p.Close()

	const size = 64 << 20
	for _, dir := range []struct{ from, to *node }{{a, b}, {b, a}} {
		var ln net.Listener
		if err := nsthread.Do(dir.to.ns, func() (err error) {
			ln, err = net.Listen("tcp4", dir.to.ip.String()+":5213")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		got := make(chan [32]byte, 1)
		go func() {
			defer ln.Close()
			c, err := ln.Accept()
			if err != nil {
				got <- [32]byte{}
				return
			}
			defer c.Close()
			h := sha256.New()
			io.Copy(h, c)
			got <- [32]byte(h.Sum(nil))
		}()
		var c net.Conn
		if err := nsthread.Do(dir.from.ns, func() (err error) {
			c, err = net.DialTimeout("tcp4", dir.to.ip.String()+":5213", 20*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(c, h), io.LimitReader(rand.Reader, size)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		select {
		case sum := <-got:
			if sum != [32]byte(h.Sum(nil)) {
				t.Fatal("the bytes that arrived differ from the bytes sent")
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("transfer did not finish")
		}
	}
	st := p.Stats()
	if st.Egress.Dropped() != 0 || st.Ingress.Dropped() != 0 {
		t.Fatalf("drops: egress %v ingress %v", st.Egress.DropMap(), st.Ingress.DropMap())
	}
	if min := uint64(size / 1166); st.Egress.Frames < min || st.Ingress.Frames < min {
		t.Fatalf("frames %d / %d: fewer than the %d MTU-sized segments 64 MiB needs", st.Egress.Frames, st.Ingress.Frames, min)
	}
	for _, n := range []*node{a, b} {
		s := n.link.Stats()
		t.Logf("%s: %+v", n.tap.Name(), s)
		if s.SplitSuperframes == 0 || s.CoalescedSuperframes == 0 {
			t.Errorf("no superframes cut or glued: %+v", s)
		}
		if s.Malformed != 0 {
			t.Errorf("malformed superframes from the kernel: %+v", s)
		}
	}
}
