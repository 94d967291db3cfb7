package vsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Where a guest finds its virtio-serial ports: udev links them by name
// under portLinkDir; without udev (a bare initramfs) the name is only in
// sysfs, beside the kernel's device name (vport0p1, …) that devtmpfs has.
var (
	portLinkDir  = "/dev/virtio-ports"
	portClassDir = "/sys/class/virtio-ports"
	portDevDir   = "/dev"
)

// portPollInterval is how often a dial looks whether the host's end of the
// port is connected. The kernel signals a disconnected host with POLLHUP,
// which stays set, so waiting in poll(2) would spin.
const portPollInterval = 20 * time.Millisecond

// dialPort opens the guest's virtio-serial port called name and waits until
// the host's end is connected (QEMU's chardev socket is up), so that a dial
// fails or hangs as a socket dial to an absent listener would instead of
// returning a port that reads end-of-file at once.
//
// The port is a byte stream like a socket, with two differences the bridge
// copes with: only one process can have it open (EBUSY), and while the host
// is disconnected reads return end-of-file and writes wait.
func dialPort(ctx context.Context, name string) (net.Conn, error) {
	dev, err := findPort(name)
	if err != nil {
		return nil, err
	}
	// Opened through os so that the descriptor joins Go's poller:
	// deadlines work, and Close unblocks a pending Read or Write.
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	for {
		up, err := hostConnected(f)
		if err != nil {
			f.Close()
			return nil, err
		}
		if up {
			return &portConn{File: f, addr: portAddr(name)}, nil
		}
		t := time.NewTimer(portPollInterval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("the host end of port %s is not connected: %w", name, ctx.Err())
		}
	}
}

// findPort returns the device file of the port called name.
func findPort(name string) (string, error) {
	link := filepath.Join(portLinkDir, name)
	if _, err := os.Stat(link); err == nil {
		return link, nil
	}
	ents, err := os.ReadDir(portClassDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(portClassDir, e.Name(), "name"))
		if err == nil && strings.TrimSpace(string(b)) == name {
			return filepath.Join(portDevDir, e.Name()), nil
		}
	}
	if len(ents) == 0 {
		return "", fmt.Errorf("no virtio-serial port %q: this machine has no virtio-serial ports (not a QEMU guest with -device virtio-serial, or virtio_console not loaded)", name)
	}
	return "", fmt.Errorf("no virtio-serial port %q among the %d ports in %s (check QEMU's virtserialport name=)", name, len(ents), portClassDir)
}

// hostConnected reports whether the host's end of the port is open: the
// kernel raises POLLHUP on the guest's end while it is not.
func hostConnected(f *os.File) (bool, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	var (
		up   bool
		perr error
	)
	err = rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		for {
			_, perr = unix.Poll(pfd, 0)
			if !errors.Is(perr, unix.EINTR) {
				break
			}
		}
		up = pfd[0].Revents&unix.POLLHUP == 0
	})
	if err == nil {
		err = perr
	}
	return up, err
}

// portConn is an open virtio-serial port as a net.Conn. Read, Write, Close
// and the deadlines are the file's.
type portConn struct {
	*os.File
	addr portAddr
}

func (c *portConn) LocalAddr() net.Addr  { return c.addr }
func (c *portConn) RemoteAddr() net.Addr { return c.addr }

// portAddr is a virtio-serial port as a net.Addr.
type portAddr string

func (a portAddr) Network() string { return string(SchemeVirtioSerial) }
func (a portAddr) String() string  { return string(a) }
