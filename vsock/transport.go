package vsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	mdvsock "github.com/mdlayher/vsock"

	"github.com/gvpn/gvpn/runtime/link"
)

// ErrAddrInUse means another process is listening on a unix bridge path.
var ErrAddrInUse = errors.New("another process is listening on this bridge address")

// socketBuffer is the send/receive buffer asked for on bridge connections.
// The kernel caps it (net.core.wmem_max for unix); it is a hint, and a
// connection works with whatever the kernel grants.
const socketBuffer = 1 << 20

// Listen listens on a for bridge connections. For vsock, CID any listens on
// every CID of this machine. For unix, a socket file left behind by a dead
// process is removed first, but only if it is ours and a dial to it is
// refused (link.RemoveStaleSocket); a file that is not a socket is never
// removed, and a live listener makes Listen fail with ErrAddrInUse. The parent directory must exist. Closing the listener
// removes the socket file.
//
// Accepted connections have their socket buffers enlarged where the kernel
// allows it.
func Listen(a Addr) (net.Listener, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	switch a.Scheme {
	case SchemeVsock:
		l, err := mdvsock.ListenContextID(a.CID, a.Port, nil)
		if err != nil {
			return nil, fmt.Errorf("vsock: listen %s: %w", a, err)
		}
		return tunedListener{l}, nil
	case SchemeVirtioSerial:
		return nil, &AddrError{Addr: a.String(), Reason: "a virtio-serial port is dialled from inside the guest; " +
			"the host listens on the unix socket that QEMU's chardev connects to"}
	default:
		l, err := listenUnix(a.Path)
		if err != nil {
			return nil, fmt.Errorf("vsock: listen %s: %w", a, err)
		}
		return tunedListener{l}, nil
	}
}

func listenUnix(path string) (net.Listener, error) {
	if err := removeStale(path); err != nil {
		return nil, err
	}
	// net.ListenUnix unlinks the path when the listener is closed.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// bind(2) gives the socket file 0777 minus the umask; whoever may
	// connect can take the bridge over (the newest connection wins), so
	// only the owner may, whatever the umask. Put the socket in a
	// directory only the owner can enter to close the window before
	// this chmod.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// removeStale deletes path if it is a unix socket of ours nobody listens
// on (link.RemoveStaleSocket); a live one is ErrAddrInUse.
func removeStale(path string) error {
	err := link.RemoveStaleSocket(path)
	if errors.Is(err, link.ErrSocketInUse) {
		return fmt.Errorf("%w: %w", ErrAddrInUse, err)
	}
	return err
}

// Dial connects to the bridge at a. A vsock dial can hang when nothing
// answers (CID 1 without vsock_loopback, a VM that is not up yet), so give
// ctx a deadline. A virtio-serial dial opens the guest's port and waits
// until the host's side of it is connected (see dialPort).
func Dial(ctx context.Context, a Addr) (net.Conn, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	var (
		c   net.Conn
		err error
	)
	switch a.Scheme {
	case SchemeVsock:
		if a.CID == CIDAny {
			return nil, &AddrError{Addr: a.String(), Reason: "CID any can be listened on, not dialled"}
		}
		c, err = mdvsock.DialContext(ctx, a.CID, a.Port, nil)
	case SchemeVirtioSerial:
		c, err = dialPort(ctx, a.Name)
	default:
		c, err = new(net.Dialer).DialContext(ctx, "unix", a.Path)
	}
	if err != nil {
		return nil, fmt.Errorf("vsock: dial %s: %w", a, err)
	}
	tuneConn(c)
	return c, nil
}

// tunedListener enlarges the socket buffers of every accepted connection.
type tunedListener struct{ net.Listener }

func (l tunedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tuneConn(c)
	return c, nil
}

// tuneConn asks for larger socket buffers. Failure is harmless (the
// connection keeps the kernel defaults), so it is ignored.
func tuneConn(c net.Conn) {
	switch c := c.(type) {
	case *net.UnixConn:
		_ = c.SetReadBuffer(socketBuffer)
		_ = c.SetWriteBuffer(socketBuffer)
	case *mdvsock.Conn:
		tuneVsock(c)
	}
}
