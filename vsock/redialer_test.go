package vsock

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/link/linktest"
	"github.com/gvpn/gvpn/test/privtest"
)

// fastBackoff keeps the reconnect tests short; the backoff itself is
// tested in TestBackoff.
var fastBackoff = BackoffOptions{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond}

// frameReader runs a Read loop on l in a goroutine and hands every frame
// (copied) to a channel; the channel is closed after Read fails, and the
// error is kept.
type frameReader struct {
	frames chan []byte
	err    error
	done   chan struct{}
}

func startReader(l link.Link) *frameReader {
	fr := &frameReader{frames: make(chan []byte, 1024), done: make(chan struct{})}
	go func() {
		defer close(fr.done)
		defer close(fr.frames)
		bufs, sizes := linktest.Bufs(l.BatchSize())
		for {
			n, err := l.Read(bufs, sizes, link.Headroom)
			if err != nil {
				fr.err = err
				return
			}
			for i := range n {
				fr.frames <- append([]byte(nil), bufs[i][link.Headroom:link.Headroom+sizes[i]]...)
			}
		}
	}()
	return fr
}

func (fr *frameReader) expect(t *testing.T, want ...[]byte) {
	t.Helper()
	for i, w := range want {
		select {
		case f, ok := <-fr.frames:
			if !ok {
				t.Fatalf("reader ended before frame %d: %v", i, fr.err)
			}
			if string(f) != string(w) {
				t.Fatalf("frame %d: got %d bytes %x…, want %d bytes %x…", i, len(f), f[:min(8, len(f))], len(w), w[:min(8, len(w))])
			}
		case <-time.After(guard):
			t.Fatalf("timed out waiting for frame %d", i)
		}
	}
}

// wait returns the reader's final error.
func (fr *frameReader) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-fr.done:
		return fr.err
	case <-time.After(guard):
		t.Fatal("Read did not return")
		return nil
	}
}

func frames(from, n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = linktest.Frame(from+i, size)
	}
	return out
}

// serverLink wraps an accepted connection; reads on it time out after the
// deadlock guard instead of hanging the test.
func serverLink(t *testing.T, c net.Conn) link.Link {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(guard))
	l := DataLink(c)
	t.Cleanup(func() { l.Close() })
	return l
}

// TestRedialerReconnect kills the runtime's listener and connection in the
// middle of a stream: the agent side must notice, drop and count the frames
// written during the gap, reconnect when the runtime is back, and carry
// frames in order both ways on the new connection.
func TestRedialerReconnect(t *testing.T) {
	a := tempUnix(t)
	l, err := Listen(a)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRedialer(context.Background(), a, fastBackoff, privtest.Log(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fr := startReader(r)

	srv := serverLink(t, acceptOne(t, l))
	waitFor(t, "first connection", r.Connected)
	if r.Reconnects() != 0 {
		t.Fatalf("Reconnects = %d before any reconnect", r.Reconnects())
	}

	up := frames(0, 10, 100)
	writeFrames(t, r, up...)
	readFrames(t, srv, up...)
	down := frames(100, 10, 1400)
	writeFrames(t, srv, down...)
	fr.expect(t, down...)
	if d := r.Dropped(); d != 0 {
		t.Fatalf("Dropped = %d on a healthy link", d)
	}

	// The runtime dies: listener and connection gone.
	l.Close()
	srv.Close()
	waitFor(t, "disconnect", func() bool { return !r.Connected() })

	gap := frames(200, 5, 300)
	writeFrames(t, r, gap...)
	writeFrames(t, r, []byte{}) // an empty frame is skipped, not dropped
	if d := r.Dropped(); d != uint64(len(gap)) {
		t.Fatalf("Dropped = %d, want %d", d, len(gap))
	}

	// The runtime comes back on the same address.
	l2, err := Listen(a)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	srv2 := serverLink(t, acceptOne(t, l2))
	waitFor(t, "reconnect", r.Connected)
	if n := r.Reconnects(); n != 1 {
		t.Fatalf("Reconnects = %d, want 1", n)
	}

	up2 := frames(300, 20, 1514)
	writeFrames(t, r, up2...)
	readFrames(t, srv2, up2...) // nothing from the gap arrives first
	down2 := frames(400, 20, 60)
	writeFrames(t, srv2, down2...)
	fr.expect(t, down2...)
	if d := r.Dropped(); d != uint64(len(gap)) {
		t.Fatalf("Dropped = %d after reconnect, want %d", d, len(gap))
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fr.wait(t); !errors.Is(err, link.ErrClosed) {
		t.Fatalf("Read after Close: %v, want ErrClosed", err)
	}
}

// TestRedialerWriteFailure: with no Read pending, a write to a connection
// the peer has closed fails; the batch is counted as dropped and the link
// reconnects.
func TestRedialerWriteFailure(t *testing.T) {
	a := tempUnix(t)
	l, err := Listen(a)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, err := NewRedialer(context.Background(), a, fastBackoff, privtest.Log(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := acceptOne(t, l)
	waitFor(t, "connection", r.Connected)
	c.Close()

	batch := [][]byte{linktest.WithHeadroom(linktest.Frame(1, 100)), linktest.WithHeadroom(linktest.Frame(2, 100)), linktest.WithHeadroom(linktest.Frame(3, 100))}
	var written uint64
	// The first write after the peer's close may still be accepted by
	// the kernel; keep writing until one fails.
	for r.Dropped() == 0 {
		n, err := r.Write(batch, link.Headroom)
		if err != nil || n != len(batch) {
			t.Fatalf("Write = %d, %v; a failing connection must not fail Write", n, err)
		}
		written += uint64(len(batch))
		if written > 1<<20 {
			t.Fatal("writes to a closed peer never failed")
		}
	}
	if d := r.Dropped(); d != uint64(len(batch)) {
		t.Fatalf("Dropped = %d, want one batch of %d", d, len(batch))
	}

	srv := serverLink(t, acceptOne(t, l))
	waitFor(t, "reconnect", r.Connected)
	writeFrames(t, r, linktest.Frame(9, 64))
	readFrames(t, srv, linktest.Frame(9, 64))
}

// TestRedialerCloseUnblocks: Close ends a Read waiting for a connection
// and a Read waiting on one; later calls fail with ErrClosed.
func TestRedialerCloseUnblocks(t *testing.T) {
	t.Run("disconnected", func(t *testing.T) {
		a := tempUnix(t) // nothing listens
		r, err := NewRedialer(context.Background(), a, fastBackoff, privtest.Log(t))
		if err != nil {
			t.Fatal(err)
		}
		fr := startReader(r)
		if n, err := r.Write([][]byte{linktest.WithHeadroom(linktest.Frame(1, 60))}, link.Headroom); n != 1 || err != nil {
			t.Fatalf("Write while disconnected = %d, %v", n, err)
		}
		if r.Dropped() != 1 || r.Connected() {
			t.Fatalf("Dropped = %d, Connected = %v", r.Dropped(), r.Connected())
		}
		r.Close()
		if err := fr.wait(t); !errors.Is(err, link.ErrClosed) {
			t.Fatalf("Read: %v", err)
		}
		checkClosed(t, r)
	})
	t.Run("connected", func(t *testing.T) {
		a := tempUnix(t)
		l, err := Listen(a)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		r, err := NewRedialer(context.Background(), a, fastBackoff, privtest.Log(t))
		if err != nil {
			t.Fatal(err)
		}
		fr := startReader(r)
		c := acceptOne(t, l)
		defer c.Close()
		waitFor(t, "connection", r.Connected)
		r.Close()
		if err := fr.wait(t); !errors.Is(err, link.ErrClosed) {
			t.Fatalf("Read: %v", err)
		}
		checkClosed(t, r)
		// The runtime sees the connection end.
		c.SetReadDeadline(time.Now().Add(guard))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("connection still open after Close")
		}
	})
	t.Run("context", func(t *testing.T) {
		a := tempUnix(t)
		ctx, cancel := context.WithCancel(context.Background())
		r, err := NewRedialer(ctx, a, fastBackoff, nil)
		if err != nil {
			t.Fatal(err)
		}
		fr := startReader(r)
		cancel()
		if err := fr.wait(t); !errors.Is(err, link.ErrClosed) {
			t.Fatalf("Read after cancel: %v", err)
		}
		checkClosed(t, r)
	})
}

func checkClosed(t *testing.T, r *Redialer) {
	t.Helper()
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := r.Write([][]byte{linktest.WithHeadroom(linktest.Frame(1, 60))}, link.Headroom); !errors.Is(err, link.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	bufs, sizes := linktest.Bufs(1)
	if _, err := r.Read(bufs, sizes, link.Headroom); !errors.Is(err, link.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if r.Connected() {
		t.Fatal("Connected after Close")
	}
}

func TestRedialerInvalidAddr(t *testing.T) {
	for _, a := range []Addr{{}, {Scheme: SchemeVsock, CID: CIDAny, Port: 9}} {
		if r, err := NewRedialer(context.Background(), a, BackoffOptions{}, nil); !errors.Is(err, ErrInvalidAddr) {
			if r != nil {
				r.Close()
			}
			t.Errorf("NewRedialer(%v) = %v, want ErrInvalidAddr", a, err)
		}
	}
}

// TestRedialerAllocs: no allocation per frame on a connected Redialer.
func TestRedialerAllocs(t *testing.T) {
	a := tempUnix(t)
	l, err := Listen(a)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, err := NewRedialer(context.Background(), a, fastBackoff, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	srv := serverLink(t, acceptOne(t, l))
	waitFor(t, "connection", r.Connected)

	out := [][]byte{linktest.WithHeadroom(linktest.Frame(1, 1400))}
	bufs, sizes := linktest.Bufs(4)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := r.Write(out, link.Headroom); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Read(bufs, sizes, link.Headroom); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Write(out, link.Headroom); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Read(bufs, sizes, link.Headroom); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame round trip, want 0", allocs)
	}
}

func TestBackoff(t *testing.T) {
	b := NewBackoff(BackoffOptions{Initial: 100 * time.Millisecond, Max: time.Second})
	bases := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for round := range 2 {
		for i, base := range bases {
			base *= time.Millisecond
			d := b.Next()
			if d < base/2 || d > base {
				t.Fatalf("round %d, delay %d = %v, want within [%v, %v]", round, i, d, base/2, base)
			}
		}
		b.Reset()
	}

	if o := NewBackoff(BackoffOptions{}).Options(); o.Initial != DefaultBackoffInitial || o.Max != DefaultBackoffMax {
		t.Errorf("defaults: %+v", o)
	}
	if o := NewBackoff(BackoffOptions{Initial: time.Second, Max: time.Millisecond}).Options(); o.Max != time.Second {
		t.Errorf("Max below Initial not raised: %+v", o)
	}
	huge := NewBackoff(BackoffOptions{Initial: time.Hour, Max: 1<<63 - 1})
	for range 80 {
		if d := huge.Next(); d <= 0 {
			t.Fatalf("delay overflowed: %v", d)
		}
	}

	// Jitter: delays are not all the same.
	seen := map[time.Duration]bool{}
	for range 20 {
		j := NewBackoff(BackoffOptions{Initial: time.Second})
		seen[j.Next()] = true
	}
	if len(seen) < 2 {
		t.Error("no jitter in 20 first delays")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	long := NewBackoff(BackoffOptions{Initial: time.Hour})
	if err := long.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait on a cancelled context = %v", err)
	}
	if err := NewBackoff(BackoffOptions{Initial: time.Microsecond}).Wait(context.Background()); err != nil {
		t.Errorf("Wait = %v", err)
	}
}
