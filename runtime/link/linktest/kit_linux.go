package linktest

import (
	"bytes"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/link"
)

// SocketPair returns the two ends of a connected unix stream socket pair,
// the carrier the runtime and the agent use for the bridge. Both are closed
// when the test ends.
func SocketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// StreamPair returns two stream links joined by a socket pair, framed with
// p. Both are closed when the test ends.
func StreamPair(t testing.TB, p link.Prefix) (*link.Stream, *link.Stream) {
	t.Helper()
	ca, cb := SocketPair(t)
	a, b := link.NewStream(ca, p), link.NewStream(cb, p)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// Bufs returns n frame buffers of link.BufSize and their sizes slice, the
// arguments of a link's Read.
func Bufs(n int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, link.BufSize)
	}
	return bufs, make([]int, n)
}

// WithHeadroom returns frame copied behind link.Headroom bytes, as callers
// pass frames to Write.
func WithHeadroom(frame []byte) []byte {
	return append(make([]byte, link.Headroom), frame...)
}

// Frame returns a test frame of size bytes whose content depends on seq,
// with seq itself in the first two bytes when there is room, so a frame
// out of order or from another test is told apart at a glance.
func Frame(seq, size int) []byte {
	f := make([]byte, size)
	for i := range f {
		f[i] = byte(seq*7 + i)
	}
	if size >= 2 {
		f[0] = byte(seq >> 8)
		f[1] = byte(seq)
	}
	return f
}

// Send writes frames to l in one Write and fails the test on an error.
func Send(t testing.TB, l link.Link, frames ...[]byte) {
	t.Helper()
	bufs := make([][]byte, len(frames))
	for i, f := range frames {
		bufs[i] = WithHeadroom(f)
	}
	if _, err := l.Write(bufs, link.Headroom); err != nil {
		t.Fatal(err)
	}
}

// Recv reads from l until it has want frames and returns copies of them; a
// read error fails the test.
func Recv(t testing.TB, l link.Link, want int) [][]byte {
	t.Helper()
	bufs, sizes := Bufs(l.BatchSize())
	var got [][]byte
	for len(got) < want {
		n, err := l.Read(bufs, sizes, link.Headroom)
		if err != nil {
			t.Fatalf("after %d of %d frames: %v", len(got), want, err)
		}
		for i := range n {
			got = append(got, bytes.Clone(bufs[i][link.Headroom:link.Headroom+sizes[i]]))
		}
	}
	return got
}
