package offload

import "encoding/binary"

// sum adds b to the one's-complement accumulator acc as a sequence of
// big-endian 16-bit words (a trailing odd byte is padded with zero). It
// reads 8 bytes at a time: 2^16 ≡ 1 modulo 2^16-1, so adding 32-bit halves
// into a 64-bit accumulator and folding at the end gives the same result.
func sum(b []byte, acc uint64) uint64 {
	for len(b) >= 32 {
		x0 := binary.BigEndian.Uint64(b)
		x1 := binary.BigEndian.Uint64(b[8:])
		x2 := binary.BigEndian.Uint64(b[16:])
		x3 := binary.BigEndian.Uint64(b[24:])
		acc += x0>>32 + x0&0xffffffff + x1>>32 + x1&0xffffffff +
			x2>>32 + x2&0xffffffff + x3>>32 + x3&0xffffffff
		b = b[32:]
	}
	for len(b) >= 8 {
		x := binary.BigEndian.Uint64(b)
		acc += x>>32 + x&0xffffffff
		b = b[8:]
	}
	if len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// fold reduces an accumulator to 16 bits with end-around carries.
func fold(acc uint64) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}

// pseudoSum is the accumulator of the IPv4 pseudo-header of a transport
// segment of length bytes: the addresses at ip[12:20], the protocol.
func pseudoSum(ip []byte, proto uint8, length int) uint64 {
	return sum(ip[12:20], uint64(proto)+uint64(length))
}

// ipv4HeaderChecksum returns the checksum of the IPv4 header h, whose own
// checksum field is taken as zero.
func ipv4HeaderChecksum(h []byte) uint16 {
	acc := sum(h[:10], 0)
	acc = sum(h[12:], acc)
	return ^fold(acc)
}
