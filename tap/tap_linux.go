package tap

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/netcfg/ifname"
	"github.com/gvpn/gvpn/netcfg/nsthread"
)

// cloneDevice is the TUN/TAP clone device; every open of it can become one
// new interface.
const cloneDevice = "/dev/net/tun"

// TAP is a Linux TAP device (IFF_TAP|IFF_NO_PI) created by Create. It
// implements Device.
type TAP struct {
	file    *os.File
	rawConn syscall.RawConn
	name    string
	index   int
	log     logrus.FieldLogger
	vnetHdr bool
	offload string

	closeOnce sync.Once
	closed    atomic.Bool
	closeErr  error

	// nsMu guards ns against Close while MTU uses it.
	nsMu sync.RWMutex
	ns   netns.NsHandle

	// rd and wr hold the state of the one Read and the one Write that may
	// run at a time. The callbacks handed to the RawConn are method values
	// made once in Create, so a call allocates nothing.
	rd readState
	wr writeState
}

type readState struct {
	fn     func(fd uintptr) bool
	bufs   [][]byte
	sizes  []int
	offset int
	n      int
	err    error
	iov    [2][]byte
	// overflow catches the tail of a frame longer than the caller's
	// buffer, so that its real length is known (the kernel's read count
	// stops at the buffers it was given).
	overflow []byte
}

// maxTAPFrame is the largest frame a TAP without IFF_VNET_HDR can deliver:
// the largest MTU (65535) plus an Ethernet header and a VLAN tag.
const maxTAPFrame = 65535 + 14 + 4

type writeState struct {
	fn     func(fd uintptr) bool
	bufs   [][]byte
	offset int
	n      int
	err    error
}

var _ Device = (*TAP)(nil)

// Create creates a TAP device (IFF_TAP|IFF_NO_PI) inside the network
// namespace ns and opens it. ns == netns.None() (any negative handle) means
// the namespace of the calling thread. The caller keeps ownership of ns; the
// TAP holds its own duplicate for MTU.
//
// The device is created exclusively: if an interface with that name exists
// in ns, Create fails with an error wrapping ErrExists. It is left down and
// unaddressed; configure it with netcfg.Apply.
//
// The descriptor is non-blocking (so Close unblocks Read) and close-on-exec
// (so payload processes started later never inherit raw access to the VPN).
//
// The TAP is opened directly rather than through github.com/songgao/water
// because water's open leaks the descriptor when TUNSETIFF fails (for
// example on a name collision), does not set close-on-exec, and cannot ask
// for exclusive creation; see the package tests for what is relied on.
func Create(ns netns.NsHandle, cfg Config) (*TAP, error) {
	name := cfg.Name
	if name == "" {
		name = DefaultName
	}
	if err := checkName(name); err != nil {
		return nil, err
	}

	// Take our own handle on the namespace first: nothing may fail after a
	// persistent device exists.
	nsDup, err := dupNetns(ns)
	if err != nil {
		return nil, fmt.Errorf("tap: create %q: network namespace: %w", name, err)
	}

	var fd, index int
	var actual string
	var off offloads
	err = nsthread.Do(ns, func() error {
		var err error
		fd, actual, index, off, err = openTAP(name, cfg.Persist, cfg.Offload)
		return err
	})
	if err != nil {
		nsDup.Close()
		return nil, err
	}

	// os.NewFile sees a non-blocking descriptor and registers it with the
	// netpoller. That must happen after TUNSETIFF: before it the descriptor
	// has no device and polls as an error.
	f := os.NewFile(uintptr(fd), cloneDevice)
	rc, err := f.SyscallConn()
	if err != nil {
		// Cannot happen for an *os.File made from a valid descriptor.
		f.Close()
		nsDup.Close()
		return nil, fmt.Errorf("tap: create %q: %w", actual, err)
	}
	log := cfg.Log
	if log == nil {
		l := logrus.New()
		l.Out = io.Discard
		log = l
	}
	t := &TAP{file: f, rawConn: rc, name: actual, index: index, ns: nsDup, log: log, vnetHdr: off.vnetHdr, offload: off.String()}
	t.rd.fn = t.readReady
	t.rd.overflow = make([]byte, maxTAPFrame+VNetHdrLen)
	t.wr.fn = t.writeReady
	created := log.WithFields(logrus.Fields{"interface-name": actual, "persist": cfg.Persist})
	if cfg.Offload {
		created = created.WithField("offload", t.offload)
		if off.refused != nil {
			created.WithError(off.refused).Info("tap: the kernel refused some offloads; frames take the slower path for those")
		}
	}
	created.Debug("tap: created")
	return t, nil
}

// openTAP opens the clone device and creates the interface. It runs in the
// target namespace: the kernel binds a TAP to the namespace of the thread
// that opened /dev/net/tun.
func openTAP(name string, persist, offload bool) (fd int, actual string, index int, off offloads, err error) {
	fd, err = unix.Open(cloneDevice, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", 0, off, fmt.Errorf("tap: open %s: %w", cloneDevice, err)
	}
	fail := func(step string, err error) (int, string, int, offloads, error) {
		unix.Close(fd) // a non-persistent device dies with it
		return -1, "", 0, off, fmt.Errorf("tap: create %q: %s: %w", name, step, err)
	}

	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fail("name", fmt.Errorf("%w: %w", ErrInvalidName, err))
	}
	// IFF_TUN_EXCL: fail with EBUSY instead of attaching to an existing
	// device of that name.
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_TUN_EXCL)
	if offload {
		ifr.SetUint16(flags | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err == nil {
			off.vnetHdr = true
		} else if errors.Is(err, unix.EINVAL) {
			off.refused = fmt.Errorf("IFF_VNET_HDR: %w", err)
		} else {
			if errors.Is(err, unix.EBUSY) {
				err = fmt.Errorf("%w: %w", ErrExists, err)
			}
			return fail("TUNSETIFF", err)
		}
	}
	if !off.vnetHdr {
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			if errors.Is(err, unix.EBUSY) {
				err = fmt.Errorf("%w: %w", ErrExists, err)
			}
			return fail("TUNSETIFF", err)
		}
	}
	actual = ifr.Name()
	if off.vnetHdr {
		off.setOffload(fd)
	}

	// The index survives renames, so MTU can find the device later.
	index, err = ifIndex(actual)
	if err != nil {
		return fail("interface index", err)
	}

	// Persistence last: until here, closing fd removes the device.
	if persist {
		if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
			return fail("TUNSETPERSIST", err)
		}
	}
	return fd, actual, index, off, nil
}

// TUN_F_USO4 and TUN_F_USO6 (linux/if_tun.h, Linux 6.2); the kernel takes
// them only together. x/sys does not have them yet.
const (
	tunFUSO4 = 0x20
	tunFUSO6 = 0x40
)

// offloads records what the kernel granted a device opened with
// Config.Offload.
type offloads struct {
	vnetHdr bool
	flags   int   // TUN_F_* granted
	refused error // the first refusal, for the log
}

// setOffload asks for checksum, TSO4 and USO offload, then without USO
// (kernels before 6.2), then checksum offload alone. USO6 comes with USO4
// because the kernel takes neither alone; IPv6 superframes are passed on
// unsplit and dropped by the filters like any IPv6 frame (netcfg turns IPv6
// off on the TAP, so there are none). The offloads the
// kernel accepted decide what the payload's stack may hand the device.
func (o *offloads) setOffload(fd int) {
	for _, flags := range []int{
		unix.TUN_F_CSUM | unix.TUN_F_TSO4 | tunFUSO4 | tunFUSO6,
		unix.TUN_F_CSUM | unix.TUN_F_TSO4,
		unix.TUN_F_CSUM,
	} {
		err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, flags)
		if err == nil {
			o.flags = flags
			return
		}
		if o.refused == nil {
			o.refused = fmt.Errorf("TUNSETOFFLOAD %#x: %w", flags, err)
		}
	}
}

func (o offloads) String() string {
	if !o.vnetHdr {
		return "none (no virtio-net header)"
	}
	var s []string
	for _, f := range []struct {
		flag int
		name string
	}{{unix.TUN_F_CSUM, "csum"}, {unix.TUN_F_TSO4, "tso4"}, {tunFUSO4, "uso4"}} {
		if o.flags&f.flag != 0 {
			s = append(s, f.name)
		}
	}
	if len(s) == 0 {
		return "vnet-hdr only"
	}
	return "vnet-hdr " + strings.Join(s, ",")
}

// ifIndex asks the kernel for the index of interface name in the calling
// thread's network namespace.
func ifIndex(name string) (int, error) {
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, err
	}
	return int(ifr.Uint32()), nil
}

// checkName applies the rule for interface names (netcfg/ifname) so that a
// bad name gets a clear error instead of EINVAL.
func checkName(name string) error {
	if err := ifname.Check(name); err != nil {
		return fmt.Errorf("%w %q: %w", ErrInvalidName, name, err)
	}
	return nil
}

// dupNetns returns a new handle on ns, or on the calling thread's namespace
// when ns is negative.
func dupNetns(ns netns.NsHandle) (netns.NsHandle, error) {
	if ns < 0 {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		return netns.Get()
	}
	fd, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return netns.None(), err
	}
	return netns.NsHandle(fd), nil
}

// Name implements Device.
func (t *TAP) Name() string { return t.name }

// VNetHdr reports whether every frame read or written carries a
// VNetHdrLen-byte virtio-net header (Config.Offload, granted).
func (t *TAP) VNetHdr() bool { return t.vnetHdr }

// Offloads describes what the kernel granted, for logs: "vnet-hdr
// csum,tso4,uso4" at best.
func (t *TAP) Offloads() string { return t.offload }

// BatchSize implements Device; it is BatchSize.
func (t *TAP) BatchSize() int { return BatchSize }

// MTU implements Device. It asks the kernel over netlink each time, so it
// sees changes made after Create (for example by netcfg.Apply).
func (t *TAP) MTU() (int, error) {
	t.nsMu.RLock()
	defer t.nsMu.RUnlock()
	if t.closed.Load() {
		return 0, t.closedError("mtu", nil)
	}
	h, err := netlink.NewHandleAt(t.ns, unix.NETLINK_ROUTE)
	if err != nil {
		return 0, fmt.Errorf("tap %s: mtu: %w", t.name, err)
	}
	defer h.Close()
	l, err := h.LinkByIndex(t.index)
	if err != nil {
		return 0, fmt.Errorf("tap %s: mtu: %w", t.name, err)
	}
	return l.Attrs().MTU, nil
}

// Kernel drop reasons a TAP reports.
const (
	// DropQueueFull counts frames the payload sent that the kernel
	// discarded because the TAP's queue toward gvpn (txqueuelen frames)
	// was full: the interface's tx_dropped.
	DropQueueFull = "tap_tx_dropped"
	// DropKernelRx counts frames gvpn wrote that the kernel discarded on
	// their way into the payload's stack: the interface's rx_dropped.
	DropKernelRx = "tap_rx_dropped"
)

// KernelDrops returns the kernel's drop counters of the interface, from its
// netlink statistics (what `ip -s link` shows as TX and RX dropped), in
// the shape of the runtime's link.KernelDropper, by the direction of the
// device's Read and Write: rx (frames on their way to Read, the payload's
// egress) DropQueueFull, tx (frames Write handed over) DropKernelRx.
func (t *TAP) KernelDrops() (rx, tx map[string]uint64, err error) {
	t.nsMu.RLock()
	defer t.nsMu.RUnlock()
	if t.closed.Load() {
		return nil, nil, t.closedError("stats", nil)
	}
	h, err := netlink.NewHandleAt(t.ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nil, fmt.Errorf("tap %s: stats: %w", t.name, err)
	}
	defer h.Close()
	l, err := h.LinkByIndex(t.index)
	if err != nil {
		return nil, nil, fmt.Errorf("tap %s: stats: %w", t.name, err)
	}
	st := l.Attrs().Statistics
	if st == nil {
		return nil, nil, fmt.Errorf("tap %s: stats: the kernel sent no link statistics", t.name)
	}
	return map[string]uint64{DropQueueFull: st.TxDropped}, map[string]uint64{DropKernelRx: st.RxDropped}, nil
}

// Read implements Device. It reads at most min(len(bufs), BatchSize)
// frames: it waits in the netpoller until one frame is ready, then keeps
// reading without waiting until the kernel's queue is empty or the batch is
// full.
//
// A frame longer than its buffer shows up as sizes[i] > len(bufs[i])-offset
// with its real length, as Device requires: every read has a private
// overflow buffer after the caller's, large enough for any TAP frame, so the
// kernel never truncates silently. With the runtime's buffers (room for a
// 65535-byte frame after the headroom) that only happens for frames over
// 65535 bytes, which a TAP never sends at MTU ≤ 65521.
func (t *TAP) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if t.closed.Load() {
		return 0, t.closedError("read", nil)
	}
	if offset < 0 {
		return 0, fmt.Errorf("tap %s: read: negative offset %d", t.name, offset)
	}
	r := &t.rd
	r.bufs = bufs[:min(len(bufs), len(sizes), BatchSize)]
	r.sizes, r.offset, r.n, r.err = sizes, offset, 0, nil
	if len(r.bufs) == 0 {
		r.bufs, r.sizes = nil, nil
		return 0, nil
	}
	err := t.rawConn.Read(r.fn)
	n := r.n
	if err == nil {
		err = r.err
	}
	r.bufs, r.sizes, r.err = nil, nil, nil // keep no reference to the caller's buffers
	if n > 0 {
		// Frames first; a persistent error shows up on the next call.
		return n, nil
	}
	return 0, t.ioError("read", err)
}

// readReady is the RawConn read callback. It returns false (wait for the
// descriptor to become readable) only when it has read nothing yet.
func (t *TAP) readReady(fd uintptr) bool {
	r := &t.rd
	for r.n < len(r.bufs) {
		b := r.bufs[r.n]
		if r.offset > len(b) {
			r.err = fmt.Errorf("buffer %d: %w: offset %d beyond its %d bytes", r.n, io.ErrShortBuffer, r.offset, len(b))
			return true
		}
		// The overflow buffer after the caller's one makes the count the
		// frame's real length (a read into a short buffer would return
		// the short length), and guarantees the read is never zero bytes
		// long, which would consume nothing.
		r.iov[0], r.iov[1] = b[r.offset:], r.overflow
		m, err := unix.Readv(int(fd), r.iov[:])
		r.iov[0], r.iov[1] = nil, nil
		switch err {
		case nil:
			r.sizes[r.n] = m
			r.n++
		case unix.EINTR:
		case unix.EAGAIN:
			return r.n > 0
		default:
			r.err = err
			return true
		}
	}
	return true
}

// Write implements Device with one write(2) per frame, in order. If the
// kernel refuses a frame (EINVAL for one shorter than an Ethernet header,
// EIO while the interface is down), Write stops there and returns that
// frame's index with an error that is not net.ErrClosed, so the caller can
// drop the frame and write the rest.
func (t *TAP) Write(bufs [][]byte, offset int) (int, error) {
	if t.closed.Load() {
		return 0, t.closedError("write", nil)
	}
	if offset < 0 {
		return 0, fmt.Errorf("tap %s: write: negative offset %d", t.name, offset)
	}
	w := &t.wr
	w.bufs, w.offset, w.n, w.err = bufs, offset, 0, nil
	err := t.rawConn.Write(w.fn)
	n := w.n
	if err == nil {
		err = w.err
	}
	w.bufs, w.err = nil, nil
	if err != nil {
		return n, t.ioError(fmt.Sprintf("write frame %d", n), err)
	}
	return n, nil
}

// writeReady is the RawConn write callback.
func (t *TAP) writeReady(fd uintptr) bool {
	w := &t.wr
	for w.n < len(w.bufs) {
		b := w.bufs[w.n]
		if w.offset > len(b) {
			w.err = fmt.Errorf("%w: offset %d beyond its %d bytes", io.ErrShortBuffer, w.offset, len(b))
			return true
		}
		b = b[w.offset:]
		if len(b) == 0 {
			w.n++ // never send an empty frame; it counts as written
			continue
		}
		_, err := unix.Write(int(fd), b)
		switch err {
		case nil:
			w.n++
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			w.err = err
			return true
		}
	}
	return true
}

// ioError maps an error from the descriptor to the link contract: anything
// meaning the TAP is gone wraps net.ErrClosed.
func (t *TAP) ioError(op string, err error) error {
	if err == nil {
		return nil
	}
	if t.closed.Load() || errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADF) {
		return t.closedError(op, nil)
	}
	if errors.Is(err, unix.EBADFD) || t.detached() {
		// The interface was deleted under the open descriptor. Reads
		// and writes then fail with EBADFD, but a wait in the netpoller
		// fails first with "not pollable" (the TAP polls as EPOLLERR).
		return t.closedError(op, err)
	}
	return fmt.Errorf("tap %s: %s: %w", t.name, op, err)
}

// detached reports whether the descriptor has lost its interface (deleted
// with `ip link del`). TUNGETIFF fails with EBADFD exactly then.
func (t *TAP) detached() bool {
	var gone bool
	err := t.rawConn.Control(func(fd uintptr) {
		var ifr unix.Ifreq
		gone = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, &ifr) == unix.EBADFD
	})
	return err == nil && gone
}

func (t *TAP) closedError(op string, cause error) error {
	if cause != nil {
		return fmt.Errorf("tap %s: %s: %w: %w", t.name, op, net.ErrClosed, cause)
	}
	return fmt.Errorf("tap %s: %s: %w", t.name, op, net.ErrClosed)
}

// Close implements Device. It closes the descriptor, which unblocks a
// pending Read or Write and, unless the device was created with Persist,
// makes the kernel delete the interface. Close returns once the descriptor
// is really closed. Later calls return the first call's result.
func (t *TAP) Close() error {
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		if err := t.file.Close(); err != nil {
			t.closeErr = fmt.Errorf("tap %s: close: %w", t.name, err)
		}
		t.nsMu.Lock()
		t.ns.Close()
		t.nsMu.Unlock()
		t.log.WithField("interface-name", t.name).Debug("tap: closed")
	})
	return t.closeErr
}
