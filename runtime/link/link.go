// Package link defines the frame link: anything that carries whole Ethernet
// frames — a TAP device, the ExeUnit's data endpoint, the host–payload bridge —
// and the framings that turn sockets into links (one frame per datagram, or a
// length prefix on a byte stream).
//
// The interface is batch-shaped, like wireguard-go's tun.Device: callers pass
// slices of buffers with headroom in front of each frame, so fast paths
// (recvmmsg/sendmmsg, writev, prefix written in place) fit without copies and
// without changing callers.
package link

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// Headroom is the number of bytes a caller reserves in front of every frame
// buffer it passes to Read or Write. Links may use it as scratch space (a
// stream link writes its length prefix there), so it must be at least as large
// as the largest prefix a link in this module uses.
const Headroom = 16

// MaxFrame is the largest Ethernet frame (header included) any link in this
// module carries. It is the limit of the ExeUnit's unix_stream framing (u16
// length) and comfortably above every VPN MTU.
const MaxFrame = 65535

// BufSize is the size of a frame buffer that can hold any frame plus headroom.
const BufSize = Headroom + MaxFrame

// ErrClosed is returned (wrapped) by Read and Write after Close, and when
// the peer is gone (it closed or reset the connection). It is net.ErrClosed
// so that callers can test for it with errors.Is whichever kind of link they
// hold, a TAP included.
var ErrClosed = net.ErrClosed

// Link carries whole Ethernet frames, one frame per buffer.
//
// Read and Write may be called concurrently with each other (one reader and
// one writer), but not with themselves. Close may be called at any time, from
// any goroutine, any number of times.
type Link interface {
	// Read reads up to len(bufs) frames. Frame i is stored in
	// bufs[i][offset:] and its length in sizes[i]. It blocks until at least
	// one frame is available and returns how many were read.
	//
	// A frame larger than len(bufs[i])-offset is not an error: the link
	// discards its bytes and reports its real length in sizes[i], so that
	// sizes[i] > len(bufs[i])-offset tells the caller to drop it as oversize.
	// Framing faults that leave the link unusable (a stream that ended mid
	// frame) are errors.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)

	// Write writes bufs[i][offset:] as one frame each, in order, and returns
	// how many frames were written. bufs[i][:offset] is scratch space the link
	// may overwrite. Empty frames are never sent: a link skips them (they
	// count as written), because an empty datagram stops the ExeUnit's VPN.
	Write(bufs [][]byte, offset int) (int, error)

	// BatchSize is the largest number of frames Read returns and the number
	// Write handles in one call efficiently. It does not change over the
	// link's life.
	BatchSize() int

	// Close releases the link and unblocks pending Read and Write calls,
	// which then return an error wrapping ErrClosed. It is idempotent.
	Close() error
}

// KernelDropper is implemented by links whose kernel object drops frames
// the link itself never sees: a TAP whose queue toward gvpn is full (the
// payload's frames are lost before gvpn reads them), a UDP socket whose
// receive buffer overflowed. These are the losses a payload's TCP
// retransmits; reporting them beside the pump's own drops is what makes the
// counters true.
type KernelDropper interface {
	// KernelDrops returns the kernel's cumulative drop counters for the
	// link, keyed by a stable reason name, by the link's own direction
	// (see Counts): rx are frames lost on their way to Read, tx frames
	// Write handed over that the kernel discarded. Which of them is the
	// payload's egress depends on the side the link is on (pump.Links).
	KernelDrops() (rx, tx map[string]uint64, err error)
}

// IsClosed reports whether err means the link (or its peer) is gone, as
// opposed to a fault in one frame.
func IsClosed(err error) bool {
	return errors.Is(err, ErrClosed)
}

// Counts are a link's own counters: what it did that the pump cannot see.
// Drops are keyed by reason and split by the link's direction — RxDrops are
// frames lost on their way to Read (a datagram from a foreign address),
// TxDrops frames given to Write that never reached the peer (written while
// a bridge had no connection); which of them is the payload's egress
// depends on the side of the pump the link is on (pump.Links). Events count
// what is not a loss (reconnections, superframes cut). Counts only grow; the
// names are snake_case and go into the VPN counters and the logs as they
// are. A nil map is an empty one.
type Counts struct {
	RxDrops, TxDrops, Events map[string]uint64
}

// Add adds o's counts to c's, making c's maps as needed.
func (c *Counts) Add(o Counts) {
	c.RxDrops = AddCounts(c.RxDrops, o.RxDrops)
	c.TxDrops = AddCounts(c.TxDrops, o.TxDrops)
	c.Events = AddCounts(c.Events, o.Events)
}

// AddCounts adds from's counts to into's and returns into, made when it is
// nil and from is not empty.
func AddCounts(into, from map[string]uint64) map[string]uint64 {
	for k, v := range from {
		if into == nil {
			into = make(map[string]uint64, len(from))
		}
		into[k] += v
	}
	return into
}

// Counters is implemented by links that count something of their own (see
// Counts). A link that wraps another (the offload link, a bridge's gate)
// includes the wrapped link's counts in its own, so that the pump needs to
// ask only the link it holds.
type Counters interface {
	Counters() Counts
}

// CountsOf returns l's counts, or none when l keeps no counters.
func CountsOf(l Link) Counts {
	if c, ok := l.(Counters); ok {
		return c.Counters()
	}
	return Counts{}
}

// gone wraps err with ErrClosed when it means the connection under a link
// is gone: the peer closed or reset it (EOF, EPIPE, ECONNRESET), or it was
// closed here (EBADF, a closed pipe). The cause stays in the chain, so
// errors.Is finds both. Every socket-backed link passes its errors through
// gone, so that callers need only IsClosed.
func gone(err error) error {
	if err == nil || errors.Is(err, ErrClosed) {
		return err
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EBADF) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}
