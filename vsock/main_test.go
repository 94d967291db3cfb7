package vsock

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/link/linktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// guard is the deadlock guard of every wait in these tests: far longer than
// anything should take, never a performance assertion.
const guard = 20 * time.Second

// tempUnix returns a unix bridge address in a fresh directory whose name
// starts with the package's test prefix; the directory is removed at the end.
func tempUnix(t testing.TB) Addr {
	t.Helper()
	dir, err := os.MkdirTemp("", "gvt-vs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return Addr{Scheme: SchemeUnix, Path: filepath.Join(dir, "bridge.sock")}
}

// waitFor polls cond until it holds, failing after the deadlock guard.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// acceptOne accepts one connection, failing after the deadlock guard.
func acceptOne(t testing.TB, l net.Listener) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("accept: %v", r.err)
		}
		return r.c
	case <-time.After(guard):
		l.Close()
		<-ch
		t.Fatal("timed out in accept")
		return nil
	}
}

// writeFrames writes the frames one Write call each.
func writeFrames(t testing.TB, l link.Link, frames ...[]byte) {
	t.Helper()
	for _, f := range frames {
		n, err := l.Write([][]byte{linktest.WithHeadroom(f)}, link.Headroom)
		if err != nil || n != 1 {
			t.Fatalf("write: n=%d err=%v", n, err)
		}
	}
}

// readFrames reads exactly want frames from l and compares them in order.
func readFrames(t testing.TB, l link.Link, want ...[]byte) {
	t.Helper()
	bufs, sizes := linktest.Bufs(l.BatchSize())
	got := 0
	for got < len(want) {
		n, err := l.Read(bufs, sizes, link.Headroom)
		if err != nil {
			t.Fatalf("read after %d frames: %v", got, err)
		}
		for i := range n {
			f := bufs[i][link.Headroom : link.Headroom+sizes[i]]
			if got >= len(want) {
				t.Fatalf("extra frame %x", f[:min(len(f), 16)])
			}
			if !bytes.Equal(f, want[got]) {
				t.Fatalf("frame %d: got %d bytes %x…, want %d bytes %x…", got, len(f), f[:min(len(f), 8)], len(want[got]), want[got][:min(len(want[got]), 8)])
			}
			got++
		}
	}
}
