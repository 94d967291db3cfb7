package vsock

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/link/linktest"
	"github.com/gvpn/gvpn/test/privtest"
)

func dialData(t *testing.T, a Addr) link.Link {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	c, err := Dial(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	l := DataLink(c)
	t.Cleanup(func() { l.Close() })
	return l
}

func waitConnected(t *testing.T, acc *Acceptor, accepted uint64) {
	t.Helper()
	waitFor(t, "connection", func() bool { return acc.Connected() && acc.Accepted() >= accepted })
}

// TestAcceptorNewestWins: a second connection replaces the first, which the
// acceptor closes; frames flow on the newest, in order, both ways.
func TestAcceptorNewestWins(t *testing.T) {
	addr := tempUnix(t)
	acc, err := ListenAcceptor(addr, privtest.Log(t))
	if err != nil {
		t.Fatal(err)
	}
	defer acc.Close()

	// Nobody connected: writes are dropped and counted, never block.
	writeFrames(t, acc, linktest.Frame(0, 60), linktest.Frame(1, 60))
	if got := acc.Dropped(); got != 2 {
		t.Fatalf("dropped %d frames without a connection, want 2", got)
	}

	first := dialData(t, addr)
	waitConnected(t, acc, 1)
	writeFrames(t, first, linktest.Frame(2, 100), linktest.Frame(3, 1500))
	readFrames(t, acc, linktest.Frame(2, 100), linktest.Frame(3, 1500))
	writeFrames(t, acc, linktest.Frame(4, 80))
	readFrames(t, first, linktest.Frame(4, 80))

	// The peer comes back on a new connection without the old one failing.
	second := dialData(t, addr)
	waitConnected(t, acc, 2)
	// The old connection was closed by the acceptor: its reader sees EOF.
	bufs, sizes := linktest.Bufs(first.BatchSize())
	if _, err := first.Read(bufs, sizes, link.Headroom); !errors.Is(err, io.EOF) {
		t.Fatalf("read on the replaced connection: %v, want EOF", err)
	}
	writeFrames(t, second, linktest.Frame(5, 70))
	readFrames(t, acc, linktest.Frame(5, 70))
	writeFrames(t, acc, linktest.Frame(6, 90), linktest.Frame(7, 91))
	readFrames(t, second, linktest.Frame(6, 90), linktest.Frame(7, 91))
	if got := acc.Dropped(); got != 2 {
		t.Fatalf("dropped %d, want still 2", got)
	}
}

// TestAcceptorReadWaitsForReconnect: a Read blocked on a connection that
// fails resumes on the next one; frames written meanwhile are dropped and
// counted.
func TestAcceptorReadWaitsForReconnect(t *testing.T) {
	addr := tempUnix(t)
	acc, err := ListenAcceptor(addr, privtest.Log(t))
	if err != nil {
		t.Fatal(err)
	}
	defer acc.Close()
	fr := startReader(acc)

	c1 := dialData(t, addr)
	waitConnected(t, acc, 1)
	writeFrames(t, c1, linktest.Frame(1, 64))
	fr.expect(t, linktest.Frame(1, 64))
	c1.Close()
	waitFor(t, "the acceptor to notice the loss", func() bool { return !acc.Connected() })
	writeFrames(t, acc, linktest.Frame(2, 64), linktest.Frame(3, 64), linktest.Frame(4, 64))
	if got := acc.Dropped(); got != 3 {
		t.Fatalf("dropped %d, want 3", got)
	}

	c2 := dialData(t, addr)
	waitConnected(t, acc, 2)
	for i := 10; i < 200; i++ {
		writeFrames(t, c2, linktest.Frame(i, 64+i))
	}
	for i := 10; i < 200; i++ {
		fr.expect(t, linktest.Frame(i, 64+i))
	}

	acc.Close()
	<-fr.done
	if !link.IsClosed(fr.err) {
		t.Fatalf("Read after Close: %v, want ErrClosed", fr.err)
	}
	if _, err := os.Stat(addr.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file left after Close: %v", err)
	}
	if _, err := acc.Write([][]byte{linktest.WithHeadroom(linktest.Frame(0, 60))}, link.Headroom); !link.IsClosed(err) {
		t.Fatalf("Write after Close: %v, want ErrClosed", err)
	}
	if err := acc.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestAcceptorDesync: a peer that breaks the framing loses its connection,
// not the link.
func TestAcceptorDesync(t *testing.T) {
	addr := tempUnix(t)
	acc, err := ListenAcceptor(addr, privtest.Log(t))
	if err != nil {
		t.Fatal(err)
	}
	defer acc.Close()
	fr := startReader(acc)

	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	raw, err := Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	waitConnected(t, acc, 1)
	raw.Write([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	waitFor(t, "the bad connection to be dropped", func() bool { return !acc.Connected() })

	good := dialData(t, addr)
	waitConnected(t, acc, 2)
	writeFrames(t, good, linktest.Frame(9, 99))
	fr.expect(t, linktest.Frame(9, 99))
}

// TestAcceptorWaitConnected returns on a connection, on ctx's end and on
// Close.
func TestAcceptorWaitConnected(t *testing.T) {
	addr := tempUnix(t)
	acc, err := ListenAcceptor(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := acc.WaitConnected(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitConnected without a peer: %v", err)
	}
	dialData(t, addr)
	ctx2, cancel2 := context.WithTimeout(context.Background(), guard)
	defer cancel2()
	if err := acc.WaitConnected(ctx2); err != nil {
		t.Fatal(err)
	}
	acc.Close()
	if err := acc.WaitConnected(ctx2); !link.IsClosed(err) {
		t.Fatalf("WaitConnected after Close: %v", err)
	}
}

// TestAcceptorCounters: frames written with no connection are tx drops;
// connections are events; no drop, no drop entry.
func TestAcceptorCounters(t *testing.T) {
	addr := tempUnix(t)
	acc, err := ListenAcceptor(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer acc.Close()
	if c := acc.Counters(); c.TxDrops != nil || c.RxDrops != nil || c.Events[CounterAccepted] != 0 {
		t.Fatalf("fresh acceptor: %+v", c)
	}
	f := append(make([]byte, link.Headroom), 1, 2, 3)
	if _, err := acc.Write([][]byte{f, f}, link.Headroom); err != nil {
		t.Fatal(err)
	}
	dialData(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if err := acc.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if c := acc.Counters(); c.TxDrops[CounterDropped] != 2 || c.RxDrops != nil || c.Events[CounterAccepted] != 1 {
		t.Fatalf("after two frames with no peer and one connection: %+v", c)
	}
}

// TestAcceptorAllocs: a connected Acceptor moves frames without allocating.
func TestAcceptorAllocs(t *testing.T) {
	addr := tempUnix(t)
	acc, err := ListenAcceptor(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer acc.Close()
	peer := dialData(t, addr)
	waitConnected(t, acc, 1)

	out := [][]byte{linktest.WithHeadroom(linktest.Frame(1, 1234))}
	bufs, sizes := linktest.Bufs(acc.BatchSize())
	pbufs, psizes := linktest.Bufs(peer.BatchSize())
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := acc.Write(out, link.Headroom); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Read(pbufs, psizes, link.Headroom); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(out, link.Headroom); err != nil {
			t.Fatal(err)
		}
		if _, err := acc.Read(bufs, sizes, link.Headroom); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per frame round trip, want 0", allocs)
	}
}
