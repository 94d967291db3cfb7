package link

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Prefix is the length prefix a stream link puts in front of every frame.
// The length counts only the frame bytes, never the prefix itself.
type Prefix int

const (
	// PrefixU16NE is a 2-byte length in native byte order (little-endian on
	// every platform gvpn builds for): the ExeUnit's unix_stream endpoint.
	PrefixU16NE Prefix = iota + 1
	// PrefixU32BE is a 4-byte big-endian length: the ExeUnit's tcp_stream
	// endpoint, the gvpn bridge, and QEMU's -netdev stream.
	PrefixU32BE
)

// Size is the number of bytes the prefix takes on the wire.
func (p Prefix) Size() int {
	if p == PrefixU16NE {
		return 2
	}
	return 4
}

// Max is the largest frame length the prefix can express.
func (p Prefix) Max() int {
	if p == PrefixU16NE {
		return 0xffff
	}
	return MaxDeclared
}

func (p Prefix) String() string {
	switch p {
	case PrefixU16NE:
		return "u16-ne"
	case PrefixU32BE:
		return "u32-be"
	}
	return fmt.Sprintf("Prefix(%d)", int(p))
}

func (p Prefix) put(b []byte, n int) {
	if p == PrefixU16NE {
		binary.NativeEndian.PutUint16(b, uint16(n))
		return
	}
	binary.BigEndian.PutUint32(b, uint32(n))
}

func (p Prefix) get(b []byte) int {
	if p == PrefixU16NE {
		return int(binary.NativeEndian.Uint16(b))
	}
	return int(binary.BigEndian.Uint32(b))
}

// MaxDeclared is the largest length a stream link accepts in a prefix.
// Longer frames than a reader's buffer are skipped (and reported as
// oversize), but a length beyond MaxDeclared cannot be a frame at all: the
// stream has lost its framing, and reading on would only swallow garbage.
const MaxDeclared = 1 << 20

// HeaderFlag, set in a PrefixU32BE length, says that the bytes the length
// counts are a header and then the frame (on the gvpn bridge, a
// virtio-net header and a superframe, docs/bridge.md §2.4). A length above
// MaxDeclared cannot be a frame, so a peer that does not know the flag sees
// a desynchronised stream and closes it rather than misreading the frame.
// Only a Stream with SetHeader reads or writes it.
const HeaderFlag = 1 << 31

// ErrDesync reports a length prefix beyond MaxDeclared. The stream cannot be
// resynchronised; the link must be closed.
var ErrDesync = errors.New("link: stream lost framing (declared frame length too large)")

// streamBatch is how many frames Write copies into one write(2) and Read
// returns from data already buffered.
const streamBatch = 64

// readBufSize is large so that one read(2) usually brings many frames: a
// stream link pays one syscall per chunk, not two per frame.
const readBufSize = 256 << 10

// Stream is a Link over a byte stream (unix, TCP or vsock connection): each
// frame travels as a length prefix followed by the frame bytes.
type Stream struct {
	conn   net.Conn
	prefix Prefix
	r      *bufio.Reader

	// hdrLen is the header every frame carries in the caller's buffers
	// (SetHeader); 0 for plain frames.
	hdrLen int

	wmu  sync.Mutex
	wbuf []byte

	closeOnce sync.Once
	closeErr  error
}

// NewStream returns a Stream link over conn. The link owns conn: Close
// closes it.
func NewStream(conn net.Conn, p Prefix) *Stream {
	return &Stream{
		conn:   conn,
		prefix: p,
		r:      bufio.NewReaderSize(conn, readBufSize),
		wbuf:   make([]byte, 0, streamBatch*(4+1514)),
	}
}

// SetHeader makes the link carry an n-byte header in front of every frame,
// with HeaderFlag (PrefixU32BE only; n must be 1 … 255). Every frame in the
// caller's buffers then starts with its header:
//
//   - Read returns a frame whose length has HeaderFlag with the header it
//     was sent with, and any other frame behind n zero bytes (read in
//     place, not copied);
//   - Write sends a frame whose header is all zero as a plain frame (no
//     flag, no header: what a peer without headers reads), and any other
//     with HeaderFlag and its header.
//
// So the wire carries headers only where a sender put a non-zero one, and a
// reader needs no state to tell the two kinds apart. Call SetHeader before
// the first Read or Write.
func (s *Stream) SetHeader(n int) error {
	if s.prefix != PrefixU32BE {
		return fmt.Errorf("link: a %s stream has no room for HeaderFlag", s.prefix)
	}
	if n < 1 || n > 255 {
		return fmt.Errorf("link: header length %d out of range 1…255", n)
	}
	s.hdrLen = n
	return nil
}

// Conn returns the underlying connection.
func (s *Stream) Conn() net.Conn { return s.conn }

// BatchSize implements Link.
func (s *Stream) BatchSize() int { return streamBatch }

// Read implements Link. It blocks for the first frame only; further frames
// are returned while they are already complete in the read buffer. A clean
// end of the stream between frames is io.EOF, which also wraps ErrClosed
// (the peer is gone); an end inside a frame is io.ErrUnexpectedEOF.
func (s *Stream) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	psize := s.prefix.Size()
	n := 0
	for n < len(bufs) {
		if n > 0 && !s.frameBuffered(psize) {
			break
		}
		size, err := s.readFrame(bufs[n][offset:], psize)
		if err != nil {
			if n > 0 && errors.Is(err, io.EOF) {
				break // report the frames we have; EOF comes on the next call
			}
			return n, s.wrapErr(err)
		}
		sizes[n] = size
		n++
	}
	return n, nil
}

// frameBuffered reports whether a whole frame is in the read buffer, so that
// reading it cannot block.
func (s *Stream) frameBuffered(psize int) bool {
	if s.r.Buffered() < psize {
		return false
	}
	hdr, _ := s.r.Peek(psize)
	size, _ := s.length(hdr)
	return s.r.Buffered() >= psize+size
}

// length decodes a length prefix: the byte count it announces and whether
// those bytes start with a header (HeaderFlag on a stream with SetHeader).
func (s *Stream) length(hdr []byte) (size int, flagged bool) {
	size = s.prefix.get(hdr)
	if s.hdrLen > 0 && size&HeaderFlag != 0 {
		return size &^ HeaderFlag, true
	}
	return size, false
}

func (s *Stream) readFrame(dst []byte, psize int) (int, error) {
	hdr, err := s.r.Peek(psize)
	if err != nil {
		if len(hdr) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	size, flagged := s.length(hdr)
	if size > MaxDeclared {
		return 0, fmt.Errorf("%w: %d bytes", ErrDesync, size)
	}
	s.r.Discard(psize)
	// A plain frame on a stream with headers goes behind a zero header.
	pad := 0
	if s.hdrLen > 0 && !flagged {
		pad = s.hdrLen
	}
	if pad+size > len(dst) {
		// Skip the frame; the caller sees its real size and drops it.
		if _, err := s.r.Discard(size); err != nil {
			return 0, eofInFrame(err)
		}
		return pad + size, nil
	}
	if _, err := io.ReadFull(s.r, dst[pad:pad+size]); err != nil {
		return 0, eofInFrame(err)
	}
	clear(dst[:pad])
	return pad + size, nil
}

func eofInFrame(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Write implements Link. Frames are copied behind their prefixes into one
// buffer and sent with a single write, because on a stream the syscall per
// frame costs far more than the copy. Frames the prefix cannot express are
// skipped.
func (s *Stream) Write(bufs [][]byte, offset int) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	psize := s.prefix.Size()
	max := s.prefix.Max()
	w := s.wbuf[:0]
	for _, b := range bufs {
		frame := b[offset:]
		flag := 0
		if s.hdrLen > 0 {
			if len(frame) < s.hdrLen {
				continue
			}
			if isZero(frame[:s.hdrLen]) {
				frame = frame[s.hdrLen:]
			} else {
				flag = HeaderFlag
			}
		}
		if len(frame) == 0 || len(frame) > max {
			continue
		}
		var hdr [4]byte
		s.prefix.put(hdr[:], len(frame)|flag)
		w = append(w, hdr[:psize]...)
		w = append(w, frame...)
	}
	s.wbuf = w[:0]
	if len(w) == 0 {
		return len(bufs), nil
	}
	if _, err := s.conn.Write(w); err != nil {
		return 0, s.wrapErr(err)
	}
	return len(bufs), nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Close implements Link.
func (s *Stream) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.conn.Close()
	})
	return s.closeErr
}

func (s *Stream) wrapErr(err error) error {
	return fmt.Errorf("stream link (%s): %w", s.prefix, gone(err))
}
