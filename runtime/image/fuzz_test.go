package image

import (
	"bytes"
	"testing"
)

// FuzzTrailer: any bytes give a trailer whose JSON has its checksum and
// fits the file, or an error; never a panic.
func FuzzTrailer(f *testing.F) {
	f.Add(AppendTrailer(make([]byte, 4096), []byte(`{"Env":["A=1"],"User":"0"}`)))
	f.Add([]byte("0000000000000000"))
	f.Add([]byte("xxxx{}00000002"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := ReadTrailer(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if tr.SquashfsEnd < 0 || tr.SquashfsEnd+4+int64(len(tr.JSON))+8 != int64(len(b)) {
			t.Fatalf("trailer %d+%d does not end the %d-byte file", tr.SquashfsEnd, len(tr.JSON), len(b))
		}
		if !bytes.Equal(AppendTrailer(append([]byte(nil), b[:tr.SquashfsEnd]...), tr.JSON), b) {
			t.Fatal("trailer does not round-trip")
		}
		_, _ = parseConfig("GVMI config", tr.JSON)
	})
}

// FuzzSuperblock: an accepted superblock describes a squashfs that fits
// the file.
func FuzzSuperblock(f *testing.F) {
	sb := make([]byte, 4096)
	copy(sb, "hsqs")
	sb[12], sb[13] = 0, 0x02 // block size 128 KiB
	sb[14] = 0
	sb[20] = 1  // gzip
	sb[22] = 17 // block_log
	sb[28] = 4  // version 4.0
	sb[40], sb[41] = 0, 0x10
	sb[64] = 96
	sb[72] = 200
	f.Add(sb)
	f.Add([]byte("hsqs"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ReadSuperblock(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if s.BytesUsed < superblockSize || s.BytesUsed > int64(len(b)) {
			t.Fatalf("bytes_used %d outside the %d-byte file", s.BytesUsed, len(b))
		}
		_, _ = openSquashfs("fuzz", bytes.NewReader(b), int64(len(b)))
	})
}
