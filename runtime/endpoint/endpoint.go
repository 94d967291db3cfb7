// Package endpoint opens the runtime's side of the ExeUnit's VPN data
// endpoint (docs/protocol.md §5): it parses the --vpn-endpoint URL,
// binds or listens before the CreateNetwork reply (the ExeUnit sends or
// connects right after it), says what to put in the reply, and hands over
// the frame link once the ExeUnit is there.
package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/link"
)

// Kind is the transport of an endpoint.
type Kind int

const (
	// UDP: one frame per datagram, no prefix. What today's ExeUnit uses.
	UDP Kind = iota + 1
	// Unix: unix stream socket, u16 native-endian length prefix. The ExeUnit
	// connects to the path the runtime replies with.
	Unix
	// TCPConnect: the runtime connects to the given address; u32 big-endian
	// length prefix.
	TCPConnect
	// TCPListen: the runtime listens and the ExeUnit connects; u32
	// big-endian length prefix.
	TCPListen
)

func (k Kind) String() string {
	switch k {
	case UDP:
		return "udp"
	case Unix:
		return "unix"
	case TCPConnect:
		return "tcp-connect"
	case TCPListen:
		return "tcp-listen"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// URL is a parsed --vpn-endpoint (or --inet-endpoint) value.
type URL struct {
	Kind Kind
	// Addr is "IP:PORT" for UDP and TCP kinds, a socket path for Unix.
	Addr string
}

func (u URL) String() string {
	if u.Kind == Unix {
		return "unix://" + u.Addr
	}
	return u.Kind.String() + "://" + u.Addr
}

// Local reports whether u stays on this host: a unix socket, or a loopback
// IP. The ExeUnit only ever passes a loopback address; anything else sends
// (or accepts) VPN frames off the machine.
func (u URL) Local() bool {
	if u.Kind == Unix {
		return true
	}
	ap, err := netip.ParseAddrPort(u.Addr)
	return err == nil && ap.Addr().IsLoopback()
}

// ErrBadURL is wrapped by every Parse error.
var ErrBadURL = errors.New("bad endpoint URL")

// Parse parses the URL forms the ExeUnit's runtime API accepts:
// udp://IP:PORT, unix://PATH, tcp-connect://IP:PORT, tcp-listen://IP:PORT.
func Parse(s string) (URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return URL{}, fmt.Errorf("%w %q: %v", ErrBadURL, s, err)
	}
	var kind Kind
	switch u.Scheme {
	case "udp":
		kind = UDP
	case "unix":
		path := u.Host + u.Path
		if path == "" {
			return URL{}, fmt.Errorf("%w %q: unix endpoint needs a socket path", ErrBadURL, s)
		}
		// A relative path would depend on the runtime's working
		// directory (unix://x is "x" in whatever directory that is).
		if !strings.HasPrefix(path, "/") {
			return URL{}, fmt.Errorf("%w %q: unix endpoint needs an absolute socket path (unix:///path)", ErrBadURL, s)
		}
		return URL{Kind: Unix, Addr: path}, nil
	case "tcp-connect", "tcp":
		kind = TCPConnect
	case "tcp-listen":
		kind = TCPListen
	default:
		return URL{}, fmt.Errorf("%w %q: scheme must be udp, unix, tcp-connect or tcp-listen", ErrBadURL, s)
	}
	ap, err := netip.ParseAddrPort(u.Host)
	if err != nil {
		return URL{}, fmt.Errorf("%w %q: want IP:PORT: %v", ErrBadURL, s, err)
	}
	if !ap.Addr().Unmap().Is4() {
		return URL{}, fmt.Errorf("%w %q: only IPv4 endpoints are supported", ErrBadURL, s)
	}
	if ap.Port() == 0 && kind != TCPListen {
		return URL{}, fmt.Errorf("%w %q: port 0", ErrBadURL, s)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return URL{Kind: kind, Addr: ap.String()}, nil
}

// Endpoint is the runtime's side of one data endpoint, ready before the
// reply. Link returns the frame link when the ExeUnit is connected.
type Endpoint struct {
	url   URL
	reply api.Endpoint

	udp      *net.UDPConn
	listener net.Listener
	conn     net.Conn
	prefix   link.Prefix

	closeOnce sync.Once
}

// Options tunes Open.
type Options struct {
	// Local pins the runtime's own address ("IP:PORT" for UDP and
	// tcp-listen). Empty means 127.0.0.1 with a free port. It exists so
	// that two runtimes can be wired to each other by hand, with no ExeUnit.
	Local string
	// DialTimeout bounds the tcp-connect dial. Zero means 2 s, the
	// ExeUnit's own connect timeout.
	DialTimeout time.Duration
}

// Open binds, listens or connects, as the URL's kind requires, so that the
// ExeUnit can use the endpoint as soon as it reads the reply.
func Open(u URL, opts Options) (*Endpoint, error) {
	e := &Endpoint{url: u}
	switch u.Kind {
	case UDP:
		local, err := localAddr(opts.Local)
		if err != nil {
			return nil, err
		}
		conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(local))
		if err != nil {
			return nil, fmt.Errorf("bind UDP endpoint %s: %w", local, err)
		}
		setBuffers(conn)
		e.udp = conn
		e.reply = api.UDPEndpoint(conn.LocalAddr().(*net.UDPAddr).AddrPort())
	case Unix:
		if err := link.RemoveStaleSocket(u.Addr); err != nil {
			return nil, fmt.Errorf("unix endpoint: %w", err)
		}
		l, err := net.Listen("unix", u.Addr)
		if err != nil {
			return nil, fmt.Errorf("listen on unix endpoint %s: %w", u.Addr, err)
		}
		e.listener, e.prefix = l, link.PrefixU16NE
		e.reply = api.UnixStreamEndpoint(u.Addr)
	case TCPListen:
		addr := opts.Local
		if addr == "" {
			addr = u.Addr
		}
		if ap, err := netip.ParseAddrPort(addr); err != nil || !ap.Addr().IsLoopback() {
			// Frames of the whole VPN must never be reachable from
			// outside the machine.
			addr = "127.0.0.1:0"
		}
		l, err := net.Listen("tcp4", addr)
		if err != nil {
			return nil, fmt.Errorf("listen on tcp endpoint %s: %w", addr, err)
		}
		e.listener, e.prefix = l, link.PrefixU32BE
		e.reply = api.TCPStreamEndpoint(l.Addr().(*net.TCPAddr).AddrPort())
	case TCPConnect:
		timeout := opts.DialTimeout
		if timeout == 0 {
			timeout = 2 * time.Second
		}
		conn, err := net.DialTimeout("tcp4", u.Addr, timeout)
		if err != nil {
			return nil, fmt.Errorf("connect to tcp endpoint %s: %w", u.Addr, err)
		}
		setBuffers(conn.(*net.TCPConn))
		e.conn, e.prefix = conn, link.PrefixU32BE
		e.reply = api.TCPStreamEndpoint(conn.RemoteAddr().(*net.TCPAddr).AddrPort())
	default:
		return nil, fmt.Errorf("%w: kind %v", ErrBadURL, u.Kind)
	}
	return e, nil
}

func localAddr(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.MustParseAddrPort("127.0.0.1:0"), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, fmt.Errorf("local endpoint address %q: want IP:PORT: %w", s, err)
	}
	if !ap.Addr().IsLoopback() {
		return ap, fmt.Errorf("local endpoint address %q: must be a loopback address", s)
	}
	return ap, nil
}

// socketBuffer matches the ExeUnit's own 2 MiB socket buffers, so bursts
// are absorbed rather than dropped at the endpoint.
const socketBuffer = 2 << 20

func setBuffers(c interface {
	SetReadBuffer(int) error
	SetWriteBuffer(int) error
}) {
	c.SetReadBuffer(socketBuffer)
	c.SetWriteBuffer(socketBuffer)
}

// URL returns the URL the endpoint was opened for.
func (e *Endpoint) URL() URL { return e.url }

// Reply returns the endpoint for the CreateNetwork response.
func (e *Endpoint) Reply() api.Endpoint { return e.reply }

// Link returns the frame link to the ExeUnit. For UDP it sends to peer,
// the address of the ExeUnit's own socket (from --vpn-endpoint), and is
// ready at once. For listening kinds it waits until the ExeUnit connects
// or ctx ends. Link may be called once.
func (e *Endpoint) Link(ctx context.Context) (link.Link, error) {
	switch {
	case e.udp != nil:
		peer, err := netip.ParseAddrPort(e.url.Addr)
		if err != nil {
			return nil, err
		}
		l, err := link.NewDatagram(e.udp, peer)
		if err != nil {
			return nil, err
		}
		e.udp = nil // the link owns the socket now
		return l, nil
	case e.conn != nil:
		c := e.conn
		e.conn = nil
		return link.NewStream(c, e.prefix), nil
	case e.listener != nil:
		stop := context.AfterFunc(ctx, func() { e.listener.Close() })
		defer stop()
		c, err := e.listener.Accept()
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return nil, fmt.Errorf("wait for the ExeUnit on %s: %w", e.reply.Addr(), err)
		}
		// One connection per endpoint: the ExeUnit never reconnects.
		e.closeListener()
		if tc, ok := c.(*net.TCPConn); ok {
			setBuffers(tc)
		}
		return link.NewStream(c, e.prefix), nil
	}
	return nil, errors.New("endpoint: Link called twice or after Close")
}

func (e *Endpoint) closeListener() {
	if e.listener != nil {
		e.listener.Close()
		if e.url.Kind == Unix {
			os.Remove(e.url.Addr)
		}
	}
}

// Close releases whatever Link has not handed over. The link, once
// returned, is closed by its own Close. Idempotent.
func (e *Endpoint) Close() error {
	e.closeOnce.Do(func() {
		if e.udp != nil {
			e.udp.Close()
		}
		if e.conn != nil {
			e.conn.Close()
		}
		e.closeListener()
	})
	return nil
}

// Describe returns a one-line description for logs.
func (e *Endpoint) Describe() string {
	return e.url.String() + " → " + e.reply.String()
}
