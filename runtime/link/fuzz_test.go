package link

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// readerConn turns a byte slice into the read side of a net.Conn, so the
// fuzzer drives Stream.Read without sockets.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(b []byte) (int, error) { return c.r.Read(b) }
func (c readerConn) Close() error               { return nil }

// FuzzStreamRead decodes arbitrary bytes with both prefixes, and with a
// header (SetHeader, bit 1 of which) on the u32 one, and small buffers: no
// panic, no allocation beyond the fixed buffers, sizes that add up to no
// more than the input (plus the zero header a plain frame is given), and
// termination with an error at the end.
func FuzzStreamRead(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0}, uint8(0))
	f.Add([]byte{0, 0, 0, 1, 0xaa}, uint8(1))
	f.Add([]byte{0xff, 0xff, 0, 1, 2, 3}, uint8(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, uint8(1))
	f.Add([]byte{0x00, 0x00, 0xff, 0xff, 1}, uint8(1))
	f.Add([]byte{0x01, 0x00, 0x07, 0x02, 0x00, 8, 9}, uint8(0))
	f.Add([]byte{0x80, 0, 0, 12, 1, 1, 0x42, 0, 0x90, 0x04, 0x22, 0, 0x10, 0, 0xaa, 0xbb}, uint8(3))
	f.Add([]byte{0x80, 0, 0, 3, 1, 2, 3, 0, 0, 0, 2, 7, 7}, uint8(3))
	f.Add([]byte{0x80, 0x10, 0, 1, 0}, uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		p := PrefixU16NE
		if which&1 == 1 {
			p = PrefixU32BE
		}
		s := NewStream(readerConn{r: bytes.NewReader(data)}, p)
		pad := 0
		if which&3 == 3 {
			pad = 10
			if err := s.SetHeader(pad); err != nil {
				t.Fatal(err)
			}
		}
		bufs := make([][]byte, 3)
		for i := range bufs {
			bufs[i] = make([]byte, Headroom+32)
		}
		sizes := make([]int, 3)
		total := 0
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			n, err := s.Read(bufs, sizes, Headroom)
			for i := range n {
				if sizes[i] < 0 {
					t.Fatalf("negative size %d", sizes[i])
				}
				total += p.Size() + sizes[i] - pad
			}
			if total > len(data) {
				t.Fatalf("frames add up to %d bytes from %d bytes of input", total, len(data))
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrDesync) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if n == 0 {
				t.Fatal("Read returned no frame and no error")
			}
		}
		t.Fatal("decoder did not terminate")
	})
}
