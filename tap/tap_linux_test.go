package tap

import (
	"bytes"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/netcfg/nsthread"
	"github.com/gvpn/gvpn/test/privtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// guard is the deadlock guard for anything that waits on the kernel.
const guard = 10 * time.Second

// The buffer shape the runtime's frame links use (runtime/link.Headroom,
// MaxFrame): room in front of each frame, and room for any frame after it.
const (
	headroom = 16
	maxFrame = 65535
	bufSize  = headroom + maxFrame
)

var (
	peerMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	peerIP  = net.IPv4(10, 9, 0, 2).To4()
	tapIP   = net.IPv4(10, 9, 0, 1).To4()
)

// newNS returns a fresh test namespace and a netlink handle bound to it.
func newNS(t *testing.T) (netns.NsHandle, *netlink.Handle) {
	t.Helper()
	_, ns := privtest.NewNetns(t, "gvt-tn-")
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return ns, h
}

// create makes a TAP in ns and closes it at cleanup.
func create(t *testing.T, ns netns.NsHandle, cfg Config) *TAP {
	t.Helper()
	d, err := Create(ns, cfg)
	if err != nil {
		t.Fatalf("Create(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// configure gives the TAP 10.9.0.1/24, turns IPv6 off on it (no router
// solicitations to skip over) and brings it up. It returns the TAP's MAC.
func configure(t *testing.T, ns netns.NsHandle, h *netlink.Handle, name string) net.HardwareAddr {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("LinkByName(%s): %v", name, err)
	}
	inNS(t, ns, func() {
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("disable ipv6: %v", err)
		}
	})
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: tapIP, Mask: net.CIDRMask(24, 32)}}
	if err := h.AddrAdd(l, addr); err != nil {
		t.Fatalf("AddrAdd: %v", err)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatalf("LinkSetUp: %v", err)
	}
	return l.Attrs().HardwareAddr
}

// inNS runs fn on a locked thread inside ns.
func inNS(t *testing.T, ns netns.NsHandle, fn func()) {
	t.Helper()
	if err := nsthread.Do(ns, func() error { fn(); return nil }); err != nil {
		t.Fatal(err)
	}
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return buf.Bytes()
}

// echoRequest builds an ICMP echo request from the fake peer to the TAP.
func echoRequest(t testing.TB, dstMAC net.HardwareAddr, seq uint16, payload []byte) []byte {
	eth := &layers.Ethernet{SrcMAC: peerMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: peerIP, DstIP: tapIP}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 0x4747, Seq: seq}
	return serialize(t, eth, ip, icmp, gopacket.Payload(payload))
}

// arpReplyFor answers the kernel's ARP request for the fake peer.
func arpReplyFor(t testing.TB, req *layers.ARP) []byte {
	eth := &layers.Ethernet{SrcMAC: peerMAC, DstMAC: net.HardwareAddr(req.SourceHwAddress), EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPReply,
		SourceHwAddress: peerMAC, SourceProtAddress: peerIP,
		DstHwAddress: req.SourceHwAddress, DstProtAddress: req.SourceProtAddress,
	}
	return serialize(t, eth, arp)
}

// readGuarded calls d.Read, closing d if it does not return within guard so
// that a hang becomes a failure instead of a stuck test.
func readGuarded(t *testing.T, d Device, bufs [][]byte, sizes []int, offset int) (int, error) {
	t.Helper()
	timer := time.AfterFunc(guard, func() {
		t.Errorf("Read did not return within %v; closing the device", guard)
		d.Close()
	})
	defer timer.Stop()
	return d.Read(bufs, sizes, offset)
}

func makeBufs(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}

func writeOne(t testing.TB, d Device, frame []byte) {
	t.Helper()
	buf := make([]byte, headroom+len(frame))
	copy(buf[headroom:], frame)
	n, err := d.Write([][]byte{buf}, headroom)
	if err != nil || n != 1 {
		t.Fatalf("Write = %d, %v; want 1, nil", n, err)
	}
}

// pingKernel sends an echo request to the TAP's address and returns the
// kernel's echo reply, answering the kernel's ARP request on the way.
func pingKernel(t *testing.T, d Device, tapMAC net.HardwareAddr, seq uint16, payload []byte) []byte {
	t.Helper()
	writeOne(t, d, echoRequest(t, tapMAC, seq, payload))
	bufs, sizes := makeBufs(BatchSize, bufSize)
	for {
		n, err := readGuarded(t, d, bufs, sizes, headroom)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		for i := range n {
			frame := bufs[i][headroom : headroom+sizes[i]]
			p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
			if arp, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP); ok {
				if arp.Operation == layers.ARPRequest && bytes.Equal(arp.DstProtAddress, peerIP) {
					writeOne(t, d, arpReplyFor(t, arp))
				}
				continue
			}
			icmp, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if ok && icmp.TypeCode.Type() == layers.ICMPv4TypeEchoReply && icmp.Seq == seq {
				return append([]byte(nil), frame...)
			}
		}
	}
}

func TestCreateInNamespace(t *testing.T) {
	ns, h := newNS(t)
	d := create(t, ns, Config{})
	if d.Name() != DefaultName {
		t.Errorf("Name() = %q, want %q", d.Name(), DefaultName)
	}
	l, err := h.LinkByName(DefaultName)
	if err != nil {
		t.Fatalf("device not in the target namespace: %v", err)
	}
	tt, ok := l.(*netlink.Tuntap)
	if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP {
		t.Errorf("link is %T %+v, want a TAP", l, l)
	}
	if l.Attrs().Index != d.index {
		t.Errorf("index %d, netlink says %d", d.index, l.Attrs().Index)
	}
	mtu, err := d.MTU()
	if err != nil || mtu != l.Attrs().MTU {
		t.Errorf("MTU() = %d, %v; netlink says %d", mtu, err, l.Attrs().MTU)
	}
	if err := h.LinkSetMTU(l, 1220); err != nil {
		t.Fatal(err)
	}
	if mtu, err := d.MTU(); err != nil || mtu != 1220 {
		t.Errorf("MTU() after change = %d, %v; want 1220", mtu, err)
	}
	if d.BatchSize() != BatchSize {
		t.Errorf("BatchSize() = %d", d.BatchSize())
	}

	// The descriptor must not leak into processes the runtime starts.
	var flags int
	var ferr error
	if err := d.rawConn.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFD, 0) }); err != nil || ferr != nil {
		t.Fatal(err, ferr)
	}
	if flags&unix.FD_CLOEXEC == 0 {
		t.Error("TAP descriptor is not close-on-exec")
	}
}

func TestCreateCurrentNamespace(t *testing.T) {
	ns, h := newNS(t)
	name := privtest.UniqueName("gvt-t")
	var d *TAP
	var err error
	// netns.None() means the calling thread's namespace.
	inNS(t, ns, func() { d, err = Create(netns.None(), Config{Name: name}) })
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := h.LinkByName(name); err != nil {
		t.Errorf("device not created in the caller's namespace: %v", err)
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Errorf("device %s appeared in the test process's own namespace", name)
	}
	// MTU works from any thread: the TAP kept a handle on its namespace.
	if _, err := d.MTU(); err != nil {
		t.Errorf("MTU: %v", err)
	}
}

func TestCreateNamePattern(t *testing.T) {
	ns, h := newNS(t)
	d := create(t, ns, Config{Name: "gvt%d"})
	if d.Name() != "gvt0" {
		t.Errorf("Name() = %q, want gvt0", d.Name())
	}
	if _, err := h.LinkByName(d.Name()); err != nil {
		t.Error(err)
	}
}

func TestCreateExists(t *testing.T) {
	ns, h := newNS(t)
	create(t, ns, Config{Name: "vpn0"})
	before := privtest.OpenFDs(t)
	for range 3 {
		_, err := Create(ns, Config{Name: "vpn0"})
		if !errors.Is(err, ErrExists) {
			t.Fatalf("second Create = %v, want ErrExists", err)
		}
	}
	if after := privtest.OpenFDs(t); after != before {
		t.Errorf("open descriptors %d -> %d after failed Creates", before, after)
	}

	// A non-TAP interface of that name collides too.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0"}, PeerName: "veth1"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(ns, Config{Name: "veth0"}); !errors.Is(err, ErrExists) {
		t.Errorf("Create over a veth = %v, want ErrExists", err)
	}
	// The same name in another namespace is fine.
	ns2, _ := newNS(t)
	create(t, ns2, Config{Name: "vpn0"})
}

func TestCreateInvalidName(t *testing.T) {
	privtest.RequireRoot(t)
	for _, name := range []string{"a-name-too-long-1", "a/b", "a:b", "a b", ".", ".."} {
		if _, err := Create(netns.None(), Config{Name: name}); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Create(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	var bad netns.NsHandle = 1 << 20 // not an open descriptor
	if _, err := Create(bad, Config{}); err == nil {
		t.Error("Create with a bad namespace handle succeeded")
	}
}

func TestKernelFrames(t *testing.T) {
	ns, h := newNS(t)
	d := create(t, ns, Config{})
	tapMAC := configure(t, ns, h, d.Name())

	payload := []byte("gvpn tap test payload")
	frame := pingKernel(t, d, tapMAC, 1, payload)
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !bytes.Equal(eth.DstMAC, peerMAC) || !bytes.Equal(eth.SrcMAC, tapMAC) {
		t.Errorf("reply MACs %s -> %s", eth.SrcMAC, eth.DstMAC)
	}
	if !ip.SrcIP.Equal(tapIP) || !ip.DstIP.Equal(peerIP) {
		t.Errorf("reply IPs %s -> %s", ip.SrcIP, ip.DstIP)
	}
	if !bytes.Equal(p.ApplicationLayer().Payload(), payload) {
		t.Errorf("reply payload %q", p.ApplicationLayer().Payload())
	}
}

// TestReadBatch checks that one Read returns every reply the kernel has
// queued, not one frame per call.
func TestReadBatch(t *testing.T) {
	ns, h := newNS(t)
	d := create(t, ns, Config{})
	tapMAC := configure(t, ns, h, d.Name())
	pingKernel(t, d, tapMAC, 1, nil) // resolves the peer's MAC

	const burst = 8
	bufs, sizes := makeBufs(BatchSize, bufSize)
	maxBatch := 0
	for round := range 20 {
		frames := make([][]byte, burst)
		for i := range frames {
			frames[i] = append(make([]byte, headroom), echoRequest(t, tapMAC, uint16(100+round*burst+i), nil)...)
		}
		if n, err := d.Write(frames, headroom); err != nil || n != burst {
			t.Fatalf("Write = %d, %v", n, err)
		}
		// The kernel answers each request while the write is still in
		// progress, so all replies are queued now; collect them.
		for got := 0; got < burst; {
			n, err := readGuarded(t, d, bufs, sizes, headroom)
			if err != nil {
				t.Fatal(err)
			}
			maxBatch = max(maxBatch, n)
			for i := range n {
				p := gopacket.NewPacket(bufs[i][headroom:headroom+sizes[i]], layers.LayerTypeEthernet, gopacket.Default)
				if icmp, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
					if want := uint16(100 + round*burst + got); icmp.Seq != want {
						t.Fatalf("reply seq %d, want %d (order lost)", icmp.Seq, want)
					}
					got++
				}
			}
		}
		if maxBatch > 1 {
			break
		}
	}
	if maxBatch < 2 {
		t.Errorf("Read never returned more than %d frame(s) at once", maxBatch)
	}
	t.Logf("largest batch: %d", maxBatch)
}

// TestReadOversize: a frame longer than its buffer is reported with its real
// length and consumed.
func TestReadOversize(t *testing.T) {
	ns, h := newNS(t)
	d := create(t, ns, Config{})
	tapMAC := configure(t, ns, h, d.Name())
	pingKernel(t, d, tapMAC, 1, nil)

	payload := bytes.Repeat([]byte{0xab}, 1000)
	want := 14 + 20 + 8 + len(payload)
	for _, room := range []int{100, 0} {
		writeOne(t, d, echoRequest(t, tapMAC, 2, payload))
		bufs, sizes := makeBufs(1, headroom+room)
		n, err := readGuarded(t, d, bufs, sizes, headroom)
		if err != nil || n != 1 {
			t.Fatalf("Read = %d, %v", n, err)
		}
		if sizes[0] != want {
			t.Errorf("buffer room %d: size %d, want the real length %d", room, sizes[0], want)
		}
	}
	// The truncated frames were consumed: the next one arrives whole.
	frame := pingKernel(t, d, tapMAC, 3, payload)
	if len(frame) != want {
		t.Errorf("next frame %d bytes, want %d", len(frame), want)
	}
}

func TestWriteRules(t *testing.T) {
	ns, h := newNS(t)
	d := create(t, ns, Config{})
	tapMAC := configure(t, ns, h, d.Name())
	req := append(make([]byte, headroom), echoRequest(t, tapMAC, 1, nil)...)

	// Empty frames are skipped and count as written.
	if n, err := d.Write([][]byte{make([]byte, headroom), req}, headroom); err != nil || n != 2 {
		t.Errorf("Write(empty, frame) = %d, %v; want 2, nil", n, err)
	}
	// A runt frame is refused by the kernel; Write stops at it and the error
	// is a frame fault, not closure.
	runt := append(make([]byte, headroom), 1, 2, 3, 4, 5)
	n, err := d.Write([][]byte{req, runt, req}, headroom)
	if n != 1 || err == nil || errors.Is(err, net.ErrClosed) || !errors.Is(err, unix.EINVAL) {
		t.Errorf("Write(frame, runt, frame) = %d, %v; want 1 and EINVAL", n, err)
	}
	// A down interface refuses frames the same way.
	l, _ := h.LinkByName(d.Name())
	if err := h.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	n, err = d.Write([][]byte{req}, headroom)
	if n != 0 || err == nil || errors.Is(err, net.ErrClosed) {
		t.Errorf("Write on a down interface = %d, %v; want 0 and a frame error", n, err)
	}
	t.Logf("write while down: %v", err)
}

func TestCloseUnblocksRead(t *testing.T) {
	ns, h := newNS(t)
	d := create(t, ns, Config{})
	configure(t, ns, h, d.Name())

	done := make(chan error, 1)
	go func() {
		bufs, sizes := makeBufs(4, bufSize)
		_, err := d.Read(bufs, sizes, headroom)
		done <- err
	}()
	// Let the reader block in the netpoller. This sleep is not an
	// assertion: the test is valid whether or not the reader got there.
	time.Sleep(50 * time.Millisecond)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(guard):
		t.Fatal("Close did not unblock Read")
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := d.Write([][]byte{make([]byte, 64)}, 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v", err)
	}
	if _, err := d.Read([][]byte{make([]byte, 64)}, []int{0}, 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close = %v", err)
	}
	if _, err := d.MTU(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("MTU after Close = %v", err)
	}
	var nf netlink.LinkNotFoundError
	if _, err := h.LinkByName(d.Name()); !errors.As(err, &nf) {
		t.Errorf("non-persistent device still present after Close (err=%v)", err)
	}
}

func TestPersist(t *testing.T) {
	ns, h := newNS(t)
	d, err := Create(ns, Config{Persist: true})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	l, err := h.LinkByName(DefaultName)
	if err != nil {
		t.Fatalf("persistent device gone after Close: %v", err)
	}
	// Exclusive creation: a leftover persistent device is not reused.
	if _, err := Create(ns, Config{}); !errors.Is(err, ErrExists) {
		t.Errorf("Create over a persistent leftover = %v, want ErrExists", err)
	}
	if err := h.LinkDel(l); err != nil {
		t.Fatalf("delete persistent device: %v", err)
	}
	create(t, ns, Config{})
}

// TestDeletedUnderneath: deleting the interface while it is open ends reads
// with net.ErrClosed.
func TestDeletedUnderneath(t *testing.T) {
	ns, h := newNS(t)
	d := create(t, ns, Config{})
	configure(t, ns, h, d.Name())
	done := make(chan error, 1)
	go func() {
		bufs, sizes := makeBufs(4, bufSize)
		for {
			if _, err := d.Read(bufs, sizes, headroom); err != nil {
				done <- err
				return
			}
		}
	}()
	l, _ := h.LinkByName(d.Name())
	if err := h.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after the interface was deleted = %v, want net.ErrClosed", err)
		}
	case <-time.After(guard):
		d.Close()
		<-done
		t.Fatal("Read did not return after the interface was deleted")
	}
	if _, err := d.Write([][]byte{make([]byte, 64)}, 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after the interface was deleted = %v", err)
	}
}

func TestBadArguments(t *testing.T) {
	ns, _ := newNS(t)
	d := create(t, ns, Config{})
	// Both fail before touching the descriptor, so Read does not wait.
	if n, err := d.Read([][]byte{make([]byte, 4)}, []int{0}, 8); err == nil || n != 0 || errors.Is(err, net.ErrClosed) {
		t.Errorf("Read with offset beyond buffer = %d, %v", n, err)
	}
	if n, err := d.Write([][]byte{make([]byte, 4)}, 8); err == nil || n != 0 {
		t.Errorf("Write with offset beyond buffer = %d, %v", n, err)
	}
	if _, err := d.Write(nil, -1); err == nil {
		t.Error("Write with negative offset succeeded")
	}
	if n, err := d.Read(nil, nil, 0); n != 0 || err != nil {
		t.Errorf("Read with no buffers = %d, %v", n, err)
	}
}

func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	ns, h := newNS(t)
	d := create(t, ns, Config{})
	tapMAC := configure(t, ns, h, d.Name())
	pingKernel(t, d, tapMAC, 1, nil)

	wbufs := [][]byte{append(make([]byte, headroom), echoRequest(t, tapMAC, 7, nil)...)}
	rbufs, sizes := makeBufs(BatchSize, bufSize)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := d.Write(wbufs, headroom); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Read(rbufs, sizes, headroom); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per Write+Read, want 0", allocs)
	}
}

func TestCheckName(t *testing.T) {
	for _, name := range []string{"vpn0", "a", "gvt-tn-1234567", "tap%d"} {
		if err := checkName(name); err != nil {
			t.Errorf("checkName(%q) = %v", name, err)
		}
	}
	for _, name := range []string{strings.Repeat("x", 16), "a/b", "a:b", "a\tb", "..", "a\x00"} {
		if err := checkName(name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("checkName(%q) = %v", name, err)
		}
	}
}
