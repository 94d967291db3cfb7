//go:build linux

package golemnet

import (
	"encoding/binary"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/link"
)

// syscaller runs recvmmsg/sendmmsg on a socket through its syscall.RawConn,
// so the goroutine parks in the Go netpoller while the socket is not ready.
//
// x/net's ipv4.PacketConn.ReadBatch does the same but allocates a
// *net.UDPAddr for every datagram it reads; the hub never needs the sender's
// address (the ExeUnit accepts datagrams from anyone), so it calls the
// syscalls itself and allocates nothing per frame. The RawConn callbacks are
// method values bound once, so a call allocates nothing either.
//
// A syscaller is used by one goroutine at a time.
type syscaller struct {
	hs    []unix.Mmsghdr
	n     int
	errno syscall.Errno
	recvF func(fd uintptr) bool
	sendF func(fd uintptr) bool
}

func newSyscaller() *syscaller {
	s := &syscaller{}
	s.recvF = s.doRecv
	s.sendF = s.doSend
	return s
}

// recv reads up to len(hs) datagrams into hs (which must not be empty) and
// returns how many arrived. hs[i].Len is the size of datagram i.
func (s *syscaller) recv(rc syscall.RawConn, hs []unix.Mmsghdr) (int, error) {
	s.hs, s.n, s.errno = hs, 0, 0
	err := rc.Read(s.recvF)
	s.hs = nil
	if err != nil {
		return 0, err
	}
	if s.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", s.errno)
	}
	return s.n, nil
}

// send writes hs (which must not be empty) as one datagram each, in order,
// and returns how many the kernel took. Like sendmmsg, it reports an error
// only when the first datagram fails.
func (s *syscaller) send(rc syscall.RawConn, hs []unix.Mmsghdr) (int, error) {
	s.hs, s.n, s.errno = hs, 0, 0
	err := rc.Write(s.sendF)
	s.hs = nil
	if err != nil {
		return 0, err
	}
	if s.errno != 0 {
		return 0, os.NewSyscallError("sendmmsg", s.errno)
	}
	return s.n, nil
}

func (s *syscaller) doRecv(fd uintptr) bool {
	return s.mmsg(unix.SYS_RECVMMSG, fd)
}

func (s *syscaller) doSend(fd uintptr) bool {
	return s.mmsg(unix.SYS_SENDMMSG, fd)
}

// mmsg returns false (wait for readiness) on EAGAIN, as RawConn expects.
func (s *syscaller) mmsg(trap, fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(trap, fd, uintptr(unsafe.Pointer(&s.hs[0])), uintptr(len(s.hs)), 0, 0, 0)
		switch e {
		case 0:
			s.n = int(r)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			s.errno = e
			return true
		}
	}
}

// endpoint is a runtime's data endpoint, kept both readable and as the
// sockaddr sendmmsg takes. It is immutable once published.
type endpoint struct {
	ap netip.AddrPort
	sa unix.RawSockaddrInet4
}

func newEndpoint(ap netip.AddrPort) (*endpoint, bool) {
	a := ap.Addr().Unmap()
	if !a.Is4() || ap.Port() == 0 {
		return nil, false
	}
	e := &endpoint{ap: netip.AddrPortFrom(a, ap.Port())}
	e.sa.Family = unix.AF_INET
	e.sa.Addr = a.As4()
	// sin_port is in network byte order whatever the host's order is.
	var port [2]byte
	binary.BigEndian.PutUint16(port[:], ap.Port())
	e.sa.Port = binary.NativeEndian.Uint16(port[:])
	return e, true
}

// setSendTo points header h at one frame and at destination e.
func setSendTo(h *unix.Mmsghdr, iov *unix.Iovec, frame []byte, e *endpoint) {
	iov.Base = &frame[0]
	iov.SetLen(len(frame))
	setHeader(h, unsafe.Slice(iov, 1), e)
}

// setHeader points header h at the bytes in iov (one datagram, or several
// with setGSO) and at destination e.
func setHeader(h *unix.Mmsghdr, iov []unix.Iovec, e *endpoint) {
	h.Hdr.Name = (*byte)(unsafe.Pointer(&e.sa))
	h.Hdr.Namelen = unix.SizeofSockaddrInet4
	h.Hdr.Iov = &iov[0]
	h.Hdr.SetIovlen(len(iov))
	h.Hdr.Control = nil
	h.Hdr.SetControllen(0)
	h.Hdr.Flags = 0
	h.Len = 0
}

// UDP generic segmentation offload (Linux 4.18+): one sendmsg carries many
// datagrams of segment size bytes (the last may be shorter) and the kernel
// cuts them apart; the receiver still gets one datagram per frame.
const (
	// gsoMaxSegments is UDP_MAX_SEGMENTS of the kernels that allow the
	// fewest (64).
	gsoMaxSegments = 64
	// gsoMaxBytes keeps one message inside the IPv4 packet size limit.
	gsoMaxBytes = 65507
)

var gsoCmsgSpace = link.UDPSegmentSpace

// setGSO attaches a UDP_SEGMENT control message (in ctl, gsoCmsgSpace
// bytes) to header h.
func setGSO(h *unix.Mmsghdr, ctl []byte, segment int) {
	link.PutUDPSegment(ctl, segment)
	h.Hdr.Control = &ctl[0]
	h.Hdr.SetControllen(len(ctl))
}

var groCmsgSpace = link.UDPGROSpace

// groSize returns the segment size of a message UDP GRO glued from several
// datagrams, or 0.
func groSize(h *unix.Mmsghdr, ctl []byte) int { return link.UDPGROSize(ctl, int(h.Hdr.Controllen)) }

// enableGRO asks the kernel to glue datagrams of one sender into one
// message (Linux 5.0+) and reports whether it agreed.
func enableGRO(rc syscall.RawConn) bool {
	ok := false
	rc.Control(func(fd uintptr) {
		ok = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil
	})
	return ok
}

// probeGSO reports whether the kernel takes UDP_SEGMENT on this socket.
func probeGSO(rc syscall.RawConn) bool {
	ok := false
	rc.Control(func(fd uintptr) {
		// Setting the socket-wide segment size to 0 turns GSO off by
		// default, which is what we want: it is asked for per message.
		ok = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, 0) == nil
	})
	return ok
}
