package offload

import (
	"bytes"
	"encoding/binary"

	"github.com/gvpn/gvpn/runtime/frame"
	"github.com/gvpn/gvpn/runtime/link"
)

// MaxPacket is the largest packet (virtio-net header + Ethernet frame) of
// a superframe: an IPv4 packet of 65535 bytes.
const MaxPacket = VNetHdrLen + ethLen + maxIPv4Len

// maxGlued is the largest packet, header included, the Coalescer builds:
// one that fits the frame buffers of every link (link.MaxFrame), so that
// a superframe sent over the bridge fits the agent's pump's buffers.
const maxGlued = link.MaxFrame

// Coalescer glues consecutive in-order TCP/IPv4 segments of one flow into
// superframes for a TAP that takes virtio-net headers (TSO4 on the
// receiving side: the kernel then handles a 64 KiB packet as one, like a
// segment that went through its own GRO).
//
// Frames are only ever glued to the frame just before them in the batch, so
// nothing is reordered. A segment joins the superframe before it only when
// splitting that superframe again gives back exactly the frames that went
// in: same addresses, IPv4 header (its identification one more), TCP ports,
// acknowledgement, window and options; its sequence number where the last
// segment's payload ends; a payload no larger than the first segment's,
// after a segment of exactly that size; flags ACK only (PSH ends the
// superframe); both checksums valid. Anything else — ARP, UDP, SYN/FIN,
// bad checksums, padded frames — is passed on unchanged, alone.
//
// A Coalescer owns the buffers of the superframes it builds (Coalesce
// returns views of them) and allocates nothing after NewCoalescer.
type Coalescer struct {
	bufs [][]byte // superframe buffers, MaxPacket bytes each
	used int      // superframe buffers taken in this call
	pkts [][]byte
	ends []int

	// The caller's frames during a Coalesce call.
	in     [][]byte
	offset int

	// alone makes every frame go out alone (SetAlone).
	alone bool

	// The run being built: its first frame in the caller's buffers
	// (start) and how many frames it has (count).
	open    bool
	start   int
	end     int // index after the run's last frame
	count   int
	sf      []byte // the superframe being built; nil while count == 1
	mss     int    // payload of the first segment
	lastLen int    // payload of the last segment
	lastSeq uint32 // sequence number after the last segment
	lastID  uint16
	hdrLen  int // Ethernet + IP + TCP header bytes of the run
	ipLen   int
	lastPSH bool
}

// NewCoalescer returns a Coalescer that builds up to superframes
// superframes per Coalesce call.
func NewCoalescer(superframes int) *Coalescer {
	c := &Coalescer{bufs: make([][]byte, max(superframes, 1))}
	for i := range c.bufs {
		c.bufs[i] = make([]byte, 0, MaxPacket)
	}
	return c
}

// Coalesce turns the frames bufs[i][offset:] into packets for the TAP, each
// starting with a virtio-net header, in order. offset must be at least
// VNetHdrLen: a frame that goes out alone gets its header written into the
// bytes just before it, in the caller's headroom, and is not copied. Empty
// frames are skipped (they are never sent).
//
// It returns the packets; for each, the index in bufs just after the last
// frame it carries (so writing packets[:k] wrote bufs[:ends[k-1]]); and how
// many frames it consumed: fewer than len(bufs) when its superframe buffers
// ran out (call again with the rest after writing the packets). The returned
// slices are valid until the next call.
func (c *Coalescer) Coalesce(bufs [][]byte, offset int) (pkts [][]byte, ends []int, consumed int) {
	c.pkts, c.ends, c.used, c.open = c.pkts[:0], c.ends[:0], 0, false
	c.in, c.offset = bufs, offset
	defer func() { c.in = nil }()
	for i, b := range bufs {
		f := b[offset:]
		if len(f) == 0 {
			continue
		}
		if c.open && c.tryAppend(f) {
			c.end = i + 1
			continue
		}
		if c.open {
			c.flush()
		}
		if c.used == len(c.bufs) && mayCoalesce(f) {
			// No superframe buffer left for a run that might grow.
			return c.pkts, c.ends, i
		}
		if c.alone || !c.startRun(i) {
			c.single(b, i)
		}
	}
	if c.open {
		c.flush()
	}
	return c.pkts, c.ends, len(bufs)
}

// SetAlone makes Coalesce glue nothing: every frame goes out alone behind
// a header that asks for nothing, for a receiver that cannot take
// superframes. It is for the goroutine that calls Coalesce.
func (c *Coalescer) SetAlone(alone bool) { c.alone = alone }

// single emits frame b[offset:] as it is, behind a header that asks for
// nothing.
func (c *Coalescer) single(b []byte, i int) {
	p := b[c.offset-VNetHdrLen:]
	VNetHdr{}.Encode(p)
	c.pkts = append(c.pkts, p)
	c.ends = append(c.ends, i+1)
}

// mayCoalesce reports cheaply whether f could start a run.
func mayCoalesce(f []byte) bool {
	return len(f) >= ethLen+ipv4MinLen+tcpMinLen && frame.Type(f) == frame.TypeIPv4 && frame.IPv4Protocol(f) == protoTCP
}

// tcpSegment checks frame f for the properties every frame of a run needs
// and returns its header lengths and payload length.
func tcpSegment(f []byte) (ipLen, hdrLen, payload int, ok bool) {
	if !mayCoalesce(f) {
		return 0, 0, 0, false
	}
	ipLen, totLen, ok := frame.IPv4Lens(f)
	ip := f[ethLen:]
	if !ok || totLen != len(ip) || frame.IPv4Fragment(f) || totLen < ipLen+tcpMinLen {
		return 0, 0, 0, false
	}
	tcp := ip[ipLen:]
	doff := int(tcp[12]>>4) * 4
	if doff < tcpMinLen || ipLen+doff > totLen {
		return 0, 0, 0, false
	}
	if tcp[13]&^tcpFlagPSH != tcpFlagACK {
		return 0, 0, 0, false
	}
	payload = totLen - ipLen - doff
	if payload == 0 {
		return 0, 0, 0, false
	}
	// Checksums last: they cost a pass over the frame.
	if fold(sum(ip[:ipLen], 0)) != 0xffff {
		return 0, 0, 0, false
	}
	if fold(sum(tcp, pseudoSum(ip, protoTCP, len(tcp)))) != 0xffff {
		return 0, 0, 0, false
	}
	return ipLen, ethLen + ipLen + doff, payload, true
}

// startRun opens a run with frame i when it is a segment that can be
// coalesced; the frame stays in the caller's buffer until a second one
// joins.
func (c *Coalescer) startRun(i int) bool {
	f := c.in[i][c.offset:]
	ipLen, hdrLen, payload, ok := tcpSegment(f)
	// A run's gso_size is its first segment's payload: below MinGSOSize
	// the Splitter at the other end would refuse it.
	if !ok || f[ethLen+ipLen+13]&tcpFlagPSH != 0 || payload < MinGSOSize {
		return false
	}
	ip := f[ethLen:]
	c.open, c.start, c.end, c.count, c.sf = true, i, i+1, 1, nil
	c.ipLen, c.hdrLen, c.mss, c.lastLen = ipLen, hdrLen, payload, payload
	c.lastSeq = binary.BigEndian.Uint32(ip[ipLen+4:]) + uint32(payload)
	c.lastID = frame.IPv4ID(f)
	c.lastPSH = false
	return true
}

// first returns the run's first frame: in the superframe once there is
// one, else still in the caller's buffer.
func (c *Coalescer) first() []byte {
	if c.sf != nil {
		return c.sf[VNetHdrLen:]
	}
	return c.in[c.start][c.offset:]
}

// tryAppend adds f to the open run when the rules allow it.
func (c *Coalescer) tryAppend(f []byte) bool {
	if c.lastPSH || c.lastLen != c.mss {
		return false
	}
	ipLen, hdrLen, payload, ok := tcpSegment(f)
	if !ok || ipLen != c.ipLen || hdrLen != c.hdrLen || payload > c.mss {
		return false
	}
	first := c.first() // the superframe so far, once there is one
	if VNetHdrLen+len(first)+payload > maxGlued {
		return false
	}
	ip, fip := f[ethLen:], first[ethLen:]
	// Ethernet header; version/IHL, TOS; flags+fragment, TTL, protocol;
	// addresses and options. The identification must be the next one.
	if !bytes.Equal(f[:ethLen], first[:ethLen]) || ip[0] != fip[0] || ip[1] != fip[1] ||
		!bytes.Equal(ip[6:10], fip[6:10]) || !bytes.Equal(ip[12:ipLen], fip[12:ipLen]) ||
		frame.IPv4ID(f) != c.lastID+1 {
		return false
	}
	tcp, ftcp := ip[ipLen:], fip[ipLen:]
	// Ports; sequence; acknowledgement and data offset; window; options.
	// The flag byte may differ only by PSH, which tcpSegment checked.
	tcpHdr := hdrLen - ethLen - ipLen
	if !bytes.Equal(tcp[0:4], ftcp[0:4]) || binary.BigEndian.Uint32(tcp[4:]) != c.lastSeq ||
		!bytes.Equal(tcp[8:13], ftcp[8:13]) || !bytes.Equal(tcp[14:16], ftcp[14:16]) ||
		!bytes.Equal(tcp[tcpMinLen:tcpHdr], ftcp[tcpMinLen:tcpHdr]) {
		return false
	}
	if c.sf == nil {
		if c.used == len(c.bufs) {
			return false
		}
		c.sf = append(c.bufs[c.used][:VNetHdrLen], first...)
		c.used++
	}
	c.sf = append(c.sf, f[hdrLen:]...)
	c.count++
	c.lastLen = payload
	c.lastSeq += uint32(payload)
	c.lastID++
	c.lastPSH = tcp[13]&tcpFlagPSH != 0
	return true
}

// flush emits the open run: its first frame alone when nothing joined it,
// else the superframe with its headers fixed up the way the kernel's GRO
// leaves them (total length, header checksum, PSH from the last segment,
// the TCP checksum partial: the pseudo-header sum, finished by the kernel).
func (c *Coalescer) flush() {
	c.open = false
	if c.sf == nil {
		c.single(c.in[c.start], c.start)
		return
	}
	f := c.sf[VNetHdrLen:]
	ip := f[ethLen:]
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ipv4HeaderChecksum(ip[:c.ipLen]))
	tcp := ip[c.ipLen:]
	if c.lastPSH {
		tcp[13] |= tcpFlagPSH
	}
	binary.BigEndian.PutUint16(tcp[16:], fold(pseudoSum(ip, protoTCP, len(tcp))))
	VNetHdr{
		Flags:      FlagNeedsCsum,
		GSOType:    GSOTCPv4,
		HdrLen:     uint16(c.hdrLen),
		GSOSize:    uint16(c.mss),
		CsumStart:  uint16(ethLen + c.ipLen),
		CsumOffset: 16,
	}.Encode(c.sf)
	c.pkts = append(c.pkts, c.sf)
	c.ends = append(c.ends, c.end)
	c.sf = nil
}
