// Package offload turns the TAP's virtio-net-header superframes into
// MTU-sized Ethernet frames and back, in user space, the way the kernel's
// own segmentation (GSO) and coalescing (GRO) would.
//
// A TAP opened with IFF_VNET_HDR and TCP segmentation offload hands the
// reader TCP superframes of up to 64 KiB, each behind a virtio_net_hdr that
// says how to cut it; writing such a superframe back costs one write for
// dozens of segments. The VPN's MTU cannot change (every ExeUnit carries one
// frame per datagram), so the frames must be cut apart where they leave for
// the ExeUnit and may be glued back together where they enter the payload.
//
// Split cuts one superframe into frames; Coalescer glues runs of in-order
// TCP segments of one flow into superframes. Both work on caller buffers
// and allocate nothing per frame. Link wraps a TAP that carries virtio-net
// headers so that the rest of the runtime keeps seeing one plain frame per
// buffer: filters and counters see every segment.
package offload

import "encoding/binary"

// VNetHdrLen is the size of struct virtio_net_hdr, the header a TAP opened
// with IFF_VNET_HDR puts in front of every frame (TUNSETVNETHDRSZ default).
const VNetHdrLen = 10

// Flags and GSO types of struct virtio_net_hdr (linux/virtio_net.h).
const (
	FlagNeedsCsum = 1 // checksum from CsumStart, stored at CsumStart+CsumOffset, is partial
	FlagDataValid = 2

	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3 // UFO, never offered
	GSOTCPv6 = 4
	GSOUDPL4 = 5 // USO: UDP segmentation (Linux 6.2+)
	GSOECN   = 0x80
)

// VNetHdr is struct virtio_net_hdr. The TAP uses the host's byte order for
// it (legacy virtio), which the kernel calls "native" unless told
// otherwise with TUNSETVNETLE/BE.
type VNetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16 // bytes of headers before the payload (not trusted)
	GSOSize    uint16 // payload bytes per segment
	CsumStart  uint16 // from the start of the Ethernet frame
	CsumOffset uint16 // from CsumStart
}

// DecodeVNetHdr reads a header from the first VNetHdrLen bytes of b; ok is
// false when b is shorter.
func DecodeVNetHdr(b []byte) (h VNetHdr, ok bool) {
	if len(b) < VNetHdrLen {
		return h, false
	}
	e := binary.NativeEndian
	return VNetHdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     e.Uint16(b[2:]),
		GSOSize:    e.Uint16(b[4:]),
		CsumStart:  e.Uint16(b[6:]),
		CsumOffset: e.Uint16(b[8:]),
	}, true
}

// Encode writes h into the first VNetHdrLen bytes of b.
func (h VNetHdr) Encode(b []byte) {
	_ = b[VNetHdrLen-1]
	e := binary.NativeEndian
	b[0], b[1] = h.Flags, h.GSOType
	e.PutUint16(b[2:], h.HdrLen)
	e.PutUint16(b[4:], h.GSOSize)
	e.PutUint16(b[6:], h.CsumStart)
	e.PutUint16(b[8:], h.CsumOffset)
}
