package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// GVMI trailer sizes (see the package doc).
const (
	gvmiLenDigits = 8
	gvmiCRCBytes  = 4
)

// Trailer is a GVMI's container config as it sits at the end of the file.
type Trailer struct {
	JSON []byte // the config, checksum verified
	// SquashfsEnd is where the trailer starts: the squashfs and its
	// padding are the bytes before it.
	SquashfsEnd int64
}

// ReadTrailer reads the GVMI trailer at the end of r, a file of size
// bytes: the length digits, the JSON and its CRC32. Errors say which part
// is wrong.
func ReadTrailer(r io.ReaderAt, size int64) (Trailer, error) {
	if size < gvmiLenDigits+gvmiCRCBytes {
		return Trailer{}, errors.New("GVMI trailer truncated: the file is too short for a config")
	}
	var digits [gvmiLenDigits]byte
	if _, err := r.ReadAt(digits[:], size-gvmiLenDigits); err != nil {
		return Trailer{}, fmt.Errorf("GVMI trailer: %w", err)
	}
	n := int64(0)
	for _, d := range digits {
		if d < '0' || d > '9' {
			return Trailer{}, fmt.Errorf("GVMI trailer: the config length %q is not 8 decimal digits (bytes after the squashfs that are not a GVMI config)", digits[:])
		}
		n = n*10 + int64(d-'0')
	}
	switch {
	case n == 0:
		return Trailer{}, errors.New("GVMI trailer: the config length is 0")
	case n > maxConfig:
		return Trailer{}, fmt.Errorf("GVMI trailer: the config length %d is over the %d-byte limit", n, maxConfig)
	case n+gvmiLenDigits+gvmiCRCBytes > size:
		return Trailer{}, fmt.Errorf("GVMI trailer: the config length %d does not fit the %d-byte file", n, size)
	}
	buf := make([]byte, gvmiCRCBytes+n)
	start := size - gvmiLenDigits - n - gvmiCRCBytes
	if _, err := r.ReadAt(buf, start); err != nil {
		return Trailer{}, fmt.Errorf("GVMI trailer: %w", err)
	}
	stored := binary.LittleEndian.Uint32(buf)
	js := buf[gvmiCRCBytes:]
	if got := crc32.ChecksumIEEE(js); got != stored {
		return Trailer{}, fmt.Errorf("GVMI config CRC32 mismatch (stored 0x%08x, computed 0x%08x)", stored, got)
	}
	return Trailer{JSON: js, SquashfsEnd: start}, nil
}

// AppendTrailer appends config as a GVMI trailer to squashfs (for tests
// and tools that build a GVMI without gvmkit-build).
func AppendTrailer(squashfs, config []byte) []byte {
	out := binary.LittleEndian.AppendUint32(squashfs, crc32.ChecksumIEEE(config))
	out = append(out, config...)
	return fmt.Appendf(out, "%08d", len(config))
}
