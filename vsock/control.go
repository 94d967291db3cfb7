package vsock

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"sync"
)

// MaxControlMessage is the largest control message body (the JSON, without
// its 4-byte prefix) that Send writes and Receive accepts.
const MaxControlMessage = 1 << 20

// controlChunk bounds each step of reading a message body, so that a
// declared length costs memory only as its bytes actually arrive.
const controlChunk = 64 << 10

// Kinds of control protocol errors; a *ProtocolError matches one of them
// with errors.Is.
var (
	// ErrMessageTooLarge: a length prefix above MaxControlMessage. The
	// stream has lost its framing; the connection must be closed.
	ErrMessageTooLarge = errors.New("control message too large")
	// ErrBadMessage: the body is not a JSON object with a string "type"
	// and members of the right types, or is empty. Framing is intact.
	ErrBadMessage = errors.New("malformed control message")
	// ErrUnknownType: a well-formed message of a type this version does not
	// know. Framing is intact; callers log it and go on receiving.
	ErrUnknownType = errors.New("unknown control message type")
)

// ProtocolError describes a control message that was refused.
type ProtocolError struct {
	Kind   error  // ErrMessageTooLarge, ErrBadMessage or ErrUnknownType
	Type   string // the message's "type" when it was read (truncated to 64 bytes)
	Length uint32 // the declared length
	Err    error  // the underlying cause (a JSON error), or nil
}

func (e *ProtocolError) Error() string {
	s := "vsock: control: " + e.Kind.Error()
	if e.Type != "" {
		s += fmt.Sprintf(" %q", e.Type)
	}
	if e.Kind == ErrMessageTooLarge {
		s += fmt.Sprintf(" (%d bytes, limit %d)", e.Length, MaxControlMessage)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns Kind and, when set, Err.
func (e *ProtocolError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// ControlConn is a control connection: JSON messages, each preceded by its
// length as 4 bytes big-endian.
//
// Send may be called from any number of goroutines. Receive is meant for
// one reader; concurrent calls are serialised.
type ControlConn struct {
	conn net.Conn

	rmu  sync.Mutex
	r    *bufio.Reader
	rbuf []byte
	rerr error // sticky: the stream ended or lost its framing

	wmu  sync.Mutex
	wbuf []byte
}

// NewControlConn returns a ControlConn over conn. It owns conn: Close
// closes it.
func NewControlConn(conn net.Conn) *ControlConn {
	return &ControlConn{conn: conn, r: bufio.NewReaderSize(conn, 16<<10)}
}

// DialControl dials the control connection of the bridge whose data address
// is bridge (that is, bridge.Control()).
func DialControl(ctx context.Context, bridge Addr) (*ControlConn, error) {
	a, err := bridge.Control()
	if err != nil {
		return nil, err
	}
	c, err := Dial(ctx, a)
	if err != nil {
		return nil, err
	}
	return NewControlConn(c), nil
}

// ListenControl listens for the control connection of the bridge whose data
// address is bridge. Wrap accepted connections with NewControlConn.
func ListenControl(bridge Addr) (net.Listener, error) {
	a, err := bridge.Control()
	if err != nil {
		return nil, err
	}
	return Listen(a)
}

// Conn returns the underlying connection, for deadlines. An expired read
// deadline fails Receive for good (it may have struck inside a message).
func (c *ControlConn) Conn() net.Conn { return c.conn }

// Close closes the connection; pending Send and Receive calls return.
func (c *ControlConn) Close() error { return c.conn.Close() }

// Send writes m as one message with a single write. A message whose JSON
// exceeds MaxControlMessage is refused with ErrMessageTooLarge and nothing
// is written.
func (c *ControlConn) Send(m Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b, err := AppendMessage(c.wbuf[:0], m)
	if err != nil {
		return err
	}
	if cap(b) <= controlChunk {
		c.wbuf = b[:0]
	}
	if _, err := c.conn.Write(b); err != nil {
		return fmt.Errorf("vsock: control: send %s: %w", m.Type(), err)
	}
	return nil
}

// AppendMessage appends the wire form of m (prefix and JSON) to b. The JSON
// is {"type":"<type>", then the message's members in declaration order.
func AppendMessage(b []byte, m Message) ([]byte, error) {
	if m == nil {
		return b, fmt.Errorf("vsock: control: %w: nil message", ErrBadMessage)
	}
	body, err := json.Marshal(m)
	if err != nil {
		return b, fmt.Errorf("vsock: control: encode: %w", err)
	}
	if len(body) < 2 || body[0] != '{' {
		// A nil pointer marshals as null.
		return b, fmt.Errorf("vsock: control: %w: %s is not an object", ErrBadMessage, body)
	}
	typ := m.Type()
	head := `{"type":"` + typ + `"`
	n := len(head) + len(body) - 1 // body's '{' is replaced by head
	if len(body) > 2 {
		n++ // the comma between "type" and the members
	}
	if n > MaxControlMessage {
		return b, &ProtocolError{Kind: ErrMessageTooLarge, Type: typ, Length: clampU32(n)}
	}
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = append(b, head...)
	if len(body) > 2 {
		b = append(b, ',')
	}
	return append(b, body[1:]...), nil
}

// Receive reads the next message. Errors:
//
//   - *ProtocolError with ErrUnknownType or ErrBadMessage: the message was
//     read whole and refused; the next Receive reads the next message;
//   - *ProtocolError with ErrMessageTooLarge: the declared length is above
//     the limit; nothing more is read, and every later Receive fails too;
//   - io.EOF at a clean end between messages, io.ErrUnexpectedEOF inside
//     one, or the connection's error (net.ErrClosed after Close); also
//     sticky.
//
// The memory Receive takes grows with the bytes actually received, never
// with a declared length alone.
func (c *ControlConn) Receive() (Message, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rerr != nil {
		return nil, c.rerr
	}
	body, err := c.readBody()
	if err != nil {
		c.rerr = err
		return nil, err
	}
	m, err := DecodeMessage(body)
	if cap(c.rbuf) > controlChunk {
		c.rbuf = nil // do not keep a large buffer for the connection's life
	}
	return m, err
}

func (c *ControlConn) readBody() ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxControlMessage {
		return nil, &ProtocolError{Kind: ErrMessageTooLarge, Length: n}
	}
	buf := c.rbuf[:0]
	for len(buf) < int(n) {
		chunk := min(int(n)-len(buf), controlChunk)
		buf = slices.Grow(buf, chunk)
		got, err := io.ReadFull(c.r, buf[len(buf):len(buf)+chunk])
		buf = buf[:len(buf)+got]
		if err != nil {
			c.rbuf = buf
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	c.rbuf = buf
	return buf, nil
}

// DecodeMessage decodes one message body (the JSON without its prefix).
// Members it does not know are ignored, so that newer peers may add some.
// Errors are *ProtocolError (ErrBadMessage or ErrUnknownType).
func DecodeMessage(body []byte) (Message, error) {
	if len(body) == 0 {
		return nil, &ProtocolError{Kind: ErrBadMessage, Err: errors.New("empty message")}
	}
	var env struct {
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, &ProtocolError{Kind: ErrBadMessage, Length: clampU32(len(body)), Err: err}
	}
	if env.Type == nil {
		return nil, &ProtocolError{Kind: ErrBadMessage, Length: clampU32(len(body)), Err: errors.New(`no "type" member`)}
	}
	decode, ok := decoders[*env.Type]
	if !ok {
		return nil, &ProtocolError{Kind: ErrUnknownType, Type: truncate(*env.Type, 64), Length: clampU32(len(body))}
	}
	m, err := decode(body)
	if err != nil {
		return nil, &ProtocolError{Kind: ErrBadMessage, Type: truncate(*env.Type, 64), Length: clampU32(len(body)), Err: err}
	}
	return m, nil
}

func decodeAs[T Message](body []byte) (Message, error) {
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, err
	}
	return v, nil
}

func clampU32(n int) uint32 {
	if uint64(n) > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(n)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
