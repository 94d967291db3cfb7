package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// datagramBatch is how many datagrams one recvmmsg/sendmmsg call moves.
const datagramBatch = 64

// Datagram is a Link over a UDP socket: one datagram carries exactly one
// Ethernet frame, with no header — the ExeUnit's udp_datagram endpoint and
// QEMU's -netdev dgram/socket,udp. Frames are sent to one peer; datagrams
// from any other source are dropped and counted, because on loopback any
// local process could otherwise inject frames into the VPN.
//
// Reads and writes use recvmmsg/sendmmsg on preallocated headers, so a batch
// costs one syscall and no allocation.
type Datagram struct {
	conn *net.UDPConn
	raw  interface {
		Read(func(fd uintptr) bool) error
		Write(func(fd uintptr) bool) error
	}
	peer    netip.AddrPort
	peerRaw unix.RawSockaddrInet4
	anyPeer bool
	foreign atomic.Uint64
	rx, tx  mmsgBatch
	wmu     sync.Mutex

	// The syscall callbacks are bound once, at construction: a closure
	// made per call would escape to the heap and allocate on every batch.
	recvFn, sendFn func(fd uintptr) bool

	closeErr error
	once     sync.Once
}

type mmsgBatch struct {
	hdrs  [datagramBatch]unix.Mmsghdr
	iovs  [datagramBatch]unix.Iovec
	names [datagramBatch]unix.RawSockaddrInet4
	// Arguments and results of the pending syscall.
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

var _ Counters = (*Datagram)(nil)

// Counters implements Counters: datagrams dropped because they came
// from a foreign source ("foreign_source"), once there are any.
func (d *Datagram) Counters() map[string]uint64 {
	if n := d.Foreign(); n > 0 {
		return map[string]uint64{"foreign_source": n}
	}
	return nil
}

// BatchSize implements Link.
func (d *Datagram) BatchSize() int { return datagramBatch }

// Read implements Link. A datagram that did not fit its buffer is reported
// with a size one larger than the buffer (the kernel truncated it), so the
// caller drops it as oversize.
func (d *Datagram) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	want := min(len(bufs), datagramBatch)
	b := &d.rx
	for {
		for i := range want {
			buf := bufs[i][offset:]
			b.iovs[i] = unix.Iovec{Base: unsafe.SliceData(buf)}
			b.iovs[i].SetLen(len(buf))
			b.hdrs[i] = unix.Mmsghdr{}
			b.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
			b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
			b.hdrs[i].Hdr.Iov = &b.iovs[i]
			b.hdrs[i].Hdr.SetIovlen(1)
		}
		b.want = want
		err := d.raw.Read(d.recvFn)
		if err == nil && b.errno != 0 {
			err = b.errno
		}
		if err != nil {
			return 0, d.wrapErr(err)
		}
		got := b.got
		n := 0
		for i := range got {
			if !d.fromPeer(&b.names[i]) {
				d.foreign.Add(1)
				continue
			}
			size := int(b.hdrs[i].Len)
			if b.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0 {
				size = len(bufs[i]) - offset + 1
			}
			if n != i {
				// Keep accepted frames contiguous at the front. Foreign
				// datagrams are rare, so the copy is off the fast path.
				copy(bufs[n][offset:], bufs[i][offset:offset+min(size, len(bufs[i])-offset)])
			}
			sizes[n] = size
			n++
		}
		if n > 0 {
			return n, nil
		}
	}
}

// recv runs recvmmsg for Read; it returns false to wait for readiness.
func (d *Datagram) recv(fd uintptr) bool {
	b := &d.rx
	r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd,
		uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(b.want), unix.MSG_DONTWAIT, 0, 0)
	if errno == unix.EAGAIN {
		return false
	}
	b.got, b.errno = int(r), errno
	if errno != 0 {
		b.got = 0
	}
	return true
}

func (d *Datagram) fromPeer(sa *unix.RawSockaddrInet4) bool {
	return sa.Family == unix.AF_INET && sa.Port == d.peerRaw.Port && sa.Addr == d.peerRaw.Addr
}

// Write implements Link. Empty frames are skipped: an empty datagram ends
// the ExeUnit's VPN stream.
func (d *Datagram) Write(bufs [][]byte, offset int) (int, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	b := &d.tx
	done := 0
	for done < len(bufs) {
		n := 0
		skipped := 0
		for done+n+skipped < len(bufs) && n < datagramBatch {
			frame := bufs[done+n+skipped][offset:]
			if len(frame) == 0 {
				skipped++
				continue
			}
			b.iovs[n] = unix.Iovec{Base: unsafe.SliceData(frame)}
			b.iovs[n].SetLen(len(frame))
			b.hdrs[n] = unix.Mmsghdr{}
			b.hdrs[n].Hdr.Name = (*byte)(unsafe.Pointer(&d.peerRaw))
			b.hdrs[n].Hdr.Namelen = unix.SizeofSockaddrInet4
			b.hdrs[n].Hdr.Iov = &b.iovs[n]
			b.hdrs[n].Hdr.SetIovlen(1)
			n++
		}
		sent, err := d.sendmmsg(n)
		done += sent + skipped
		if err != nil {
			return done, d.wrapErr(err)
		}
	}
	return done, nil
}

// sendmmsg sends the first n prepared headers, retrying until all are sent.
func (d *Datagram) sendmmsg(n int) (int, error) {
	b := &d.tx
	b.off, b.want = 0, n
	for b.off < n {
		b.errno = 0
		if err := d.raw.Write(d.sendFn); err != nil {
			return b.off, err
		}
		if b.errno != 0 {
			return b.off, b.errno
		}
	}
	return n, nil
}

// send runs sendmmsg for Write; it returns false to wait for readiness.
func (d *Datagram) send(fd uintptr) bool {
	b := &d.tx
	r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd,
		uintptr(unsafe.Pointer(&b.hdrs[b.off])), uintptr(b.want-b.off), unix.MSG_DONTWAIT, 0, 0)
	switch errno {
	case unix.EAGAIN:
		return false
	case 0:
		b.off += int(r)
	case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH:
		// An ICMP error from an earlier datagram (the peer is not
		// listening yet): UDP is unreliable, so this frame is lost like
		// any other and sending goes on.
		b.off++
	default:
		b.errno = errno
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
