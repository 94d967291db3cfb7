package api

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// stream returns every vector of one direction concatenated, plus the
// offsets where frames end.
func stream(t testing.TB, direction string) (data []byte, ends []int) {
	t.Helper()
	for _, v := range loadVectors(t) {
		if v.Direction == direction {
			data = append(data, v.framed(t)...)
			ends = append(ends, len(data))
		}
	}
	return data, ends
}

func expected(t testing.TB, direction string) []proto.Message {
	t.Helper()
	var want []proto.Message
	for _, v := range loadVectors(t) {
		if v.Direction == direction {
			want = append(want, goldens[v.Name].want)
		}
	}
	return want
}

func readAll(r *Reader, direction string) ([]proto.Message, error) {
	var got []proto.Message
	for {
		var (
			m   proto.Message
			err error
		)
		if direction == toRuntime {
			m, err = r.ReadRequest()
		} else {
			m, err = r.ReadResponse()
		}
		if err != nil {
			return got, err
		}
		got = append(got, m)
	}
}

// chunkReader returns at most the next chunk size from a repeating list per
// Read, so that frames and varints split at every kind of place.
type chunkReader struct {
	data   []byte
	chunks []int
	i      int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.data), c.chunks[c.i%len(c.chunks)])
	c.i++
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func TestReaderStreams(t *testing.T) {
	for _, dir := range []string{toRuntime, toExeUnit} {
		data, _ := stream(t, dir)
		want := expected(t, dir)
		sources := map[string]func() io.Reader{
			"whole":     func() io.Reader { return bytes.NewReader(data) },
			"one-byte":  func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) },
			"half":      func() io.Reader { return iotest.HalfReader(bytes.NewReader(data)) },
			"two-byte":  func() io.Reader { return &chunkReader{data: data, chunks: []int{2}} },
			"data+eof":  func() io.Reader { return iotest.DataErrReader(bytes.NewReader(data)) },
			"irregular": func() io.Reader { return &chunkReader{data: data, chunks: []int{1, 3, 7, 2, 13, 5, 64}} },
		}
		for name, src := range sources {
			t.Run(dir+"/"+name, func(t *testing.T) {
				r := NewReader(src(), 0)
				got, err := readAll(r, dir)
				if err != io.EOF {
					t.Fatalf("stream ended with %v, want io.EOF", err)
				}
				if len(got) != len(want) {
					t.Fatalf("got %d messages, want %d", len(got), len(want))
				}
				for i := range got {
					if !proto.Equal(got[i], want[i]) {
						t.Fatalf("message %d: got %v, want %v", i, got[i], want[i])
					}
				}
				if _, err := r.ReadRequest(); err != io.EOF {
					t.Fatalf("read after EOF: %v", err)
				}
			})
		}
	}
}

// Cutting the stream at every offset: the frames before the cut decode, then
// io.EOF if the cut is on a frame boundary and io.ErrUnexpectedEOF if not.
func TestReaderTruncated(t *testing.T) {
	for _, dir := range []string{toRuntime, toExeUnit} {
		data, ends := stream(t, dir)
		want := expected(t, dir)
		for cut := 0; cut <= len(data); cut++ {
			complete := 0
			for complete < len(ends) && ends[complete] <= cut {
				complete++
			}
			boundary := cut == 0 || (complete > 0 && ends[complete-1] == cut)

			got, err := readAll(NewReader(bytes.NewReader(data[:cut]), 0), dir)
			if len(got) != complete {
				t.Fatalf("%s cut %d: %d messages, want %d", dir, cut, len(got), complete)
			}
			for i := range got {
				if !proto.Equal(got[i], want[i]) {
					t.Fatalf("%s cut %d: message %d = %v", dir, cut, i, got[i])
				}
			}
			switch {
			case boundary && err != io.EOF:
				t.Fatalf("%s cut %d (boundary): %v, want exactly io.EOF", dir, cut, err)
			case !boundary && !errors.Is(err, io.ErrUnexpectedEOF):
				t.Fatalf("%s cut %d (mid-frame): %v, want io.ErrUnexpectedEOF", dir, cut, err)
			}
		}
	}
}

// allocDuring returns the bytes allocated while f runs.
func allocDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestReaderTooLarge(t *testing.T) {
	const limit = 1000
	for _, size := range []uint64{limit + 1, 1 << 31, 1 << 40, 1<<64 - 1} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			framed := protowire.AppendVarint(nil, size)
			framed = append(framed, bytes.Repeat([]byte{0x08}, 64)...)
			var err error
			allocated := allocDuring(func() {
				_, err = NewReader(bytes.NewReader(framed), limit).ReadRequest()
			})
			if !errors.Is(err, ErrMessageTooLarge) {
				t.Fatalf("got %v, want ErrMessageTooLarge", err)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(size)) {
				t.Errorf("error %q does not name the declared size", err)
			}
			if allocated > 1<<20 {
				t.Errorf("allocated %d bytes rejecting a frame", allocated)
			}
		})
	}

	// Exactly the limit is allowed.
	body := make([]byte, 0, limit)
	body = protowire.AppendTag(body, 1, protowire.VarintType)
	body = protowire.AppendVarint(body, 9)
	body = protowire.AppendTag(body, 99, protowire.BytesType)           // unknown field: padding
	body = protowire.AppendBytes(body, make([]byte, limit-len(body)-2)) // 2: length varint
	if len(body) != limit {
		t.Fatalf("test body is %d bytes", len(body))
	}
	framed := append(protowire.AppendVarint(nil, limit), body...)
	m, err := NewReader(bytes.NewReader(framed), limit).ReadRequest()
	if err != nil || m.GetId() != 9 {
		t.Fatalf("frame at the limit: %v, %v", m, err)
	}
}

// A frame that declares a large (allowed) size and then ends must not cost
// the declared size: the body buffer grows only with the bytes received.
func TestReaderDeclaredButMissing(t *testing.T) {
	framed := protowire.AppendVarint(nil, DefaultMaxSize)
	framed = append(framed, "only a few bytes"...)
	var err error
	allocated := allocDuring(func() {
		_, err = NewReader(bytes.NewReader(framed), 0).ReadResponse()
	})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
	if allocated > 1<<20 {
		t.Errorf("allocated %d bytes for a %d-byte input", allocated, len(framed))
	}
}

func TestReaderDefaultLimit(t *testing.T) {
	over := protowire.AppendVarint(nil, DefaultMaxSize+1)
	if _, err := NewReader(bytes.NewReader(over), 0).ReadRequest(); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("DefaultMaxSize+1 with maxSize 0: %v", err)
	}
	at := protowire.AppendVarint(nil, DefaultMaxSize)
	if _, err := NewReader(bytes.NewReader(at), -1).ReadRequest(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("DefaultMaxSize with maxSize -1: %v, want unexpected EOF", err)
	}
}

func TestReaderMalformed(t *testing.T) {
	cases := map[string]string{
		"varint 11 bytes":          "ffffffffffffffffffff01",
		"varint overflows 64 bits": "ffffffffffffffffff02",
		"truncated field":          "0108",
		"field number 0":           "020000",
		"hello not a message":      "0312017f",
		"invalid utf-8 version":    "0512030a01ff",
		"end group without start":  "010c",
		"nested length too long":   "0412020a05",
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			data := mustHex(t, h)
			// A valid frame follows: errors are sticky, it must not be read.
			data = append(data, mustHex(t, "0408066200")...)
			r := NewReader(bytes.NewReader(data), 0)
			_, err := r.ReadRequest()
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
			if _, again := r.ReadRequest(); again != err {
				t.Fatalf("second read: %v, want the same error %v", again, err)
			}
		})
	}

	// The largest 10-byte varint is well-formed, just too large.
	_, err := NewReader(bytes.NewReader(mustHex(t, "ffffffffffffffffff01")), 0).ReadRequest()
	if !errors.Is(err, ErrMessageTooLarge) || errors.Is(err, ErrMalformed) {
		t.Fatalf("2^64-1: %v", err)
	}
}

func TestReaderIOError(t *testing.T) {
	boom := errors.New("boom")
	for _, prefix := range []string{"", "0b08", "0b"} {
		src := io.MultiReader(bytes.NewReader(mustHex(t, prefix)), iotest.ErrReader(boom))
		r := NewReader(src, 0)
		if _, err := r.ReadResponse(); !errors.Is(err, boom) {
			t.Fatalf("prefix %q: got %v, want boom", prefix, err)
		}
	}
}

// A body larger than the bufio buffer and than the first growth step, sent
// a byte at a time, then a small one: both intact.
func TestReaderLargeBody(t *testing.T) {
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	var out bytes.Buffer
	w := NewWriter(&out)
	for _, m := range []*Response{ProcessOutput(1, big, nil), ProcessOutput(2, nil, []byte("x")), ProcessOutput(3, big[:5000], big)} {
		if err := w.WriteResponse(m); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(iotest.HalfReader(&out), 1<<20)
	for i, want := range []*Response{ProcessOutput(1, big, nil), ProcessOutput(2, nil, []byte("x")), ProcessOutput(3, big[:5000], big)} {
		got, err := r.ReadResponse()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("message %d differs", i)
		}
	}
}

func mustHex(t testing.TB, h string) []byte {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatalf("bad hex %q: %v", h, err)
	}
	return b
}

func TestWriterRefusesEmpty(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	for name, write := range map[string]func() error{
		"nil response":   func() error { return w.WriteResponse(nil) },
		"zero response":  func() error { return w.WriteResponse(&Response{}) },
		"reply to id 0":  func() error { return w.WriteResponse(&Response{Id: 0, Event: false}) },
		"nil request":    func() error { return w.WriteRequest(nil) },
		"zero request":   func() error { return w.WriteRequest(&Request{}) },
		"invalid utf-8":  func() error { return w.WriteResponse(ReplyHello(2, "\xff")) },
		"invalid utf-8b": func() error { return w.WriteResponse(RuntimeCounter("\xc3", 1)) },
	} {
		err := write()
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
		if strings.HasPrefix(name, "invalid") == errors.Is(err, ErrEmptyMessage) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if out.Len() != 0 {
		t.Fatalf("refused messages wrote %x", out.Bytes())
	}
	// Refusals are not sticky.
	if err := w.WriteResponse(ReplyKill(5)); err != nil {
		t.Fatal(err)
	}
	if got := out.Bytes(); !bytes.Equal(got, mustHex(t, "0410055a00")) {
		t.Fatalf("wrote %x", got)
	}
}

// Replies to ids the ExeUnit uses (>= 1) and events are never shorter than
// 5 bytes framed, even with every other field at its default.
func TestWriterMinimumFrame(t *testing.T) {
	for _, m := range []*Response{
		ReplyHello(1, ""), ReplyRun(1, 0), ReplyKill(1), ReplyShutdown(1),
		ReplyNetwork(1, UnixStreamEndpoint("/")), ReplyError(1, Response_INTERNAL, "", nil),
		ProcessOutput(0, nil, nil), ProcessExited(0, 0), RuntimeCounter("", 0), RuntimeState("", nil),
	} {
		if n := len(encode(t, m)); n < 5 {
			t.Errorf("%v encodes to %d bytes", m, n)
		}
	}
}

type failWriter struct {
	calls int
	err   error
}

func (f *failWriter) Write(p []byte) (int, error) {
	f.calls++
	return len(p) / 2, f.err
}

func TestWriterErrorSticky(t *testing.T) {
	boom := errors.New("boom")
	f := &failWriter{err: boom}
	w := NewWriter(f)
	err := w.WriteResponse(ReplyKill(5))
	if !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	if err2 := w.WriteResponse(ReplyKill(6)); !errors.Is(err2, boom) || f.calls != 1 {
		t.Fatalf("after a failed write: %v, %d calls", err2, f.calls)
	}
}

// recordWriter keeps every Write call separately.
type recordWriter struct{ calls [][]byte }

func (r *recordWriter) Write(p []byte) (int, error) {
	r.calls = append(r.calls, bytes.Clone(p))
	return len(p), nil
}

func TestWriterOneWritePerFrame(t *testing.T) {
	rec := &recordWriter{}
	w := NewWriter(rec)
	msgs := []*Response{ReplyHello(2, "x"), ProcessOutput(1, make([]byte, 100<<10), nil), ReplyShutdown(3)}
	for _, m := range msgs {
		if err := w.WriteResponse(m); err != nil {
			t.Fatal(err)
		}
	}
	if len(rec.calls) != len(msgs) {
		t.Fatalf("%d Write calls for %d messages", len(rec.calls), len(msgs))
	}
	for i, call := range rec.calls {
		got, err := NewReader(bytes.NewReader(call), 1<<20).ReadResponse()
		if err != nil || !proto.Equal(got, msgs[i]) {
			t.Fatalf("call %d is not exactly frame %d: %v", i, i, err)
		}
	}
}

func TestWriterNoAllocs(t *testing.T) {
	w := NewWriter(io.Discard)
	m := ProcessOutput(7, bytes.Repeat([]byte("output "), 100), nil)
	if allocs := testing.AllocsPerRun(100, func() {
		if err := w.WriteResponse(m); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Fatalf("%v allocations per WriteResponse", allocs)
	}
}

// slowWriter is deliberately not safe for concurrent use and yields in the
// middle of each Write, so that unserialized writers would interleave bytes
// (and trip the race detector).
type slowWriter struct{ buf []byte }

func (s *slowWriter) Write(p []byte) (int, error) {
	for i := 0; i < len(p); i += 7 {
		s.buf = append(s.buf, p[i:min(i+7, len(p))]...)
		runtime.Gosched()
	}
	return len(p), nil
}

func TestWriterConcurrent(t *testing.T) {
	const (
		writers = 16
		each    = 100
	)
	sink := &slowWriter{}
	w := NewWriter(sink)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for seq := range each {
				var m *Response
				if seq%3 == 0 {
					m = ReplyRun(uint64(g)<<32|uint64(seq), uint64(seq))
				} else {
					payload := bytes.Repeat([]byte{byte(g), byte(seq)}, rng.IntN(3000))
					m = ProcessOutput(uint64(g), payload, []byte(fmt.Sprint(seq)))
				}
				if err := w.WriteResponse(m); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()

	next := make([]int, writers)
	r := NewReader(bytes.NewReader(sink.buf), 0)
	for {
		m, err := r.ReadResponse()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("decoding the interleaved stream: %v", err)
		}
		var g, seq int
		if run := m.GetRun(); run != nil {
			g, seq = int(m.GetId()>>32), int(m.GetId()&0xffffffff)
			if run.GetPid() != uint64(seq) {
				t.Fatalf("run reply %v corrupted", m)
			}
		} else {
			st := m.GetStatus()
			g = int(st.GetPid())
			if _, err := fmt.Sscan(string(st.GetStderr()), &seq); err != nil {
				t.Fatalf("bad event %v", m)
			}
			for i := 0; i < len(st.GetStdout()); i += 2 {
				if st.GetStdout()[i] != byte(g) || st.GetStdout()[i+1] != byte(seq) {
					t.Fatalf("payload of %d/%d corrupted at %d", g, seq, i)
				}
			}
		}
		if g >= writers || seq != next[g] {
			t.Fatalf("frame %d/%d out of order (want seq %d)", g, seq, next[min(g, writers-1)])
		}
		next[g]++
	}
	for g, n := range next {
		if n != each {
			t.Fatalf("writer %d: %d frames decoded, want %d", g, n, each)
		}
	}
}
