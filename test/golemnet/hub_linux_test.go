//go:build linux

package golemnet

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/test/privtest"
)

// guard bounds every wait in these tests; it only catches deadlocks.
const guard = 20 * time.Second

type datagram struct {
	data []byte
	from netip.AddrPort
}

// fakeRuntime is a plain UDP socket playing a node's runtime: what it sends
// goes to the node's ExeUnit socket; what it receives is queued on frames.
type fakeRuntime struct {
	node     *Node
	conn     *net.UDPConn
	frames   chan datagram
	received atomic.Int64
	wg       sync.WaitGroup
}

func newRuntime(t testing.TB, n *Node) *fakeRuntime {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	setBigBuffers(t, conn)
	rt := &fakeRuntime{node: n, conn: conn, frames: make(chan datagram, 20000)}
	if err := n.SetRuntimeEndpoint(conn.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		buf := make([]byte, 1<<16)
		for {
			size, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			rt.received.Add(1)
			rt.frames <- datagram{data: bytes.Clone(buf[:size]), from: from}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		rt.wg.Wait()
	})
	return rt
}

// setBigBuffers gives a test socket room for bursts: the test's receivers
// are not under test, the hub is.
func setBigBuffers(t testing.TB, conn *net.UDPConn) {
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	forced := false
	if os.Geteuid() == 0 {
		rc.Control(func(fd uintptr) {
			forced = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20) == nil &&
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 16<<20) == nil
		})
	}
	if !forced {
		conn.SetReadBuffer(16 << 20)
		conn.SetWriteBuffer(16 << 20)
	}
}

func (rt *fakeRuntime) send(t testing.TB, frame []byte) {
	t.Helper()
	if _, err := rt.conn.WriteToUDPAddrPort(frame, rt.node.Addr()); err != nil {
		t.Fatal(err)
	}
}

func (rt *fakeRuntime) next(t testing.TB) datagram {
	t.Helper()
	select {
	case d := <-rt.frames:
		return d
	case <-time.After(guard):
		t.Fatalf("runtime of %s: no frame within %v", rt.node.Name(), guard)
		return datagram{}
	}
}

// lab is a started hub with nodes a, b, c (10.0.0.1-3) and their runtimes.
type lab struct {
	hub   *Hub
	nodes []*Node
	rts   []*fakeRuntime
}

func newLab(t testing.TB, withRuntime ...bool) *lab {
	t.Helper()
	return newLabGSO(t, true, withRuntime...)
}

func newLabGSO(t testing.TB, gso bool, withRuntime ...bool) *lab {
	t.Helper()
	h := NewHub(privtest.Log(t))
	h.noGSO = !gso
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	l := &lab{hub: h}
	for i, ip := range []netip.Addr{ipA, ipB, ipC} {
		n, err := h.AddNode(string(rune('a'+i)), ip)
		if err != nil {
			t.Fatal(err)
		}
		l.nodes = append(l.nodes, n)
		var rt *fakeRuntime
		if i >= len(withRuntime) || withRuntime[i] {
			rt = newRuntime(t, n)
		}
		l.rts = append(l.rts, rt)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *lab) stats(name string) NodeStats {
	for _, s := range l.hub.Stats() {
		if s.Name == name {
			return s
		}
	}
	return NodeStats{}
}

// sync sends a marker from node from to every other node with a runtime and
// returns, per node, the frames that arrived before the marker. Frame order
// per (source, destination) makes this exact: anything from sent earlier has
// arrived (or was dropped) once the marker is in.
func (l *lab) sync(t testing.TB, from int, id uint16) [][]datagram {
	t.Helper()
	got := make([][]datagram, len(l.nodes))
	for j, n := range l.nodes {
		if j == from || l.rts[j] == nil {
			continue
		}
		l.rts[from].send(t, icmpEcho(t, l.nodes[from].IP(), n.IP(), id, []byte("marker")))
	}
	for j, n := range l.nodes {
		if j == from || l.rts[j] == nil {
			continue
		}
		marker := icmpEcho(t, l.nodes[from].IP(), n.IP(), id, []byte("marker"))
		for {
			d := l.rts[j].next(t)
			if bytes.Equal(d.data, marker) {
				break
			}
			got[j] = append(got[j], d)
		}
	}
	return got
}

func dropDiff(before, after NodeStats) map[string]uint64 {
	m := map[string]uint64{}
	for r := range after.Drops {
		if d := after.Drops[r] - before.Drops[r]; d != 0 {
			m[DropReason(r).String()] = d
		}
	}
	return m
}

func TestHubRoutesLikeExeUnit(t *testing.T) {
	l := newLab(t)
	for id, tc := range routeCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			from := int(tc.from)
			before := l.stats(l.nodes[from].Name())
			l.rts[from].send(t, tc.frame)
			got := l.sync(t, from, uint16(id))

			for j, n := range l.nodes {
				want := 0
				switch {
				case j == from:
				case tc.act == actBroadcast, tc.act == actUnicast && int(tc.to) == j:
					want = 1
				}
				if len(got[j]) != want {
					t.Errorf("node %s got %d frames, want %d", n.Name(), len(got[j]), want)
					continue
				}
				for _, d := range got[j] {
					if !bytes.Equal(d.data, tc.frame) {
						t.Errorf("node %s got a changed frame:\n got %x\nwant %x", n.Name(), d.data, tc.frame)
					}
					if d.from != n.Addr() {
						t.Errorf("node %s got the frame from %v, want its ExeUnit socket %v", n.Name(), d.from, n.Addr())
					}
				}
			}
			diff := dropDiff(before, l.stats(l.nodes[from].Name()))
			want := map[string]uint64{}
			if tc.act == actDrop {
				want[tc.drop.String()] = 1
			}
			if fmt.Sprint(diff) != fmt.Sprint(want) {
				t.Errorf("drops %v, want %v", diff, want)
			}
		})
	}
	if t.Failed() {
		return
	}
	// Nothing is left over anywhere.
	for j, rt := range l.rts {
		if n := len(rt.frames); n != 0 {
			t.Errorf("node %s has %d unexpected frames", l.nodes[j].Name(), n)
		}
	}
	a := l.stats("a")
	if a.RxFrames == 0 || a.RxBytes == 0 || l.stats("b").TxFrames == 0 {
		t.Errorf("counters not moving: %+v", a)
	}
}

func TestHubEmptyDatagram(t *testing.T) {
	l := newLab(t)
	before := l.stats("a")
	l.rts[0].send(t, nil)
	l.rts[0].send(t, []byte{1, 2, 3})
	l.sync(t, 0, 1)
	diff := dropDiff(before, l.stats("a"))
	if diff["short"] != 2 || diff["empty"] != 1 || len(diff) != 2 {
		t.Fatalf("drops %v, want short:2 empty:1", diff)
	}
	if !l.hub.emptyWarned.Load() {
		t.Fatalf("no warning for the empty datagram")
	}
}

func TestHubNoEndpoint(t *testing.T) {
	l := newLab(t, true, true, false)
	frame := icmpEcho(t, ipA, ipC, 1, nil)
	l.rts[0].send(t, frame)
	l.rts[0].send(t, udpFrame(t, broadcastMAC, ipA, netip.MustParseAddr("255.255.255.255"), 1, 200))
	got := l.sync(t, 0, 1)
	if len(got[1]) != 1 { // the broadcast still reaches b
		t.Fatalf("b got %d frames, want the broadcast", len(got[1]))
	}
	if d := dropDiff(NodeStats{}, l.stats("a")); d["no_endpoint"] != 2 {
		t.Fatalf("drops %v, want no_endpoint:2", d)
	}

	l.rts[2] = newRuntime(t, l.nodes[2])
	l.rts[0].send(t, frame)
	if d := l.rts[2].next(t); !bytes.Equal(d.data, frame) {
		t.Fatalf("c got %x", d.data)
	}
}

func TestHubLearning(t *testing.T) {
	l := newLab(t)
	d, err := l.hub.AddNode("d", netip.Addr{}) // address unknown: learnt from traffic
	if err != nil {
		t.Fatal(err)
	}
	rd := newRuntime(t, d)

	// Unrouted frames teach nothing: the peer ExeUnit never sees them.
	rd.send(t, arpRequest(t, ipD, ipNobody))
	// d asks for a; the frame reaches a and d now owns 10.0.0.4.
	arp := arpRequest(t, ipD, ipA)
	rd.send(t, arp)
	if got := l.rts[0].next(t); !bytes.Equal(got.data, arp) {
		t.Fatalf("a got %x", got.data)
	}
	reply := icmpEcho(t, ipA, ipD, 1, []byte("hello d"))
	l.rts[0].send(t, reply)
	if got := rd.next(t); !bytes.Equal(got.data, reply) {
		t.Fatalf("d got %x", got.data)
	}
	s := l.stats("d")
	if len(s.IPs) != 1 || s.IPs[0] != ipD {
		t.Fatalf("d owns %v, want [%v]", s.IPs, ipD)
	}
	if d := dropDiff(NodeStats{}, s); d["no_route"] != 1 {
		t.Fatalf("d drops %v, want no_route:1", d)
	}

	// b forges a's (pre-registered) and d's (learnt) addresses: the frames
	// are routed, but neither address changes owner.
	l.rts[1].send(t, icmpEcho(t, ipA, ipC, 1, nil))
	l.rts[1].send(t, arpRequest(t, ipD, ipC))
	if n := len(l.sync(t, 1, 2)[2]); n != 2 {
		t.Fatalf("c got %d forged frames, want 2", n)
	}
	toA := icmpEcho(t, ipC, ipA, 3, nil)
	toD := icmpEcho(t, ipC, ipD, 4, nil)
	l.rts[2].send(t, toA)
	l.rts[2].send(t, toD)
	if got := l.rts[0].next(t); !bytes.Equal(got.data, toA) {
		t.Fatalf("a got %x", got.data)
	}
	if got := rd.next(t); !bytes.Equal(got.data, toD) {
		t.Fatalf("d got %x", got.data)
	}
	if got := l.sync(t, 2, 5); len(got[1]) != 0 {
		t.Fatalf("b got %d frames meant for a or d", len(got[1]))
	}
	if s := l.stats("b"); len(s.IPs) != 1 {
		t.Fatalf("b owns %v", s.IPs)
	}
}

func TestHubRemoveNode(t *testing.T) {
	l := newLab(t)
	l.hub.RemoveNode("b")
	l.rts[1] = nil              // no marker for b in l.sync
	l.hub.RemoveNode("b")       // no-op
	l.hub.RemoveNode("unknown") // no-op
	if l.hub.Node("b") != nil {
		t.Fatal("b still listed")
	}
	for _, s := range l.hub.Stats() {
		if s.Name == "b" {
			t.Fatal("b still in stats")
		}
	}
	l.rts[0].send(t, icmpEcho(t, ipA, ipB, 1, nil))
	l.rts[0].send(t, arpRequest(t, ipA, ipB))
	bcast := udpFrame(t, broadcastMAC, ipA, netip.MustParseAddr("255.255.255.255"), 1, 100)
	l.rts[0].send(t, bcast)
	if got := l.rts[2].next(t); !bytes.Equal(got.data, bcast) {
		t.Fatalf("c got %x", got.data)
	}
	l.sync(t, 0, 1) // also checks c only
	if d := dropDiff(NodeStats{}, l.stats("a")); d["no_route"] != 2 {
		t.Fatalf("drops %v, want no_route:2", d)
	}
	// b's address is free again.
	if _, err := l.hub.AddNode("b2", ipB); err != nil {
		t.Fatal(err)
	}
}

func TestHubAddNodeAfterStart(t *testing.T) {
	l := newLab(t)
	d, err := l.hub.AddNode("d", ipD)
	if err != nil {
		t.Fatal(err)
	}
	rd := newRuntime(t, d)
	f := icmpEcho(t, ipD, ipA, 1, nil)
	rd.send(t, f)
	if got := l.rts[0].next(t); !bytes.Equal(got.data, f) {
		t.Fatalf("a got %x", got.data)
	}
	if d.EndpointURL() != "udp://"+d.Addr().String() || !d.Addr().Addr().IsLoopback() {
		t.Fatalf("endpoint %q", d.EndpointURL())
	}
	if d.Name() != "d" || d.IP() != ipD || l.hub.Node("d") != d {
		t.Fatal("accessors")
	}
}

func TestHubAddNodeErrors(t *testing.T) {
	h := NewHub(nil)
	defer h.Close()
	if _, err := h.AddNode("a", ipA); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ip   netip.Addr
		want error
	}{
		{"a", ipB, ErrDuplicate},
		{"x", ipA, ErrDuplicate},
		{"x", netip.MustParseAddr("::1"), ErrBadAddr},
		{"x", netip.MustParseAddr("224.0.0.1"), ErrBadAddr},
		{"x", netip.MustParseAddr("255.255.255.255"), ErrBadAddr},
		{"x", netip.MustParseAddr("0.0.0.0"), ErrBadAddr},
		{"x", netip.MustParseAddr("127.0.0.1"), ErrBadAddr},
		{"", ipB, ErrBadAddr},
	} {
		if _, err := h.AddNode(tc.name, tc.ip); !errors.Is(err, tc.want) {
			t.Errorf("AddNode(%q, %v) = %v, want %v", tc.name, tc.ip, err, tc.want)
		}
	}
	if n, err := h.AddNode("mapped", netip.MustParseAddr("::ffff:10.0.0.7")); err != nil || n.IP() != netip.MustParseAddr("10.0.0.7") {
		t.Errorf("4in6 address: %v %v", n, err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.AddNode("y", netip.Addr{}); !errors.Is(err, ErrClosed) {
		t.Errorf("AddNode after Close = %v", err)
	}
}

func TestHubStartClose(t *testing.T) {
	h := NewHub(privtest.Log(t))
	if _, err := h.AddNode("a", ipA); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil { // never started
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v", err)
	}

	h = NewHub(privtest.Log(t))
	a, _ := h.AddNode("a", ipA)
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start = %v", err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { h.Close() })
	}
	wg.Wait()
	// The ExeUnit socket is closed: its port can be bound again.
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(a.Addr()))
	if err != nil {
		t.Fatalf("socket still open after Close: %v", err)
	}
	c.Close()
}

func TestSetRuntimeEndpoint(t *testing.T) {
	h := NewHub(nil)
	defer h.Close()
	n, _ := h.AddNode("a", ipA)
	if _, ok := n.RuntimeEndpoint(); ok {
		t.Fatal("endpoint set before SetRuntimeEndpoint")
	}
	for _, bad := range []string{"[::1]:5000", "127.0.0.1:0"} {
		if err := n.SetRuntimeEndpoint(netip.MustParseAddrPort(bad)); !errors.Is(err, ErrBadAddr) {
			t.Errorf("SetRuntimeEndpoint(%s) = %v", bad, err)
		}
	}
	if err := n.SetRuntimeEndpoint(netip.MustParseAddrPort("[::ffff:127.0.0.1]:5000")); err != nil {
		t.Fatal(err)
	}
	if ap, ok := n.RuntimeEndpoint(); !ok || ap != netip.MustParseAddrPort("127.0.0.1:5000") {
		t.Fatalf("endpoint %v", ap)
	}
	if s := h.Stats()[0]; s.Runtime != netip.MustParseAddrPort("127.0.0.1:5000") || s.Endpoint != n.Addr() || len(s.IPs) != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestFaultNormalized(t *testing.T) {
	h := NewHub(nil)
	defer h.Close()
	n, _ := h.AddNode("a", ipA)
	n.SetFault(Fault{Loss: 3, Latency: -time.Second})
	if f := n.Fault(); f != (Fault{Loss: 1}) {
		t.Fatalf("fault %+v", f)
	}
	n.SetFault(Fault{})
	if n.fault.Load() != nil {
		t.Fatal("zero fault not cleared")
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFaultCut(t *testing.T) {
	l := newLab(t)
	a, b := l.nodes[0], l.nodes[1]
	aToB := icmpEcho(t, ipA, ipB, 1, nil)
	bToA := icmpEcho(t, ipB, ipA, 1, nil)
	for _, cut := range []*Node{a, b} {
		cut.SetFault(Fault{Cut: true})
		l.rts[0].send(t, aToB)
		l.rts[1].send(t, bToA)
		waitFor(t, "cut drops", func() bool {
			return l.stats("a").Drops[DropCut] == 1 && l.stats("b").Drops[DropCut] == 1
		})
		cut.SetFault(Fault{})
		// After the cut is lifted, the first frames through are new ones.
		l.rts[0].send(t, icmpEcho(t, ipA, ipB, 2, nil))
		l.rts[1].send(t, icmpEcho(t, ipB, ipA, 2, nil))
		if got := l.rts[1].next(t); !bytes.Equal(got.data, icmpEcho(t, ipA, ipB, 2, nil)) {
			t.Fatalf("b got %x", got.data)
		}
		if got := l.rts[0].next(t); !bytes.Equal(got.data, icmpEcho(t, ipB, ipA, 2, nil)) {
			t.Fatalf("a got %x", got.data)
		}
		for _, n := range []string{"a", "b"} {
			if d := dropDiff(NodeStats{}, l.stats(n)); len(d) != 1 {
				t.Fatalf("%s drops %v, want cut only", n, d)
			}
		}
		l.nodes[0].drops[DropCut].Store(0)
		l.nodes[1].drops[DropCut].Store(0)
	}
	// c is not cut off by a's and b's trouble.
	a.SetFault(Fault{Cut: true})
	f := icmpEcho(t, ipB, ipC, 9, nil)
	l.rts[1].send(t, f)
	if got := l.rts[2].next(t); !bytes.Equal(got.data, f) {
		t.Fatalf("c got %x", got.data)
	}
}

func TestFaultLoss(t *testing.T) {
	l := newLab(t)
	const n = 200
	send := func(count int) {
		for i := range count {
			l.rts[0].send(t, udpFrame(t, payloadMAC(ipB), ipA, ipB, uint32(i), 200))
		}
	}
	l.nodes[1].SetFault(Fault{Loss: 1})
	send(n)
	waitFor(t, "losses", func() bool { return l.stats("a").Drops[DropLoss] == n })
	l.nodes[1].SetFault(Fault{})
	if got := l.sync(t, 0, 1)[1]; len(got) != 0 {
		t.Fatalf("b got %d frames with loss 1", len(got))
	}

	l.nodes[1].SetFault(Fault{Loss: 0})
	send(n)
	if got := l.sync(t, 0, 2)[1]; len(got) != n {
		t.Fatalf("b got %d frames with loss 0, want %d", len(got), n)
	}

	// Loss on both ends combines: 1-(1-0.5)(1-0.5) = 0.75. With 1000 frames,
	// fewer than 150 or more than 350 arriving is a ~1e-20 event.
	l.nodes[0].SetFault(Fault{Loss: 0.5})
	l.nodes[1].SetFault(Fault{Loss: 0.5})
	rx := l.stats("a").RxFrames
	send(1000)
	waitFor(t, "the hub to take all frames", func() bool { return l.stats("a").RxFrames == rx+1000 })
	l.nodes[0].SetFault(Fault{})
	l.nodes[1].SetFault(Fault{})
	got := l.sync(t, 0, 3)[1]
	if len(got) < 150 || len(got) > 350 {
		t.Fatalf("%d of 1000 frames arrived with loss 0.75", len(got))
	}
	if lost := l.stats("a").Drops[DropLoss]; lost != uint64(n+1000-len(got)) {
		t.Fatalf("loss counter %d, want %d", lost, n+1000-len(got))
	}
	assertInOrder(t, got)
}

func assertInOrder(t testing.TB, got []datagram) {
	t.Helper()
	last := int64(-1)
	for _, d := range got {
		seq, ok := udpSeq(d.data)
		if !ok {
			t.Fatalf("frame without sequence number: %x", d.data)
		}
		if int64(seq) <= last {
			t.Fatalf("frame %d after frame %d", seq, last)
		}
		last = int64(seq)
	}
}

// sendPaced sends count numbered frames from rt to dst's address, keeping
// at most window frames in flight (sent, and neither received by recv nor
// dropped by the hub), so that no socket overflows.
func sendPaced(t testing.TB, rt, recv *fakeRuntime, dstMAC net.HardwareAddr, src, dst netip.Addr, first, count, size, window int, before func(i int)) {
	t.Helper()
	frame := udpFrame(t, dstMAC, src, dst, 0, size)
	progress := func() int64 { return recv.received.Load() + int64(totalDrops(rt.node)) }
	start := progress()
	for i := range count {
		deadline := time.Now().Add(guard)
		for int64(i)-(progress()-start) >= int64(window) {
			if time.Now().After(deadline) {
				t.Fatalf("receiver stuck at %d of %d", progress()-start, i)
			}
			time.Sleep(50 * time.Microsecond)
		}
		if before != nil {
			before(i)
		}
		fixed := udpFrame(t, dstMAC, src, dst, uint32(first+i), size)
		copy(frame, fixed)
		rt.send(t, frame)
	}
}

// collect takes frames from rt until count arrived, or until nothing came
// for quiet (then whatever arrived is returned).
func collect(t testing.TB, rt *fakeRuntime, count int, quiet time.Duration) []datagram {
	t.Helper()
	var got []datagram
	for len(got) < count {
		select {
		case d := <-rt.frames:
			got = append(got, d)
		case <-time.After(quiet):
			return got
		}
	}
	return got
}

// totalDrops is the sum of n's drop counters.
func totalDrops(n *Node) int {
	var sum uint64
	for r := range n.drops {
		sum += n.drops[r].Load()
	}
	return int(sum)
}

func TestHubOrder(t *testing.T) {
	for _, gso := range []bool{true, false} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) { testOrder(t, gso) })
	}
}

func testOrder(t *testing.T, gso bool) {
	l := newLabGSO(t, gso)
	const n = 10000
	done := make(chan []datagram)
	go func() { done <- collect(t, l.rts[1], n, 2*time.Second) }()
	sendPaced(t, l.rts[0], l.rts[1], payloadMAC(ipB), ipA, ipB, 0, n, 1234, 256, nil)
	got := <-done
	assertInOrder(t, got)
	if len(got) < n*99/100 {
		t.Fatalf("%d of %d frames arrived", len(got), n)
	}
	for _, d := range got {
		if len(d.data) != 1234 {
			t.Fatalf("frame of %d bytes", len(d.data))
		}
	}
	t.Logf("%d of %d frames arrived, in order; hub drops %v", len(got), n, l.stats("a").DropMap())
}

func TestFaultLatency(t *testing.T) {
	l := newLab(t)
	const n = 1000
	const latB, latA = 30 * time.Millisecond, 20 * time.Millisecond
	l.nodes[1].SetFault(Fault{Latency: latB})
	l.nodes[0].SetFault(Fault{Latency: latA})
	sent := make([]time.Time, n)
	done := make(chan []datagram)
	arrived := make([]time.Time, 0, n)
	go func() {
		var got []datagram
		for len(got) < n {
			select {
			case d := <-l.rts[1].frames:
				arrived = append(arrived, time.Now())
				got = append(got, d)
			case <-time.After(2 * time.Second):
				done <- got
				return
			}
		}
		done <- got
	}()
	sendPaced(t, l.rts[0], l.rts[1], payloadMAC(ipB), ipA, ipB, 0, n, 1234, 2000, func(i int) { sent[i] = time.Now() })
	got := <-done
	assertInOrder(t, got)
	if len(got) < n*99/100 {
		t.Fatalf("%d of %d frames arrived", len(got), n)
	}
	for k, d := range got {
		seq, _ := udpSeq(d.data)
		if delay := arrived[k].Sub(sent[seq]); delay < latA+latB {
			t.Fatalf("frame %d arrived after %v, want ≥ %v", seq, delay, latA+latB)
		}
	}
	if s := l.stats("a"); s.Drops[DropQueueFull] != 0 {
		t.Fatalf("queue full: %v", s.DropMap())
	}
}

// TestFaultChurn changes faults at random while frames flow: no frame may
// overtake an earlier one (order per source and destination holds across
// fault changes, including latency being lifted with frames still queued).
func TestFaultChurn(t *testing.T) {
	l := newLab(t)
	const n = 5000
	faults := []Fault{{}, {Latency: time.Millisecond}, {Latency: 3 * time.Millisecond}, {Loss: 0.3}, {Cut: true}, {Latency: 500 * time.Microsecond, Loss: 0.1}}
	sendPaced(t, l.rts[0], l.rts[1], payloadMAC(ipB), ipA, ipB, 0, n, 600, 1000, func(i int) {
		if i%97 == 0 {
			l.nodes[(i/97)%2].SetFault(faults[(i/7)%len(faults)])
		}
		if i == n-100 { // let the tail through
			l.nodes[0].SetFault(Fault{})
			l.nodes[1].SetFault(Fault{})
		}
	})
	// Every frame is accounted for: received or dropped by the hub.
	waitFor(t, "all frames accounted for", func() bool {
		return int(l.rts[1].received.Load())+totalDrops(l.nodes[0]) == n
	})
	got := collect(t, l.rts[1], int(l.rts[1].received.Load()), guard)
	assertInOrder(t, got)
	if len(got) == 0 {
		t.Fatal("nothing arrived")
	}
	t.Logf("%d arrived, drops %v", len(got), l.stats("a").DropMap())
}

// TestHubForwardAllocs checks the whole no-fault path (recvmmsg, routing,
// sendmmsg) allocates nothing per frame.
func TestHubForwardAllocs(t *testing.T) {
	h := NewHub(nil)
	defer h.Close()
	a, _ := h.AddNode("a", ipA)
	b, _ := h.AddNode("b", ipB)
	src, dst := plainSocket(t), plainSocket(t)
	b.SetRuntimeEndpoint(dst.LocalAddr().(*net.UDPAddr).AddrPort())
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	frame := udpFrame(t, payloadMAC(ipB), ipA, ipB, 1, 1234)
	buf := make([]byte, 2048)
	to := a.Addr()
	roundTrip := func() {
		src.WriteToUDPAddrPort(frame, to)
		dst.SetReadDeadline(time.Now().Add(guard))
		if _, _, err := dst.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatal(err)
		}
	}
	roundTrip() // warm up
	if allocs := testing.AllocsPerRun(200, roundTrip); allocs > 0.1 {
		t.Fatalf("%.2f allocations per forwarded frame", allocs)
	}
}

func plainSocket(t testing.TB) *net.UDPConn {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	setBigBuffers(t, c)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestHubRemoveUnderTraffic removes a node while frames for it are in
// flight and queued, then closes the hub with traffic still coming: nothing
// may hang, panic or leak (goleak checks), and the lost frames are counted.
func TestHubRemoveUnderTraffic(t *testing.T) {
	l := newLab(t)
	l.nodes[1].SetFault(Fault{Latency: 5 * time.Millisecond})
	frame := udpFrame(t, payloadMAC(ipB), ipA, ipB, 1, 1234)
	bcast := udpFrame(t, broadcastMAC, ipA, netip.MustParseAddr("255.255.255.255"), 2, 300)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%10 == 0 {
				l.rts[0].conn.WriteToUDPAddrPort(bcast, l.nodes[0].Addr())
			}
			l.rts[0].conn.WriteToUDPAddrPort(frame, l.nodes[0].Addr())
			if i%64 == 0 {
				time.Sleep(100 * time.Microsecond)
			}
		}
	})
	waitFor(t, "frames queued for b", func() bool { return l.nodes[1].queue.pending.Load() > 0 })
	l.hub.RemoveNode("b")
	waitFor(t, "no_route drops", func() bool { return l.stats("a").Drops[DropNoRoute] > 0 })
	if err := l.hub.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	t.Logf("a: %+v", l.stats("a").DropMap())
}

// TestHubMixedSizes sends bursts of frames of varied sizes, so that batches
// mix runs of equal sizes (sent as one GSO message), shorter tails, big
// frames and single frames: each must arrive unchanged, once, in order.
func TestHubMixedSizes(t *testing.T) {
	for _, gso := range []bool{true, false} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) {
			l := newLabGSO(t, gso)
			if gso && !l.nodes[1].gso {
				t.Skip("kernel without UDP GSO")
			}
			pattern := []int{1234, 1234, 1234, 600, 1234, 100, 100, 100, 64, 9000, 9000, 1234, 60000, 60000, 60000, 42, 1234, 1234}
			var sent [][]byte
			for round := range 40 {
				for i, size := range pattern {
					seq := uint32(round*len(pattern) + i)
					sent = append(sent, udpFrame(t, payloadMAC(ipB), ipA, ipB, seq, size))
				}
				// A run longer than one GSO message allows.
				for i := range 70 {
					sent = append(sent, udpFrame(t, payloadMAC(ipB), ipA, ipB, uint32(100000+round*100+i), 1234))
				}
			}
			// Send in bursts small enough for the sockets, big enough to batch.
			for i, f := range sent {
				l.rts[0].send(t, f)
				if i%100 == 99 {
					waitFor(t, "burst", func() bool { return l.rts[1].received.Load() == int64(i+1) })
				}
			}
			got := collect(t, l.rts[1], len(sent), guard)
			if len(got) != len(sent) {
				t.Fatalf("%d of %d frames arrived", len(got), len(sent))
			}
			for i := range sent {
				if !bytes.Equal(got[i].data, sent[i]) {
					s, _ := udpSeq(sent[i])
					g, _ := udpSeq(got[i].data)
					t.Fatalf("frame %d: got seq %d (%d bytes), want seq %d (%d bytes)", i, g, len(got[i].data), s, len(sent[i]))
				}
			}
			if s := l.stats("b"); s.TxFrames != uint64(len(sent)) {
				t.Fatalf("b tx %d frames, want %d", s.TxFrames, len(sent))
			}
			if gsoMsgs := l.nodes[1].txGSO.Load(); gso != (gsoMsgs > 0) {
				t.Fatalf("%d GSO messages with gso=%v", gsoMsgs, gso)
			}
			t.Logf("%d frames, %d GSO messages", len(sent), l.nodes[1].txGSO.Load())
		})
	}
}

// TestHubGROFromGSOSender: a runtime that sends with UDP GSO (as gvpn's
// does) hands the hub glued messages, which it receives glued (UDP GRO) and
// cuts back into frames: each routed alone, unchanged, once, in order, and
// counted one by one.
func TestHubGROFromGSOSender(t *testing.T) {
	l := newLab(t)
	const seg, perMsg, msgs = 1234, 50, 20
	oob := make([]byte, link.UDPSegmentSpace)
	link.PutUDPSegment(oob, seg)
	var sent [][]byte
	for m := range msgs {
		var msg []byte
		for i := range perMsg {
			size := seg
			if i == perMsg-1 && m%2 == 1 {
				size = 200 // a shorter last segment
			}
			f := udpFrame(t, payloadMAC(ipB), ipA, ipB, uint32(m*perMsg+i), size)
			sent = append(sent, f)
			msg = append(msg, f...)
		}
		if _, _, err := l.rts[0].conn.WriteMsgUDPAddrPort(msg, oob, l.nodes[0].addr); err != nil {
			t.Skipf("UDP GSO send refused: %v", err)
		}
		waitFor(t, "message forwarded", func() bool { return l.rts[1].received.Load() == int64(len(sent)) })
	}
	got := collect(t, l.rts[1], len(sent), guard)
	for i := range sent {
		if !bytes.Equal(got[i].data, sent[i]) {
			t.Fatalf("frame %d differs or is out of order", i)
		}
	}
	if s := l.stats("a"); s.RxFrames != uint64(len(sent)) {
		t.Fatalf("a rx %d frames, want %d (one per datagram, not per message)", s.RxFrames, len(sent))
	}
	if l.nodes[0].rxGRO.Load() == 0 {
		t.Fatal("no message arrived glued: UDP GRO is off on the hub's socket")
	}
}
