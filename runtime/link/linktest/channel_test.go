package linktest

import (
	"bytes"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/tap"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const guard = 10 * time.Second

// A ChannelDevice stands in for a TAP wherever a tap.Device is wanted.
var _ tap.Device = (*ChannelDevice)(nil)

func bufs(n, size int) ([][]byte, []int) {
	b := make([][]byte, n)
	for i := range b {
		b[i] = make([]byte, size)
	}
	return b, make([]int, n)
}

func TestReadBatchAndOversize(t *testing.T) {
	d := NewChannelDevice()
	defer d.Close()
	frames := [][]byte{[]byte("one"), []byte("two"), bytes.Repeat([]byte("x"), 100), []byte("four")}
	for _, f := range frames {
		d.Inbound <- f
	}
	b, sizes := bufs(8, link.Headroom+10)
	n, err := d.Read(b, sizes, link.Headroom)
	if err != nil || n != len(frames) {
		t.Fatalf("Read = %d, %v; want %d frames in one batch", n, err, len(frames))
	}
	for i, f := range frames {
		if sizes[i] != len(f) {
			t.Errorf("frame %d: size %d, want %d", i, sizes[i], len(f))
		}
		if len(f) <= 10 && !bytes.Equal(b[i][link.Headroom:link.Headroom+sizes[i]], f) {
			t.Errorf("frame %d: %q", i, b[i][link.Headroom:link.Headroom+sizes[i]])
		}
	}
}

func TestReadLimit(t *testing.T) {
	d := NewChannelDevice()
	defer d.Close()
	for range BatchSize + 3 {
		d.Inbound <- []byte("f")
	}
	b, sizes := bufs(2, 16)
	if n, _ := d.Read(b, sizes, 0); n != 2 {
		t.Errorf("Read with 2 buffers = %d frames", n)
	}
	b, sizes = bufs(100, 16)
	if n, _ := d.Read(b, sizes, 0); n != BatchSize {
		t.Errorf("Read with 100 buffers = %d frames, want BatchSize %d", n, BatchSize)
	}
}

func TestWrite(t *testing.T) {
	d := NewChannelDevice()
	defer d.Close()
	buf := append(make([]byte, 4), "frame"...)
	n, err := d.Write([][]byte{buf, make([]byte, 4), buf}, 4)
	if err != nil || n != 3 {
		t.Fatalf("Write = %d, %v; want 3 (the empty frame counts)", n, err)
	}
	buf[4] = 'X' // the device copied the frame
	for range 2 {
		if got := <-d.Outbound; string(got) != "frame" {
			t.Errorf("Outbound %q", got)
		}
	}
	select {
	case f := <-d.Outbound:
		t.Errorf("empty frame was sent: %q", f)
	default:
	}
	if _, err := d.Write([][]byte{make([]byte, 2)}, 4); err == nil {
		t.Error("Write with offset beyond the buffer succeeded")
	}
}

func TestPair(t *testing.T) {
	a, b := NewPair()
	defer a.Close()
	defer b.Close()
	if _, err := a.Write([][]byte{[]byte("ping")}, 0); err != nil {
		t.Fatal(err)
	}
	rb, sizes := bufs(4, 64)
	n, err := b.Read(rb, sizes, 0)
	if err != nil || n != 1 || string(rb[0][:sizes[0]]) != "ping" {
		t.Fatalf("b.Read = %d, %v, %q", n, err, rb[0][:sizes[0]])
	}
	if _, err := b.Write([][]byte{[]byte("pong")}, 0); err != nil {
		t.Fatal(err)
	}
	n, err = a.Read(rb, sizes, 0)
	if err != nil || n != 1 || string(rb[0][:sizes[0]]) != "pong" {
		t.Fatalf("a.Read = %d, %v, %q", n, err, rb[0][:sizes[0]])
	}
	if a.Name() == b.Name() {
		t.Errorf("both ends are named %q", a.Name())
	}
}

func TestCloseUnblocks(t *testing.T) {
	d := NewChannelDevice()
	readErr := make(chan error, 1)
	go func() {
		b, sizes := bufs(1, 64)
		_, err := d.Read(b, sizes, 0)
		readErr <- err
	}()
	writeErr := make(chan error, 1)
	go func() {
		// Fill Outbound so the last Write blocks.
		for {
			if _, err := d.Write([][]byte{[]byte("x")}, 0); err != nil {
				writeErr <- err
				return
			}
		}
	}()
	d.Close()
	for name, ch := range map[string]chan error{"Read": readErr, "Write": writeErr} {
		select {
		case err := <-ch:
			if !link.IsClosed(err) {
				t.Errorf("%s after Close = %v, want link.ErrClosed", name, err)
			}
		case <-time.After(guard):
			t.Fatalf("Close did not unblock %s", name)
		}
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	d.Inbound <- []byte("late") // must not panic, and must not be read
	b, sizes := bufs(1, 64)
	if _, err := d.Read(b, sizes, 0); !link.IsClosed(err) {
		t.Errorf("Read after Close = %v", err)
	}
	if _, err := d.MTU(); !link.IsClosed(err) {
		t.Errorf("MTU after Close = %v", err)
	}
}

func TestMTU(t *testing.T) {
	d := NewChannelDevice()
	defer d.Close()
	if mtu, err := d.MTU(); err != nil || mtu != 1220 {
		t.Errorf("MTU = %d, %v", mtu, err)
	}
	d.SetMTU(1500)
	if mtu, _ := d.MTU(); mtu != 1500 {
		t.Errorf("MTU after SetMTU = %d", mtu)
	}
	if d.BatchSize() != BatchSize || d.Name() != "vpn0" {
		t.Errorf("BatchSize %d Name %q", d.BatchSize(), d.Name())
	}
}
