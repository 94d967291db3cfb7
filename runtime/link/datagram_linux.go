package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// datagramBatch is how many frames one Read returns and one Write takes in
// a sendmmsg call at most.
const datagramBatch = 64

// rxMessages is how many messages one recvmmsg call receives. With UDP GRO
// one message can carry up to 64 datagrams, so each needs a buffer of a
// whole UDP datagram's size.
const rxMessages = 16

// UDP generic segmentation offload: one message carries up to gsoMaxSegments
// datagrams of the same size (the last may be shorter), at most
// gsoMaxBytes in all. 64 is UDP_MAX_SEGMENTS of the kernels that allow the
// fewest.
const (
	gsoMaxSegments = 64
	gsoMaxBytes    = 65507
	rxBufSize      = 1 << 16
)

// UDPSegmentSpace and UDPGROSpace are the sizes of the control messages
// of UDP segmentation (UDP_SEGMENT, sent) and of UDP GRO (UDP_GRO,
// received).
var (
	UDPSegmentSpace = unix.CmsgSpace(2)
	UDPGROSpace     = unix.CmsgSpace(4)
)

// PutUDPSegment writes into ctl (at least UDPSegmentSpace bytes) the
// control message that asks the kernel to cut a sent message into
// datagrams of size bytes (the last may be shorter).
func PutUDPSegment(ctl []byte, size int) {
	cm := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
	cm.Level, cm.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	cm.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(ctl[unix.CmsgLen(0):], uint16(size))
}

// UDPGROSize returns the datagram size of a received message that UDP GRO
// glued from several datagrams, from the controllen bytes of control
// messages the kernel left in ctl; 0 when there is no UDP_GRO message.
func UDPGROSize(ctl []byte, controllen int) int {
	if controllen < unix.CmsgLen(4) || controllen > len(ctl) {
		return 0
	}
	cm := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
	if cm.Level != unix.SOL_UDP || cm.Type != unix.UDP_GRO || int(cm.Len) < unix.CmsgLen(4) {
		return 0
	}
	return int(binary.NativeEndian.Uint32(ctl[unix.CmsgLen(0):]))
}

// Datagram is a Link over a UDP socket: one datagram carries exactly one
// Ethernet frame, with no header — the ExeUnit's udp_datagram endpoint and
// QEMU's -netdev dgram/socket,udp. Frames are sent to one peer; datagrams
// from any other source are dropped and counted, because on loopback any
// local process could otherwise inject frames into the VPN.
//
// Where the kernel has them (Linux 4.18 and 5.0), writes use UDP
// segmentation offload (UDP_SEGMENT: a run of same-size frames leaves as one
// message, which the kernel cuts into one datagram per frame, so the
// receiver — the real ExeUnit reads one datagram at a time — sees no
// difference) and reads use UDP GRO (datagrams of one sender arrive glued in
// one message, cut apart here). Both batch with recvmmsg/sendmmsg on
// preallocated headers, so a batch costs one syscall and no allocation.
type Datagram struct {
	conn *net.UDPConn
	raw  interface {
		Read(func(fd uintptr) bool) error
		Write(func(fd uintptr) bool) error
	}
	peer    netip.AddrPort
	peerRaw unix.RawSockaddrInet4
	foreign atomic.Uint64
	rx      rxState
	tx      txState
	wmu     sync.Mutex

	gso, gro   atomic.Bool
	gsoFailure atomic.Pointer[error]
	onFailure  atomic.Pointer[func(error)]

	// The syscall callbacks are bound once, at construction: a closure
	// made per call would escape to the heap and allocate on every batch.
	recvFn, sendFn func(fd uintptr) bool

	closeErr error
	once     sync.Once
}

// rxState is the receive side: messages read by the last recvmmsg and the
// position of the next frame in them.
type rxState struct {
	hdrs  [rxMessages]unix.Mmsghdr
	iovs  [rxMessages]unix.Iovec
	names [rxMessages]unix.RawSockaddrInet4
	ctl   [rxMessages][]byte
	bufs  [rxMessages][]byte
	want  int
	got   int
	errno unix.Errno

	msg int // message being cut
	pos int // offset of the next frame in it
	seg int // its frames' size (the whole message when not glued)
}

// txState is the send side: one header per message, one iovec per frame.
type txState struct {
	hdrs           [datagramBatch]unix.Mmsghdr
	iovs           [datagramBatch]unix.Iovec
	ctl            [datagramBatch][]byte
	frames         [datagramBatch]int // frames per message
	off, want, got int
	errno          unix.Errno
}

// NewDatagram returns a Datagram link on conn that sends every frame to peer
// and accepts frames only from peer. conn must be an IPv4 UDP socket. The
// link owns conn: Close closes it.
func NewDatagram(conn *net.UDPConn, peer netip.AddrPort) (*Datagram, error) {
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	if !peer.Addr().Is4() {
		return nil, fmt.Errorf("datagram link: peer %s is not an IPv4 address", peer)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("datagram link: %w", err)
	}
	d := &Datagram{conn: conn, raw: raw, peer: peer}
	d.peerRaw = sockaddr4(peer)
	d.recvFn, d.sendFn = d.recv, d.send
	for i := range d.rx.bufs {
		d.rx.bufs[i] = make([]byte, rxBufSize)
		d.rx.ctl[i] = make([]byte, UDPGROSpace)
	}
	for i := range d.tx.ctl {
		d.tx.ctl[i] = make([]byte, UDPSegmentSpace)
	}
	raw.Control(func(fd uintptr) {
		// Segment size 0 for the socket: GSO is asked for per message.
		d.gso.Store(unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, 0) == nil)
		d.gro.Store(unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil)
	})
	return d, nil
}

func sockaddr4(ap netip.AddrPort) unix.RawSockaddrInet4 {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().As4()}
	// The port is stored in network byte order.
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(ap.Port()>>8), byte(ap.Port())
	return sa
}

// Peer returns the address frames are sent to.
func (d *Datagram) Peer() netip.AddrPort { return d.peer }

// LocalAddr returns the socket's own address.
func (d *Datagram) LocalAddr() netip.AddrPort {
	return d.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Foreign returns how many datagrams from a source other than the peer were
// dropped.
func (d *Datagram) Foreign() uint64 { return d.foreign.Load() }

// DropSocketRcvbuf counts datagrams the kernel discarded because the
// endpoint socket's receive buffer was full (SK_MEMINFO_DROPS, the "drops"
// column of /proc/net/udp): frames from the ExeUnit that never reached
// gvpn.
const DropSocketRcvbuf = "udp_rcvbuf_full"

var _ KernelDropper = (*Datagram)(nil)

// KernelDrops implements KernelDropper: the socket's drop count, read with
// SO_MEMINFO. Every drop is rx (on the way to Read); a full send buffer
// blocks rather than drops.
func (d *Datagram) KernelDrops() (rx, tx map[string]uint64, err error) {
	var mem [unix.SK_MEMINFO_VARS]uint32
	var errno unix.Errno
	raw, err := d.conn.SyscallConn()
	if err != nil {
		return nil, nil, d.wrapErr(err)
	}
	cerr := raw.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(mem))
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&size)), 0)
	})
	if cerr != nil {
		return nil, nil, d.wrapErr(cerr)
	}
	if errno != 0 {
		return nil, nil, fmt.Errorf("datagram link: SO_MEMINFO: %w", errno)
	}
	return map[string]uint64{DropSocketRcvbuf: uint64(mem[unix.SK_MEMINFO_DROPS])}, nil, nil
}

// Offloads says which UDP offloads the link uses, for logs: "gso,gro" at
// best, "none" on kernels without either.
func (d *Datagram) Offloads() string {
	switch g, r := d.gso.Load(), d.gro.Load(); {
	case g && r:
		return "gso,gro"
	case g:
		return "gso"
	case r:
		return "gro"
	}
	return "none"
}

var _ Counters = (*Datagram)(nil)

// DropForeignSource counts datagrams Read dropped because they came from an
// address other than the peer's.
const DropForeignSource = "foreign_source"

// Counters implements Counters: datagrams dropped because they came from a
// foreign source (rx DropForeignSource), once there are any.
func (d *Datagram) Counters() Counts {
	if n := d.Foreign(); n > 0 {
		return Counts{RxDrops: map[string]uint64{DropForeignSource: n}}
	}
	return Counts{}
}

// BatchSize implements Link.
func (d *Datagram) BatchSize() int { return datagramBatch }

// Read implements Link. Datagrams glued by GRO are cut apart into one frame
// each. A datagram that does not fit its buffer is reported with its size
// (larger than the buffer), so the caller drops it as oversize.
func (d *Datagram) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	r := &d.rx
	want := min(len(bufs), len(sizes))
	n := 0
	for n < want {
		if r.msg < r.got {
			m := int(r.hdrs[r.msg].Len)
			size := min(r.seg, m-r.pos)
			if dst := bufs[n][offset:]; size <= len(dst) {
				copy(dst, r.bufs[r.msg][r.pos:r.pos+size])
			}
			sizes[n] = size
			n++
			if r.pos += size; r.pos >= m { // an empty datagram gives one empty frame
				if r.msg++; r.msg < r.got {
					d.startMessage()
				}
			}
			continue
		}
		if n > 0 {
			break
		}
		if err := d.receive(); err != nil {
			return 0, d.wrapErr(err)
		}
	}
	return n, nil
}

// receive fills the receive messages with one recvmmsg, waiting until at
// least one datagram from the peer is there.
func (d *Datagram) receive() error {
	r := &d.rx
	for {
		for i := range rxMessages {
			r.iovs[i] = unix.Iovec{Base: &r.bufs[i][0]}
			r.iovs[i].SetLen(rxBufSize)
			r.hdrs[i] = unix.Mmsghdr{}
			h := &r.hdrs[i].Hdr
			h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
			h.Namelen = unix.SizeofSockaddrInet4
			h.Iov = &r.iovs[i]
			h.SetIovlen(1)
			h.Control = &r.ctl[i][0]
			h.SetControllen(len(r.ctl[i]))
		}
		r.want, r.got, r.msg, r.pos = rxMessages, 0, 0, 0
		err := d.raw.Read(d.recvFn)
		if err == nil && r.errno != 0 {
			err = r.errno
		}
		if err != nil {
			r.got = 0
			return err
		}
		// Keep the peer's messages at the front. Foreign datagrams are
		// rare, so moving headers is off the fast path.
		kept := 0
		for i := range r.got {
			if !d.fromPeer(&r.names[i]) {
				d.foreign.Add(uint64(gluedCount(&r.hdrs[i], r.ctl[i])))
				continue
			}
			if kept != i {
				r.hdrs[kept] = r.hdrs[i]
				r.bufs[kept], r.bufs[i] = r.bufs[i], r.bufs[kept]
				r.ctl[kept], r.ctl[i] = r.ctl[i], r.ctl[kept]
			}
			kept++
		}
		r.got = kept
		if kept > 0 {
			d.startMessage()
			return nil
		}
	}
}

// startMessage prepares cutting message r.msg: its segment size from the
// UDP_GRO control message, or the whole message.
func (d *Datagram) startMessage() {
	r := &d.rx
	h := &r.hdrs[r.msg]
	r.pos = 0
	r.seg = int(h.Len)
	if s := groSize(h, r.ctl[r.msg]); s > 0 {
		r.seg = s
	}
}

// groSize returns the segment size of a glued message, or 0.
func groSize(h *unix.Mmsghdr, ctl []byte) int { return UDPGROSize(ctl, int(h.Hdr.Controllen)) }

// gluedCount returns how many datagrams a received message holds.
func gluedCount(h *unix.Mmsghdr, ctl []byte) int {
	if s := groSize(h, ctl); s > 0 && int(h.Len) > s {
		return (int(h.Len) + s - 1) / s
	}
	return 1
}

// recv runs recvmmsg for Read; it returns false to wait for readiness.
func (d *Datagram) recv(fd uintptr) bool {
	r := &d.rx
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd,
		uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(r.want), unix.MSG_DONTWAIT, 0, 0)
	if errno == unix.EAGAIN {
		return false
	}
	r.got, r.errno = int(n), errno
	if errno != 0 {
		r.got = 0
	}
	return true
}

func (d *Datagram) fromPeer(sa *unix.RawSockaddrInet4) bool {
	return sa.Family == unix.AF_INET && sa.Port == d.peerRaw.Port && sa.Addr == d.peerRaw.Addr
}

// Write implements Link. Empty frames are skipped: an empty datagram ends
// the ExeUnit's VPN stream. With GSO, a run of frames of one size (the last
// may be shorter) goes as one message.
func (d *Datagram) Write(bufs [][]byte, offset int) (int, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	done := 0
	for done < len(bufs) {
		nh, used := d.prepare(bufs[done:], offset, d.gso.Load())
		sent, err := d.sendmmsg(nh)
		if err != nil && sent == 0 && d.gso.Load() && isGSORefusal(err) && d.tx.frames[0] > 1 {
			d.gsoRefused(err)
			continue // the same frames again, one datagram each
		}
		if err != nil {
			// Frames of the messages sent, then the refused one.
			w := done
			for k := range sent {
				w += d.tx.frames[k]
			}
			return d.skipEmpty(bufs, offset, w), d.wrapErr(err)
		}
		done += used
	}
	return len(bufs), nil
}

// skipEmpty moves i past empty frames, which count as written.
func (d *Datagram) skipEmpty(bufs [][]byte, offset, i int) int {
	for i < len(bufs) && len(bufs[i]) <= offset {
		i++
	}
	return i
}

// prepare fills the send headers from the start of bufs and returns how
// many headers and how many of bufs (empty ones included) they cover.
func (d *Datagram) prepare(bufs [][]byte, offset int, gso bool) (nh, used int) {
	t := &d.tx
	nf := 0 // iovecs used
	for used < len(bufs) && nh < datagramBatch && nf < datagramBatch {
		first := bufs[used][offset:]
		if len(first) == 0 {
			used++
			continue
		}
		seg := len(first)
		start, total := nf, 0
		for used < len(bufs) && nf < datagramBatch {
			f := bufs[used][offset:]
			if len(f) == 0 {
				used++
				continue
			}
			if nf > start && (!gso || len(f) > seg || total+len(f) > gsoMaxBytes || nf-start == gsoMaxSegments) {
				break
			}
			t.iovs[nf] = unix.Iovec{Base: unsafe.SliceData(f)}
			t.iovs[nf].SetLen(len(f))
			nf++
			used++
			total += len(f)
			if len(f) < seg { // only the last segment may be shorter
				break
			}
		}
		h := &t.hdrs[nh]
		*h = unix.Mmsghdr{}
		h.Hdr.Name = (*byte)(unsafe.Pointer(&d.peerRaw))
		h.Hdr.Namelen = unix.SizeofSockaddrInet4
		h.Hdr.Iov = &t.iovs[start]
		h.Hdr.SetIovlen(nf - start)
		if nf-start > 1 {
			ctl := t.ctl[nh]
			PutUDPSegment(ctl, seg)
			h.Hdr.Control = &ctl[0]
			h.Hdr.SetControllen(len(ctl))
		}
		t.frames[nh] = nf - start
		nh++
	}
	return nh, used
}

// isGSORefusal reports whether a send error means the kernel will not
// segment on this path (no checksum offload on the route's device: EIO; a
// segment bigger than the path MTU: EINVAL).
func isGSORefusal(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL)
}

func (d *Datagram) gsoRefused(err error) {
	d.gso.Store(false)
	if d.gsoFailure.CompareAndSwap(nil, &err) {
		if fn := d.onFailure.Load(); fn != nil {
			(*fn)(err)
		}
	}
}

// OnOffloadFailure sets fn to be told, once, if the kernel refuses a
// segmented send and the link falls back to one datagram per frame.
func (d *Datagram) OnOffloadFailure(fn func(error)) { d.onFailure.Store(&fn) }

// sendmmsg sends the first n prepared headers, retrying until all are sent.
func (d *Datagram) sendmmsg(n int) (int, error) {
	t := &d.tx
	t.off, t.want = 0, n
	for t.off < n {
		t.errno = 0
		if err := d.raw.Write(d.sendFn); err != nil {
			return t.off, err
		}
		if t.errno != 0 {
			return t.off, t.errno
		}
	}
	return n, nil
}

// send runs sendmmsg for Write; it returns false to wait for readiness.
func (d *Datagram) send(fd uintptr) bool {
	t := &d.tx
	r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd,
		uintptr(unsafe.Pointer(&t.hdrs[t.off])), uintptr(t.want-t.off), unix.MSG_DONTWAIT, 0, 0)
	switch errno {
	case unix.EAGAIN:
		return false
	case 0:
		t.off += int(r)
	case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH:
		// An ICMP error from an earlier datagram (the peer is not
		// listening yet): UDP is unreliable, so this message is lost
		// like any other and sending goes on.
		t.off++
	default:
		t.errno = errno
	}
	return true
}

// Close implements Link.
func (d *Datagram) Close() error {
	d.once.Do(func() { d.closeErr = d.conn.Close() })
	return d.closeErr
}

func (d *Datagram) wrapErr(err error) error {
	if errors.Is(err, unix.EBADF) {
		err = ErrClosed
	}
	return fmt.Errorf("datagram link %s→%s: %w", d.LocalAddr(), d.peer, gone(err))
}
