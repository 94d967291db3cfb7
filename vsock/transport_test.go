package vsock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/link/linktest"
)

func TestUnixListenDial(t *testing.T) {
	a := tempUnix(t)
	l, err := Listen(a)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	c, err := Dial(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	s := acceptOne(t, l)
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	s.SetReadDeadline(time.Now().Add(guard))
	if _, err := s.Read(buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	c.Close()
	s.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(a.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file still there after Close: %v", err)
	}
	if _, err := Dial(ctx, a); err == nil {
		t.Fatal("dial succeeded with nothing listening")
	}
}

func TestUnixListenStale(t *testing.T) {
	a := tempUnix(t)
	// Leave a socket file with no listener behind, as a killed process does.
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: a.Path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	if _, err := os.Lstat(a.Path); err != nil {
		t.Fatalf("no stale file to test with: %v", err)
	}
	l, err := Listen(a)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	defer l.Close()

	// A live listener is not replaced.
	if l2, err := Listen(a); !errors.Is(err, ErrAddrInUse) {
		if l2 != nil {
			l2.Close()
		}
		t.Fatalf("second listen: %v, want ErrAddrInUse", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	c, err := Dial(ctx, a)
	if err != nil {
		t.Fatalf("the first listener was disturbed: %v", err)
	}
	c.Close()
	acceptOne(t, l).Close()
}

func TestUnixListenNotASocket(t *testing.T) {
	a := tempUnix(t)
	if err := os.WriteFile(a.Path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err := Listen(a); err == nil {
		l.Close()
		t.Fatal("listen replaced a regular file")
	}
	if b, err := os.ReadFile(a.Path); err != nil || string(b) != "keep me" {
		t.Fatalf("regular file damaged: %q, %v", b, err)
	}
}

func TestListenDialInvalid(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if _, err := Listen(Addr{}); !errors.Is(err, ErrInvalidAddr) {
		t.Errorf("Listen(zero) = %v", err)
	}
	if _, err := Dial(ctx, Addr{Scheme: SchemeUnix, Path: "rel"}); !errors.Is(err, ErrInvalidAddr) {
		t.Errorf("Dial(relative) = %v", err)
	}
	if _, err := Dial(ctx, Addr{Scheme: SchemeVsock, CID: CIDAny, Port: 5}); !errors.Is(err, ErrInvalidAddr) {
		t.Errorf("Dial(CID any) = %v", err)
	}
}

// TestUnixConnConformance runs x/net's net.Conn conformance suite on a
// bridge connection made by Listen and Dial.
func TestUnixConnConformance(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		a := tempUnix(t)
		l, err := Listen(a)
		if err != nil {
			return nil, nil, nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		c1, err = Dial(ctx, a)
		if err != nil {
			l.Close()
			return nil, nil, nil, err
		}
		c2, err = l.Accept()
		l.Close()
		if err != nil {
			c1.Close()
			return nil, nil, nil, err
		}
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	})
}

// TestDataLinkUnix moves frames both ways over a real bridge connection,
// including the largest frame and an oversize one the reader skips.
func TestDataLinkUnix(t *testing.T) {
	a := tempUnix(t)
	l, err := Listen(a)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	c, err := Dial(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	agent := DataLink(c)
	defer agent.Close()
	runtime := DataLink(acceptOne(t, l))
	defer runtime.Close()

	frames := [][]byte{linktest.Frame(1, 60), linktest.Frame(2, 1234), linktest.Frame(3, link.MaxFrame), linktest.Frame(4, 14)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		bufs := make([][]byte, len(frames))
		for i, f := range frames {
			bufs[i] = linktest.WithHeadroom(f)
		}
		if n, err := agent.Write(bufs, link.Headroom); err != nil || n != len(frames) {
			t.Errorf("batch write: %d, %v", n, err)
		}
	}()
	readFrames(t, runtime, frames...)
	<-done

	writeFrames(t, runtime, linktest.Frame(5, 100), linktest.Frame(6, 200))
	readFrames(t, agent, linktest.Frame(5, 100), linktest.Frame(6, 200))

	// A frame longer than the reader's buffer is skipped and reported by
	// size; the next frame is intact.
	writeFrames(t, runtime, linktest.Frame(7, 2000), linktest.Frame(8, 90))
	small := [][]byte{make([]byte, link.Headroom+1514), make([]byte, link.Headroom+1514)}
	sizes := make([]int, 2)
	got := 0
	for got < 2 {
		n, err := agent.Read(small[got:], sizes[got:], link.Headroom)
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	if sizes[0] != 2000 || sizes[1] != 90 {
		t.Fatalf("sizes %v, want [2000 90]", sizes)
	}

	// The runtime going away ends the agent's reads.
	runtime.Close()
	bufs, szs := linktest.Bufs(1)
	if _, err := agent.Read(bufs, szs, link.Headroom); err == nil {
		t.Fatal("read succeeded after the peer closed")
	}
}

// vsockPort picks a port unlikely to be in use; tests retry on collision.
func vsockPort() uint32 { return 20000 + rand.Uint32N(40000) }

// requireVsock skips unless /dev/vsock exists.
func requireVsock(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/vsock"); err != nil {
		t.Skipf("skipped: no AF_VSOCK here (/dev/vsock: %v); the bridge is tested over unix sockets", err)
	}
}

// TestVsockListen listens on vsock://any:PORT. It needs only a vsock
// transport (a VM guest has one), not loopback.
func TestVsockListen(t *testing.T) {
	requireVsock(t)
	var (
		l   net.Listener
		a   Addr
		err error
	)
	for range 5 {
		a = Addr{Scheme: SchemeVsock, CID: CIDAny, Port: vsockPort()}
		l, err = Listen(a)
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		t.Skipf("skipped: this machine's vsock transport refuses listening on %s: %v", a, err)
	}
	if want := fmt.Sprintf(":%d", a.Port); !strings.Contains(l.Addr().String(), want) {
		t.Errorf("listener address %s lacks %s", l.Addr(), want)
	}
	if l2, err := Listen(a); err == nil {
		l2.Close()
		t.Error("second listen on the same vsock port succeeded")
	}
	// Close unblocks a pending Accept.
	acceptErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if c != nil {
			c.Close()
		}
		acceptErr <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-acceptErr:
		if err == nil {
			t.Fatal("accept returned a connection")
		}
	case <-time.After(guard):
		t.Fatal("Close did not unblock Accept")
	}
}

// TestVsockDialHonoursContext: a dial nobody answers (CID 1 without
// vsock_loopback hangs here) must give up when its context ends.
func TestVsockDialHonoursContext(t *testing.T) {
	requireVsock(t)
	if _, err := os.Stat("/sys/module/vsock_loopback"); err == nil {
		t.Skip("skipped: vsock_loopback is loaded, a dial to CID 1 does not hang; see TestVsockLoopback")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		c, err := Dial(ctx, Addr{Scheme: SchemeVsock, CID: CIDLocal, Port: vsockPort()})
		if c != nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("dial to CID 1 without loopback succeeded")
		}
		t.Logf("dial failed as expected: %v", err)
	case <-time.After(guard):
		t.Fatal("Dial ignored its context")
	}
}

// TestVsockLoopback runs the bridge over real AF_VSOCK. It needs the
// vsock_loopback transport (modprobe vsock_loopback), which our CI machines
// (Firecracker guests) do not have.
func TestVsockLoopback(t *testing.T) {
	requireVsock(t)
	if _, err := os.Stat("/sys/module/vsock_loopback"); err != nil {
		t.Skip("skipped: the vsock_loopback module is not loaded (run `modprobe vsock_loopback` on a normal Linux box); CI covers the bridge over unix sockets")
	}
	var (
		l   net.Listener
		a   Addr
		err error
	)
	for range 5 {
		a = Addr{Scheme: SchemeVsock, CID: CIDAny, Port: vsockPort()}
		l, err = Listen(a)
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, Addr{Scheme: SchemeVsock, CID: CIDLocal, Port: a.Port})
	if err != nil {
		t.Fatal(err)
	}
	agent := DataLink(c)
	defer agent.Close()
	runtime := DataLink(acceptOne(t, l))
	defer runtime.Close()
	writeFrames(t, agent, linktest.Frame(1, 60), linktest.Frame(2, link.MaxFrame))
	readFrames(t, runtime, linktest.Frame(1, 60), linktest.Frame(2, link.MaxFrame))
	writeFrames(t, runtime, linktest.Frame(3, 1514))
	readFrames(t, agent, linktest.Frame(3, 1514))
}
