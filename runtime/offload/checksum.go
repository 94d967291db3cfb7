package offload

import (
	"encoding/binary"
	"math/bits"
)

// sum adds b to the one's-complement accumulator acc as a sequence of
// big-endian 16-bit words (a trailing odd byte is padded with zero). It adds
// 64-bit words with end-around carry: 2^16 ≡ 1 modulo 2^16-1, so folding
// the 64-bit sum at the end gives the same result as adding 16-bit words.
func sum(b []byte, acc uint64) uint64 {
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	var tail uint64
	if len(b) >= 4 {
		tail = uint64(binary.BigEndian.Uint32(b)) << 32
		b = b[4:]
	}
	if len(b) >= 2 {
		tail |= uint64(binary.BigEndian.Uint16(b)) << 16
		b = b[2:]
	}
	if len(b) == 1 {
		tail |= uint64(b[0]) << 8
	}
	acc, c = bits.Add64(acc, tail, c)
	acc, c = bits.Add64(acc, 0, c)
	return acc + c // no carry is left after adding one to a wrapped sum
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
