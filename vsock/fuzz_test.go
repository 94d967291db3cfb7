package vsock

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/link/linktest"
)

// FuzzControlReceive feeds arbitrary bytes to a control connection: no
// panic; every error is a ProtocolError or an end of stream; memory
// bounded by the input (checked in TestControlOversize, enforced here by
// the fuzzer's own limits); and every accepted message is stable under
// re-encoding.
func FuzzControlReceive(f *testing.F) {
	for _, m := range allMessages {
		b, _ := AppendMessage(nil, m)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0x10, 0, 1, '{'})
	f.Add(frameMsg(`{"type":"reboot"}`))
	f.Add(frameMsg(`{"type":"kill","id":"x"}`))
	f.Add(append(frameMsg(`{"type":"shutdown","id":1}`), 0, 0, 0, 9, '{'))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := NewControlConn(linktest.ReaderConn(bytes.NewReader(data)))
		consumed := 0
		for {
			m, err := c.Receive()
			if err != nil {
				var pe *ProtocolError
				switch {
				case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, ErrMessageTooLarge):
					return
				case errors.As(err, &pe) && (errors.Is(err, ErrBadMessage) || errors.Is(err, ErrUnknownType)):
					consumed += 4 + int(pe.Length)
					if consumed > len(data) {
						t.Fatalf("error claims %d bytes of %d", consumed, len(data))
					}
					continue // framing intact
				default:
					t.Fatalf("unexpected error %T %v", err, err)
				}
			}
			once, err := AppendMessage(nil, m)
			if err != nil {
				t.Fatalf("accepted message %#v does not encode: %v", m, err)
			}
			back, err := DecodeMessage(once[4:])
			if err != nil {
				t.Fatalf("re-encoded %q does not decode: %v", once, err)
			}
			twice, _ := AppendMessage(nil, back)
			if !bytes.Equal(once, twice) {
				t.Fatalf("unstable encoding:\n%q\n%q", once, twice)
			}
		}
	})
}

// FuzzBridgeData drives a bridge data link's Read over arbitrary bytes: no
// panic, frame sizes that add up to no more than the input, memory limited
// to the fixed buffers, and termination with an end-of-stream or desync
// error.
func FuzzBridgeData(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0})                                       // length 0
	f.Add([]byte{0, 0, 0, 1, 0xaa})                                 // length 1
	f.Add(append([]byte{0, 0, 0xff, 0xff}, make([]byte, 65535)...)) // length 65535, whole
	f.Add([]byte{0, 0, 0xff, 0xff, 1, 2, 3})                        // length 65535, cut short
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})                           // length 2^32-1
	f.Add([]byte{0, 0x10, 0, 0, 1})                                 // exactly link.MaxDeclared
	f.Add([]byte{0, 0x10, 0, 1})                                    // one above it
	f.Add(append(append([]byte{0, 0, 0, 2, 1, 2}, 0, 0, 0, 3, 4, 5, 6), 0, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		l := DataLink(linktest.ReaderConn(bytes.NewReader(data)))
		defer l.Close()
		bufs := [][]byte{make([]byte, link.Headroom+1514), make([]byte, link.Headroom+64), make([]byte, link.BufSize)}
		sizes := make([]int, len(bufs))
		total := 0
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			n, err := l.Read(bufs, sizes, link.Headroom)
			for i := range n {
				if sizes[i] < 0 {
					t.Fatalf("negative size %d", sizes[i])
				}
				total += 4 + sizes[i]
			}
			if total > len(data) {
				t.Fatalf("frames add up to %d bytes of %d input bytes", total, len(data))
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, link.ErrDesync) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if n == 0 {
				t.Fatal("Read returned neither a frame nor an error")
			}
		}
		t.Fatal("decoder did not terminate")
	})
}
