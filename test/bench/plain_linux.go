package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/netcfg/nsthread"
	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
)

// The plain-receiver measurement: how many frames per second the runtime
// delivers to a receiver that reads one datagram per syscall — what the real
// ExeUnit is — beside how many that receiver can take at all when fed by the
// cheapest sender the kernel has (UDP GSO, 52 datagrams per sendmsg). If the
// runtime reaches most of that ceiling, it is not what limits a provider.
//
// The payload's traffic for it comes from a UDP GSO sender inside node A's
// sandbox namespace, aimed at a VPN address with a static neighbour entry:
// the TAP hands the runtime UDP superframes (USO) or, where the kernel cannot,
// single frames; the runtime segments, filters and sends them to the
// receiver, which took over the hub's socket for node A.

// With two CPUs or more, both measurements give the receiver a CPU of its
// own (receiverCPU) and put everything that sends on another (senderCPU):
// the question is whether the sending side keeps up with one busy
// receiver, not how the scheduler shares two CPUs among the ceiling's two
// busy threads and the runtime path's three (payload, runtime, receiver).
// A provider's ExeUnit does not share one CPU with the payload's traffic.
const (
	senderCPU   = 0
	receiverCPU = 1
)

// plainRate is the result.
type plainRate struct {
	Seconds        float64
	CeilingFPS     float64 // UDP GSO sender → plain receiver
	RuntimeFPS     float64 // payload → TAP → runtime → plain receiver
	SenderSegments int     // datagrams per sendmsg of both senders
}

// plainMeasurer is implemented by testbeds that can take the measurement.
type plainMeasurer interface {
	PlainRate(ctx context.Context, d time.Duration) (plainRate, error)
}

const (
	plainFrame    = mtu + 14 // one VPN frame
	plainPayload  = mtu - 28 // its UDP payload
	plainSegments = 52       // as many as fit 64 KiB
	plainSink     = "192.168.0.77"
)

// errNotMeasured is how a testbed says it does not take a measurement.
var errNotMeasured = errors.New("not measured on this testbed")

// plainReceiver reads one datagram per recvfrom and counts them.
type plainReceiver struct {
	conn  *net.UDPConn
	count atomic.Uint64
	wg    sync.WaitGroup
}

func newPlainReceiver(addr netip.AddrPort, pin bool) (*plainReceiver, error) {
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, err
	}
	// The ExeUnit's own receive buffer.
	conn.SetReadBuffer(2 << 20)
	r := &plainReceiver{conn: conn}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if pin {
			lockToCPU(receiverCPU)
		}
		buf := make([]byte, 1<<16)
		for {
			if _, err := conn.Read(buf); err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			r.count.Add(1)
		}
	}()
	return r, nil
}

func (r *plainReceiver) Close() {
	r.conn.Close()
	r.wg.Wait()
}

// rate counts what r receives over d while send runs, after a short warm-up.
// With pin, send runs on senderCPU; with yield, at the lowest priority, so
// that it only uses CPU time the runtime leaves. Sending and yielding run on
// a thread of their own, ended with send.
func (r *plainReceiver) rate(ctx context.Context, d time.Duration, pin, yield bool, send func(stop <-chan struct{})) (float64, error) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if pin {
			lockToCPU(senderCPU)
		}
		if yield {
			goruntime.LockOSThread() // for good: the thread ends with send
			// The payload floods: a TAP drops what does not fit its
			// queue only after the send has done all its work, so at
			// equal priority a flood takes the CPU from the runtime
			// that must carry it. At nice 19 it sends with the CPU time
			// the runtime leaves.
			unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19)
		}
		send(stop)
	}()
	defer func() { close(stop); wg.Wait() }()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(500 * time.Millisecond):
	}
	c0, t0 := r.count.Load(), time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	return float64(r.count.Load()-c0) / time.Since(t0).Seconds(), nil
}

// gsoSend sends plainSegments datagrams of plainPayload bytes per sendmsg
// from conn to dst until stop is closed.
func gsoSend(conn *net.UDPConn, dst netip.AddrPort, stop <-chan struct{}) {
	msg := make([]byte, plainSegments*plainPayload)
	for i := range msg {
		msg[i] = byte(i)
	}
	oob := make([]byte, link.UDPSegmentSpace)
	link.PutUDPSegment(oob, plainPayload)
	to := net.UDPAddrFromAddrPort(dst)
	for {
		select {
		case <-stop:
			return
		default:
		}
		if _, _, err := conn.WriteMsgUDP(msg, oob, to); err != nil {
			time.Sleep(100 * time.Microsecond) // a full queue: UDP may drop
		}
	}
}

// PlainRate implements plainMeasurer. It is the last measurement of the
// scenario: node A leaves the hub, whose socket address the receiver takes.
func (b *gvpnBed) PlainRate(ctx context.Context, d time.Duration) (plainRate, error) {
	pin := goruntime.NumCPU() > receiverCPU
	res := plainRate{Seconds: d.Seconds(), SenderSegments: plainSegments}
	if b.agent {
		return res, errNotMeasured // the same runtime egress as the netns path
	}

	// The ceiling: the cheapest sender into the receiver, on loopback.
	recv, err := newPlainReceiver(netip.MustParseAddrPort("127.0.0.1:0"), pin)
	if err != nil {
		return res, err
	}
	src, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		recv.Close()
		return res, err
	}
	dst := recv.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	res.CeilingFPS, err = recv.rate(ctx, d, pin, false, func(stop <-chan struct{}) { gsoSend(src, dst, stop) })
	src.Close()
	recv.Close()
	if err != nil {
		return res, err
	}

	// The runtime: its data endpoint keeps sending to node A's hub socket,
	// which the receiver now owns.
	a := b.nodes[nodeA]
	addr := a.hn.Addr()
	b.hub.RemoveNode(a.name)
	if recv, err = newPlainReceiver(addr, pin); err != nil {
		return res, fmt.Errorf("plain receiver on %s: %w", addr, err)
	}
	defer recv.Close()
	ns, err := vnetns.GetFromPath(filepath.Join(nsthread.RunDir, netns.NameFor(namePrefix, a.cfg.Workdir)))
	if err != nil {
		return res, fmt.Errorf("node A's sandbox namespace: %w", err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return res, err
	}
	defer h.Close()
	l, err := h.LinkByName(b.LinkName())
	if err != nil {
		return res, err
	}
	sinkMAC := net.HardwareAddr{0x90, 0x13, 192, 168, 0, 77}
	if err := h.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP(plainSink), HardwareAddr: sinkMAC}); err != nil {
		return res, fmt.Errorf("neighbour %s: %w", plainSink, err)
	}
	var payload *net.UDPConn
	if err := nsthread.Do(ns, func() (err error) {
		payload, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(a.ip)})
		return err
	}); err != nil {
		return res, fmt.Errorf("sender in node A's namespace: %w", err)
	}
	defer payload.Close()
	if pin {
		restore, err := pinProcess(a.eu.Pid(), senderCPU)
		if err != nil {
			return res, fmt.Errorf("runtime A on CPU %d: %w", senderCPU, err)
		}
		defer restore()
	}
	res.RuntimeFPS, err = recv.rate(ctx, d, pin, true, func(stop <-chan struct{}) {
		gsoSend(payload, netip.AddrPortFrom(netip.MustParseAddr(plainSink), 9), stop)
	})
	return res, err
}

// lockToCPU binds the calling goroutine's thread to cpu for good: the
// goroutine must end without unlocking, so that the Go runtime ends the
// thread instead of handing its affinity to other goroutines.
func lockToCPU(cpu int) {
	goruntime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	unix.SchedSetaffinity(0, &set) // best effort: unpinned, the numbers are only less fair
}

// pinProcess binds every thread of pid to cpu (threads it starts later
// inherit it from their creator) and returns what gives them back the
// process's affinity from before.
func pinProcess(pid, cpu int) (restore func(), err error) {
	var one, before unix.CPUSet
	one.Set(cpu)
	if err := unix.SchedGetaffinity(pid, &before); err != nil {
		return nil, err
	}
	setAll := func(set *unix.CPUSet) error {
		tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return err
		}
		for _, t := range tids {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("thread %d: %w", tid, err)
			}
		}
		return nil
	}
	if err := setAll(&one); err != nil {
		setAll(&before)
		return nil, err
	}
	return func() { setAll(&before) }, nil
}
