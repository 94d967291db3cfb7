package offload

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gvpn/gvpn/runtime/frame"
)

// Header sizes and protocol numbers segmentation reads. Ethernet and IPv4
// headers are parsed by package frame; only TCP and UDP are read here.
const (
	ethLen      = frame.EthernetLen
	ipv4MinLen  = frame.IPv4MinLen
	tcpMinLen   = 20
	udpLen      = 8
	protoTCP    = 6
	protoUDP    = 17
	tcpFlagFIN  = 0x01
	tcpFlagSYN  = 0x02
	tcpFlagRST  = 0x04
	tcpFlagPSH  = 0x08
	tcpFlagACK  = 0x10
	tcpFlagURG  = 0x20
	tcpFlagECE  = 0x40
	tcpFlagCWR  = 0x80
	maxIPv4Len  = 65535
	maxSegments = 1 << 16 // a GSO size of 1 byte on a 64 KiB payload
)

// ErrMalformed means a superframe's virtio-net header does not match the
// frame behind it (or the frame's headers do not parse), so it cannot be
// segmented. Split leaves such a frame for the caller to pass on unchanged:
// the filters then judge it like any other frame.
var ErrMalformed = errors.New("offload: superframe cannot be segmented")

// MinGSOSize is the smallest gso_size (payload bytes per segment) a
// superframe may ask for. Linux's TCP never sends smaller segments
// (net.ipv4.tcp_min_snd_mss, 48 by default), so only a forged header asks
// for less — an agent's, on the bridge — and it would turn one 64 KiB
// superframe into tens of thousands of frames (1 byte each: 65 000 frames
// and 3.5 MB of headers). Such a superframe is refused with
// ErrSmallGSO, which is an ErrMalformed: its bare frame is passed on for the
// filters to drop as oversize.
const MinGSOSize = 48

// ErrSmallGSO is the ErrMalformed of a gso_size below MinGSOSize.
var ErrSmallGSO = fmt.Errorf("%w: gso_size below %d", ErrMalformed, MinGSOSize)

// Splitter cuts one frame read from a virtio-net-header TAP into the frames
// the kernel would have sent without offloads: a TCP (TSO) or UDP (USO)
// superframe into MTU-sized segments, anything else into itself, with every
// partial checksum completed.
//
// Usage: Reset with the packet (header + frame), then Next until it reports
// no more frames. The Splitter keeps a reference to the packet until the
// next Reset; it allocates nothing.
type Splitter struct {
	frame   []byte // the Ethernet frame behind the virtio-net header
	hdr     VNetHdr
	gso     bool
	udp     bool
	hdrLen  int // Ethernet + IP + transport header bytes
	ipLen   int // IPv4 header bytes
	payload int // offset of the payload in frame
	end     int // end of the IP packet in frame
	mss     int
	next    int // payload offset of the next segment; -1 when done
	index   int // segments produced so far
}

// Reset prepares the Splitter for pkt, a virtio-net header followed by an
// Ethernet frame. It returns ErrMalformed (and prepares nothing) when pkt
// asks for segmentation it cannot honour; the caller can then take the frame
// at pkt[VNetHdrLen:] as it is.
func (s *Splitter) Reset(pkt []byte) error {
	*s = Splitter{next: -1}
	h, ok := DecodeVNetHdr(pkt)
	if !ok {
		return ErrMalformed
	}
	f := pkt[VNetHdrLen:]
	s.frame, s.hdr = f, h
	switch h.GSOType &^ GSOECN {
	case GSONone:
		if h.Flags&FlagNeedsCsum != 0 {
			start, at := int(h.CsumStart), int(h.CsumStart)+int(h.CsumOffset)
			if start > len(f) || at+2 > len(f) {
				return ErrMalformed
			}
		}
		s.next = 0
		return nil
	case GSOTCPv4:
	case GSOUDPL4:
		s.udp = true
	default:
		return ErrMalformed
	}
	if h.GSOSize < MinGSOSize {
		return ErrSmallGSO
	}
	if frame.Type(f) != frame.TypeIPv4 {
		return ErrMalformed
	}
	iph, ok := frame.ParseIPv4(f)
	if !ok || frame.IPv4Fragment(f) {
		return ErrMalformed
	}
	s.ipLen = iph.HdrLen
	totLen := iph.TotalLen
	// The header length in the virtio-net header is not trusted (the
	// kernel fills it loosely for forwarded packets): it is recomputed
	// from the headers themselves.
	l4 := ethLen + s.ipLen
	if s.udp {
		if iph.Protocol != protoUDP || totLen < s.ipLen+udpLen {
			return ErrMalformed
		}
		s.hdrLen = l4 + udpLen
	} else {
		if iph.Protocol != protoTCP || totLen < s.ipLen+tcpMinLen {
			return ErrMalformed
		}
		doff := int(f[l4+12]>>4) * 4
		if doff < tcpMinLen || totLen < s.ipLen+doff {
			return ErrMalformed
		}
		s.hdrLen = l4 + doff
	}
	s.payload, s.end, s.mss = s.hdrLen, ethLen+totLen, int(h.GSOSize)
	s.gso, s.next = true, s.payload
	return nil
}

// Frames returns how many frames Next will produce in all.
func (s *Splitter) Frames() int {
	if !s.gso {
		if s.next < 0 {
			return 0
		}
		return 1
	}
	p := s.end - s.payload
	if p <= 0 {
		return 1
	}
	return (p + s.mss - 1) / s.mss
}

// Next writes the next frame into dst and returns its length; ok is false
// when every frame has been produced. When dst is too short, Next writes
// nothing and returns the length the frame needed (n > len(dst)), so the
// caller can drop and count it as oversize; the frame is then skipped.
func (s *Splitter) Next(dst []byte) (n int, ok bool) {
	if s.next < 0 {
		return 0, false
	}
	if !s.gso {
		s.next = -1
		if len(s.frame) > len(dst) {
			return len(s.frame), true
		}
		n = copy(dst, s.frame)
		if s.hdr.Flags&FlagNeedsCsum != 0 {
			completeChecksum(dst[:n], int(s.hdr.CsumStart), int(s.hdr.CsumOffset))
		}
		return n, true
	}

	from := s.next
	to := min(from+s.mss, s.end)
	last := to >= s.end
	first := s.index == 0
	s.index++
	if last {
		s.next = -1
	} else {
		s.next = to
	}
	n = s.hdrLen + to - from
	if n > len(dst) {
		return n, true
	}
	copy(dst, s.frame[:s.hdrLen])
	copy(dst[s.hdrLen:], s.frame[from:to])
	seg := dst[:n]

	// IPv4: each segment its own total length and identification
	// (consecutive, as inet_gso_segment numbers them), checksum anew.
	ip := seg[ethLen : ethLen+s.ipLen]
	segIPLen := n - ethLen
	binary.BigEndian.PutUint16(ip[2:], uint16(segIPLen))
	id := binary.BigEndian.Uint16(s.frame[ethLen+4:])
	binary.BigEndian.PutUint16(ip[4:], id+uint16(s.index-1))
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ipv4HeaderChecksum(ip))

	l4 := seg[ethLen+s.ipLen:]
	if s.udp {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		l4[6], l4[7] = 0, 0
		c := ^fold(sum(l4, pseudoSum(ip, protoUDP, len(l4))))
		if c == 0 {
			c = 0xffff // zero means "no checksum" in UDP
		}
		binary.BigEndian.PutUint16(l4[6:], c)
		return n, true
	}
	// TCP, as tcp_gso_segment: sequence numbers advance by the payload
	// before; FIN and PSH stay on the last segment only, CWR on the first.
	seq := binary.BigEndian.Uint32(s.frame[ethLen+s.ipLen+4:])
	binary.BigEndian.PutUint32(l4[4:], seq+uint32(from-s.payload))
	if !last {
		l4[13] &^= tcpFlagFIN | tcpFlagPSH
	}
	if !first {
		l4[13] &^= tcpFlagCWR
	}
	l4[16], l4[17] = 0, 0
	binary.BigEndian.PutUint16(l4[16:], ^fold(sum(l4, pseudoSum(ip, protoTCP, len(l4)))))
	return n, true
}

// completeChecksum finishes a partial checksum as the kernel's
// skb_checksum_help does: the field at start+offset holds the pseudo-header
// sum; the sum from start to the end of the frame, complemented, replaces it.
func completeChecksum(f []byte, start, offset int) {
	at := start + offset
	c := ^fold(sum(f[start:], 0))
	if c == 0 && at == start+6 && isUDPAt(f, start) {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(f[at:], c)
}

// isUDPAt reports whether the IPv4 frame f carries UDP at offset start.
func isUDPAt(f []byte, start int) bool {
	if frame.Type(f) != frame.TypeIPv4 {
		return false
	}
	ipLen, _, ok := frame.IPv4Lens(f)
	return ok && frame.IPv4Protocol(f) == protoUDP && ethLen+ipLen == start
}
