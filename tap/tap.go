// Package tap creates Linux TAP devices inside a chosen network namespace and
// moves whole Ethernet frames through them in batches.
//
// A TAP made here is non-persistent by default: the kernel deletes the device
// when its file descriptor is closed, so a crash can never leak it. Close
// unblocks a pending Read, because the descriptor is non-blocking and lives in
// the Go netpoller.
//
// Addressing (IP, MAC, MTU, routes) is not this package's job; see netcfg.
package tap

import (
	"errors"

	"github.com/sirupsen/logrus"
)

// Device is a TAP device that moves whole Ethernet frames in batches. Its
// method set is a frame link's (runtime/link.Link), so the runtime and the
// agent use a Device as a link directly; this package needs nothing of
// theirs. Errors that mean "the device is gone" wrap net.ErrClosed, which is
// what link.ErrClosed is.
//
// The methods keep the frame link's contract:
//
//   - Read fills bufs[i][offset:] with one frame each and returns how many it
//     read, blocking only until at least one frame is ready. It never waits
//     to fill a batch. A frame longer than len(bufs[i])-offset is reported
//     with its real length in sizes[i] and its bytes are lost, so that the
//     caller drops it as oversize.
//   - Write writes bufs[i][offset:] as one frame each, in order. Empty frames
//     are skipped and count as written. If the device refuses one frame
//     (too short, interface down), Write returns that frame's index and an
//     error that is not net.ErrClosed: drop the frame and go on.
//   - Close is idempotent and unblocks pending Read and Write calls; after it
//     every call returns an error wrapping net.ErrClosed.
//
// One goroutine may Read while another Writes; Name and MTU may be called
// from any goroutine.
type Device interface {
	// Read reads up to len(bufs) frames into bufs[i][offset:], their
	// lengths into sizes[i], and returns how many it read.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)

	// Write writes bufs[i][offset:] as one frame each and returns how many
	// it wrote. bufs[i][:offset] is scratch space.
	Write(bufs [][]byte, offset int) (int, error)

	// BatchSize is the most frames one Read returns; it never changes.
	BatchSize() int

	// Close releases the device; it is idempotent.
	Close() error

	// Name returns the interface name the kernel gave the device when it was
	// created. It does not follow later renames.
	Name() string

	// MTU returns the interface's current IP MTU as the kernel reports it
	// (frames carry up to MTU+14 bytes). It fails with an error wrapping
	// net.ErrClosed after Close.
	MTU() (int, error)
}

// DefaultName is the interface name Create uses when Config.Name is empty.
// It is netcfg.DefaultName (tap stays importable without netcfg; a test
// keeps the two equal).
const DefaultName = "vpn0"

// BatchSize is the number of frames a TAP's Read returns at most and the
// batch its Write expects. A read drains what the kernel has queued, up to
// this many frames, in one wake-up; 32 amortises the netpoller round trip
// well while keeping a caller's buffer set at 32 × 64 KiB ≈ 2 MiB.
const BatchSize = 32

// Config says how to create a TAP device. The zero value is valid.
type Config struct {
	// Name is the interface name (at most 15 bytes). Empty means
	// DefaultName. A name containing "%d" asks the kernel to pick the
	// number; Device.Name tells the result.
	Name string

	// Persist keeps the device after its file descriptor is closed. The
	// default, false, lets the kernel delete the device on Close or when the
	// process dies. A persistent device must be deleted by whoever created
	// it (for example with netlink.LinkDel).
	Persist bool

	// Log receives the device's debug lines (created, closed); nil means
	// none. The caller's logger, never the process-wide one.
	Log logrus.FieldLogger

	// Offload opens the device with a virtio-net header (IFF_VNET_HDR) in
	// front of every frame read and written, and asks the kernel for
	// checksum, TCP (TSO4) and, where the kernel has it, UDP (USO4)
	// segmentation offload: reads may then return superframes of up to
	// 64 KiB with partial checksums, and writes may pass superframes back.
	// Where the kernel refuses, Create falls back (USO, then all offloads,
	// then the header itself) and logs which; TAP.VNetHdr reports whether
	// frames carry the header. The offload package turns such a device back
	// into a link of plain frames.
	Offload bool
}

// VNetHdrLen is the size of the virtio-net header in front of every frame
// of a device created with Config.Offload (when TAP.VNetHdr is true).
const VNetHdrLen = 10

var (
	// ErrExists means an interface with the requested name already exists in
	// the target namespace. Create never attaches to an existing device,
	// even a persistent TAP: exclusive creation means two owners can never
	// share one device by accident.
	ErrExists = errors.New("tap: interface already exists")

	// ErrInvalidName means Config.Name cannot be a Linux interface name.
	ErrInvalidName = errors.New("tap: invalid interface name")
)
