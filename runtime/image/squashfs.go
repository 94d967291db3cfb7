package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

const squashfsMagic = "hsqs"

// superblockSize is the length of a squashfs 4.0 superblock.
const superblockSize = 96

// Superblock is what gvpn reads of a squashfs superblock (all little
// endian, squashfs 4.0).
type Superblock struct {
	BlockSize   uint32 // data block size, a power of two from 4 KiB to 1 MiB
	Compression uint16 // 1 gzip, 2 lzma, 3 lzo, 4 xz, 5 lz4, 6 zstd
	BytesUsed   int64  // the file system's length in bytes
}

// ReadSuperblock reads and checks the superblock at the start of r, a file
// of size bytes. A squashfs whose bytes_used lies beyond the end of the
// file (a truncated download) is refused.
func ReadSuperblock(r io.ReaderAt, size int64) (Superblock, error) {
	var b [superblockSize]byte
	if size < superblockSize {
		return Superblock{}, fmt.Errorf("squashfs truncated: %d bytes, shorter than its superblock", size)
	}
	if _, err := r.ReadAt(b[:], 0); err != nil {
		return Superblock{}, fmt.Errorf("squashfs superblock: %w", err)
	}
	if string(b[:4]) != squashfsMagic {
		return Superblock{}, errors.New("squashfs: bad magic")
	}
	le := binary.LittleEndian
	sb := Superblock{
		BlockSize:   le.Uint32(b[12:]),
		Compression: le.Uint16(b[20:]),
	}
	blockLog := le.Uint16(b[22:])
	major, minor := le.Uint16(b[28:]), le.Uint16(b[30:])
	used := le.Uint64(b[40:])
	inodeTable, dirTable := le.Uint64(b[64:]), le.Uint64(b[72:])
	switch {
	case major != 4 || minor != 0:
		return Superblock{}, fmt.Errorf("squashfs version %d.%d, not 4.0", major, minor)
	case sb.BlockSize < 4096 || sb.BlockSize > 1<<20 || bits.OnesCount32(sb.BlockSize) != 1:
		return Superblock{}, fmt.Errorf("squashfs block size %d is not a power of two from 4096 to 1048576", sb.BlockSize)
	case uint32(1)<<(blockLog&31) != sb.BlockSize:
		return Superblock{}, fmt.Errorf("squashfs block_log %d does not match block size %d", blockLog, sb.BlockSize)
	case sb.Compression < 1 || sb.Compression > 6:
		return Superblock{}, fmt.Errorf("squashfs compression id %d is unknown", sb.Compression)
	case used < superblockSize || used > 1<<62:
		return Superblock{}, fmt.Errorf("squashfs bytes_used %d is impossible", used)
	case used > uint64(size):
		return Superblock{}, fmt.Errorf("squashfs truncated: the superblock says %d bytes, the file has %d", used, size)
	case inodeTable >= used || dirTable >= used || inodeTable < superblockSize:
		return Superblock{}, fmt.Errorf("squashfs tables (inodes at %d, directories at %d) lie outside its %d bytes", inodeTable, dirTable, used)
	}
	sb.BytesUsed = int64(used)
	return sb, nil
}
