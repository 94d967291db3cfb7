// Package linktest is the test kit for frame links: an in-memory link (with
// the Name and MTU of a tap.Device, so it stands in for a TAP) for tests that
// cannot or need not create a real device (no root needed), in the manner of
// wireguard-go's tuntest.ChannelTUN.
//
// A ChannelDevice is driven through two channels:
//
//	dev := linktest.NewChannelDevice()
//	dev.Inbound <- frame   // the code under test reads it with dev.Read
//	got := <-dev.Outbound  // a frame the code under test wrote with dev.Write
//
// NewPair joins two devices back to back, like the two ends of a cable.
//
// The fake is for correctness tests, not benchmarks: Write copies every frame.
package linktest

import (
	"fmt"
	"io"
	"sync"

	"github.com/gvpn/gvpn/runtime/link"
)

// QueueLen is the capacity of the channels NewChannelDevice makes. A Write
// blocks when Outbound is full and nobody receives.
const QueueLen = 64

// BatchSize is what a ChannelDevice's BatchSize returns.
const BatchSize = 8

// ChannelDevice is a link.Link with a tap.Device's Name and MTU, backed by
// channels. Frames sent on Inbound
// come out of Read; frames passed to Write are copied and sent on Outbound.
// Empty frames given to Write are skipped, as on a real TAP.
//
// Close unblocks Read and Write, which then return errors wrapping
// link.ErrClosed. It does not close the channels, so a test may keep sending
// on Inbound without panicking.
type ChannelDevice struct {
	Inbound  chan []byte
	Outbound chan []byte

	name string

	mu  sync.Mutex
	mtu int

	closeOnce sync.Once
	closed    chan struct{}
}

// NewChannelDevice returns a device named "vpn0" with MTU 1220 and buffered
// channels of QueueLen frames.
func NewChannelDevice() *ChannelDevice {
	return newDevice("vpn0", make(chan []byte, QueueLen), make(chan []byte, QueueLen))
}

// NewPair returns two devices joined back to back: frames written to a are
// read from b and frames written to b are read from a. Their Inbound and
// Outbound fields are the shared channels (a.Outbound == b.Inbound), so a
// test may also inject or observe frames directly. Closing one end does not
// close the other.
func NewPair() (a, b *ChannelDevice) {
	ab := make(chan []byte, QueueLen)
	ba := make(chan []byte, QueueLen)
	return newDevice("vpn0", ba, ab), newDevice("vpn1", ab, ba)
}

func newDevice(name string, in, out chan []byte) *ChannelDevice {
	return &ChannelDevice{Inbound: in, Outbound: out, name: name, mtu: 1220, closed: make(chan struct{})}
}

// Name implements tap.Device.
func (d *ChannelDevice) Name() string { return d.name }

// MTU implements tap.Device.
func (d *ChannelDevice) MTU() (int, error) {
	if d.isClosed() {
		return 0, fmt.Errorf("linktest %s: mtu: %w", d.name, link.ErrClosed)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mtu, nil
}

// SetMTU changes what MTU reports. It does not limit frame sizes.
func (d *ChannelDevice) SetMTU(mtu int) {
	d.mu.Lock()
	d.mtu = mtu
	d.mu.Unlock()
}

// BatchSize implements link.Link.
func (d *ChannelDevice) BatchSize() int { return BatchSize }

// Read implements link.Link. It blocks for the first frame, then takes the
// frames already queued on Inbound, up to min(len(bufs), BatchSize). A frame
// longer than its buffer is not copied; its length is reported in sizes[i].
func (d *ChannelDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	limit := min(len(bufs), len(sizes), BatchSize)
	if limit == 0 {
		return 0, nil
	}
	if d.isClosed() {
		return 0, fmt.Errorf("linktest %s: read: %w", d.name, link.ErrClosed)
	}
	var frame []byte
	select {
	case <-d.closed:
		return 0, fmt.Errorf("linktest %s: read: %w", d.name, link.ErrClosed)
	case frame = <-d.Inbound:
	}
	n := 0
	for {
		if offset < 0 || offset > len(bufs[n]) {
			return n, fmt.Errorf("linktest %s: read: %w", d.name, io.ErrShortBuffer)
		}
		sizes[n] = len(frame)
		if len(frame) <= len(bufs[n])-offset {
			copy(bufs[n][offset:], frame)
		}
		n++
		if n == limit {
			return n, nil
		}
		select {
		case frame = <-d.Inbound:
		default:
			return n, nil
		}
	}
}

// Write implements link.Link. Each non-empty frame is copied and sent on
// Outbound, blocking while Outbound is full.
func (d *ChannelDevice) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		if offset < 0 || offset > len(b) {
			return i, fmt.Errorf("linktest %s: write: %w", d.name, io.ErrShortBuffer)
		}
		if len(b) == offset {
			continue
		}
		if d.isClosed() {
			return i, fmt.Errorf("linktest %s: write: %w", d.name, link.ErrClosed)
		}
		frame := append([]byte(nil), b[offset:]...)
		select {
		case <-d.closed:
			return i, fmt.Errorf("linktest %s: write: %w", d.name, link.ErrClosed)
		case d.Outbound <- frame:
		}
	}
	return len(bufs), nil
}

func (d *ChannelDevice) isClosed() bool {
	select {
	case <-d.closed:
		return true
	default:
		return false
	}
}

// Close implements link.Link.
func (d *ChannelDevice) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return nil
}
