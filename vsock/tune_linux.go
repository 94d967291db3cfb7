package vsock

import (
	mdvsock "github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// tuneVsock raises the vsock buffer. The kernel clamps SO_VM_SOCKETS_BUFFER_SIZE
// to the socket's current maximum, so the maximum is raised first.
func tuneVsock(c *mdvsock.Conn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptUint64(int(fd), unix.AF_VSOCK, unix.SO_VM_SOCKETS_BUFFER_MAX_SIZE, socketBuffer)
		_ = unix.SetsockoptUint64(int(fd), unix.AF_VSOCK, unix.SO_VM_SOCKETS_BUFFER_SIZE, socketBuffer)
	})
}
