package api

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"google.golang.org/protobuf/proto"
)

// fuzzMaxSize keeps every accepted body small, so memory per input stays
// bounded whatever length a frame declares.
const fuzzMaxSize = 1 << 16

// The seed corpora live in testdata/fuzz/FuzzRead{Request,Response}: every
// vector, both directions' vectors concatenated, and framing edge cases. The
// vectors are added here too, so new ones become seeds automatically.
func FuzzReadRequest(f *testing.F)  { fuzzRead(f, toRuntime) }
func FuzzReadResponse(f *testing.F) { fuzzRead(f, toExeUnit) }

func fuzzRead(f *testing.F, direction string) {
	for _, v := range loadVectors(f) {
		f.Add(v.framed(f))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := readAll(NewReader(bytes.NewReader(data), fuzzMaxSize), direction)
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) &&
			!errors.Is(err, ErrMessageTooLarge) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("unclassified error from an in-memory stream: %v", err)
		}

		// Chunking must not change the outcome.
		chunked, cerr := readAll(NewReader(iotest.OneByteReader(bytes.NewReader(data)), fuzzMaxSize), direction)
		if len(chunked) != len(msgs) || cerr.Error() != err.Error() {
			t.Fatalf("whole input: %d messages, %v; one byte at a time: %d messages, %v",
				len(msgs), err, len(chunked), cerr)
		}
		for i := range msgs {
			if !proto.Equal(msgs[i], chunked[i]) {
				t.Fatalf("message %d differs when read byte by byte", i)
			}
		}

		// Whatever decoded re-encodes to something that decodes the same.
		for i, m := range msgs {
			var out bytes.Buffer
			w := NewWriter(&out)
			var werr error
			if req, ok := m.(*Request); ok {
				werr = w.WriteRequest(req)
			} else {
				werr = w.WriteResponse(m.(*Response))
			}
			if proto.Size(m) == 0 {
				if !errors.Is(werr, ErrEmptyMessage) || out.Len() != 0 {
					t.Fatalf("message %d is empty but Write gave %v and %d bytes", i, werr, out.Len())
				}
				continue
			}
			if werr != nil {
				t.Fatalf("message %d decoded but does not encode: %v", i, werr)
			}
			// Re-encoding may grow (map entries get explicit keys), so read
			// it back without the fuzz limit.
			back, rerr := readAll(NewReader(&out, 0), direction)
			if rerr != io.EOF || len(back) != 1 || !proto.Equal(back[0], m) {
				t.Fatalf("message %d: %v re-decoded as %v (%v)", i, m, back, rerr)
			}
		}
	})
}
