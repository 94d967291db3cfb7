package api

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// DefaultMaxSize is the body size limit NewReader uses when given none. Real
// control messages are a few hundred bytes; command output events are the
// only large ones.
const DefaultMaxSize = 16 << 20

const (
	// maxVarintLen is the longest protobuf varint (a 64-bit value).
	maxVarintLen = 10
	// minGrow is the first buffer size when a body does not fit the current
	// one; the buffer then doubles while bytes keep arriving.
	minGrow = 4 << 10
	// keepBuf is the largest scratch buffer a Reader or Writer keeps between
	// messages, so that one large message does not pin its memory for good.
	keepBuf = 64 << 10
)

var (
	// ErrMessageTooLarge means a frame declared a body longer than the
	// Reader's limit. Nothing of that size was allocated. The error names
	// the declared size.
	ErrMessageTooLarge = errors.New("api: message too large")

	// ErrMalformed means the bytes are not a frame of the expected message:
	// a length varint longer than 64 bits, or a body that is not valid
	// protobuf for the message (bad tag, truncated field, wrong wire type,
	// invalid UTF-8 in a string). The protobuf error, if any, is wrapped too.
	ErrMalformed = errors.New("api: malformed message")

	// ErrEmptyMessage is returned by Writer for a message that encodes to
	// zero bytes. The ExeUnit's decoder waits for at least 4 buffered bytes
	// before it looks at a frame, so a lone 1-byte frame would sit unread,
	// and an all-default Response is not a valid reply or event anyway.
	ErrEmptyMessage = errors.New("api: refusing to write an empty message")
)

// Reader decodes varint-delimited messages from a byte stream. It buffers its
// input, so nothing else may read the underlying reader afterwards.
//
// A Reader is not safe for concurrent use. Errors are sticky: once a read
// fails, every later read returns the same error, because after a framing
// fault the stream position is unknown (the ExeUnit and the SDK's server also
// stop at the first decode error).
type Reader struct {
	in      *bufio.Reader
	maxSize int
	buf     []byte
	err     error
}

// NewReader returns a Reader on r that rejects bodies longer than maxSize
// bytes with ErrMessageTooLarge. maxSize <= 0 means DefaultMaxSize.
func NewReader(r io.Reader, maxSize int) *Reader {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	return &Reader{in: bufio.NewReader(r), maxSize: maxSize}
}

// ReadRequest reads the next frame as a Request (the runtime's side).
//
// It returns io.EOF, unwrapped, when the stream ends exactly between frames;
// an error wrapping io.ErrUnexpectedEOF when it ends inside one; an error
// wrapping ErrMessageTooLarge or ErrMalformed for a bad frame; and any other
// read error wrapped.
func (r *Reader) ReadRequest() (*Request, error) {
	m := new(Request)
	if err := r.read(m, "request"); err != nil {
		return nil, err
	}
	return m, nil
}

// ReadResponse reads the next frame as a Response (the ExeUnit's side, for
// tests and ExeUnit stand-ins). Errors are as for ReadRequest.
func (r *Reader) ReadResponse() (*Response, error) {
	m := new(Response)
	if err := r.read(m, "response"); err != nil {
		return nil, err
	}
	return m, nil
}

func (r *Reader) read(m proto.Message, kind string) error {
	if r.err != nil {
		return r.err
	}
	body, err := r.readFrame()
	if err == nil {
		if uerr := proto.Unmarshal(body, m); uerr != nil {
			err = fmt.Errorf("%w: %d-byte %s: %w", ErrMalformed, len(body), kind, uerr)
		}
	}
	if cap(r.buf) > keepBuf {
		r.buf = nil
	}
	if err != nil {
		r.err = err
	}
	return err
}

// readFrame returns the next frame's body. The slice is valid until the next
// call; proto.Unmarshal copies what it keeps.
func (r *Reader) readFrame() ([]byte, error) {
	var size uint64
	for i := 0; ; i++ {
		b, err := r.in.ReadByte()
		if err != nil {
			if err == io.EOF {
				if i == 0 {
					return nil, io.EOF
				}
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("api: reading frame length: %w", err)
		}
		// The tenth byte holds only bit 63; anything more overflows 64 bits.
		if i == maxVarintLen-1 && b > 1 {
			return nil, fmt.Errorf("%w: frame length varint longer than 64 bits", ErrMalformed)
		}
		size |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			break
		}
	}
	if size > uint64(r.maxSize) {
		return nil, fmt.Errorf("%w: frame declares %d bytes, limit %d", ErrMessageTooLarge, size, r.maxSize)
	}

	// Grow the buffer only as bytes actually arrive, so that a frame that
	// declares a large size and then ends costs no more than it delivered.
	n := int(size)
	buf := r.buf[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(n, max(2*cap(buf), minGrow)))
			copy(grown, buf)
			buf = grown
		}
		end := min(n, cap(buf))
		got, err := io.ReadFull(r.in, buf[len(buf):end])
		buf = buf[:len(buf)+got]
		if err != nil {
			r.buf = buf
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("api: reading frame body (%d of %d bytes): %w", len(buf), n, err)
		}
	}
	r.buf = buf
	return buf, nil
}

// marshalOptions makes map fields (hosts, context) come out in a stable
// order, so identical messages always give identical bytes.
var marshalOptions = proto.MarshalOptions{Deterministic: true}

// Writer encodes varint-delimited messages onto a byte stream.
//
// It is safe for concurrent use: each message goes out as one Write call of
// length prefix plus body under a mutex, so frames from different goroutines
// never interleave. A failed Write may have left part of a frame on the
// stream, so write errors are sticky; encoding errors (a message that cannot
// be marshalled or is empty) write nothing and are not.
//
// Every reply built with the constructors in this package encodes to at least
// 5 bytes framed when its id is at least 1 (the ExeUnit's ids start at 2), so
// the ExeUnit's 4-byte minimum (docs/protocol.md §3) never delays one.
type Writer struct {
	mu  sync.Mutex
	out io.Writer
	buf []byte
	err error
}

// NewWriter returns a Writer on w. It does not buffer: each message is
// written to w before Write* returns.
func NewWriter(w io.Writer) *Writer {
	return &Writer{out: w}
}

// WriteResponse writes one Response frame. It fails with ErrEmptyMessage if
// resp encodes to nothing (nil, or every field at its default).
func (w *Writer) WriteResponse(resp *Response) error {
	return w.write(resp, "response")
}

// WriteRequest writes one Request frame (for tests and ExeUnit stand-ins).
// Empty requests are refused like empty responses: the ExeUnit's codec is
// the same in both directions.
func (w *Writer) WriteRequest(req *Request) error {
	return w.write(req, "request")
}

func (w *Writer) write(m proto.Message, kind string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}

	// Marshal behind room for the longest prefix, then put the prefix right
	// in front of the body: one buffer, one Write, no second size pass.
	if cap(w.buf) < maxVarintLen {
		w.buf = make([]byte, 0, 512)
	}
	buf, err := marshalOptions.MarshalAppend(w.buf[:maxVarintLen], m)
	if cap(buf) <= keepBuf {
		w.buf = buf[:0]
	}
	if err != nil {
		return fmt.Errorf("api: encoding %s: %w", kind, err)
	}
	size := len(buf) - maxVarintLen
	if size == 0 {
		return fmt.Errorf("%w (%s)", ErrEmptyMessage, kind)
	}
	start := maxVarintLen - protowire.SizeVarint(uint64(size))
	protowire.AppendVarint(buf[start:start], uint64(size))

	if _, err := w.out.Write(buf[start:]); err != nil {
		w.err = fmt.Errorf("api: writing %s frame: %w", kind, err)
		return w.err
	}
	return nil
}
