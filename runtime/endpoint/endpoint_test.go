package endpoint

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/link"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParse(t *testing.T) {
	good := map[string]URL{
		"udp://127.0.0.1:40000":          {UDP, "127.0.0.1:40000"},
		"unix:///tmp/vpn.sock":           {Unix, "/tmp/vpn.sock"},
		"tcp-connect://127.0.0.1:5000":   {TCPConnect, "127.0.0.1:5000"},
		"tcp-listen://127.0.0.1:0":       {TCPListen, "127.0.0.1:0"},
		"udp://[::ffff:127.0.0.1]:40000": {UDP, "127.0.0.1:40000"},
	}
	for s, want := range good {
		got, err := Parse(s)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "udp://", "udp://127.0.0.1", "udp://127.0.0.1:0", "udp://[::1]:5",
		"http://127.0.0.1:5", "unix://", "unix://relative.sock", "unix://dir/x.sock", "tcp-connect://localhost:5", "udp://999.0.0.1:5"} {
		if _, err := Parse(s); !errors.Is(err, ErrBadURL) {
			t.Errorf("Parse(%q) err = %v, want ErrBadURL", s, err)
		}
	}
}

func frameBuf(payload []byte) []byte { return append(make([]byte, link.Headroom), payload...) }

func readOne(t *testing.T, l link.Link) []byte {
	t.Helper()
	bufs := [][]byte{make([]byte, link.BufSize)}
	sizes := []int{0}
	if _, err := l.Read(bufs, sizes, link.Headroom); err != nil {
		t.Fatal(err)
	}
	return bufs[0][link.Headroom : link.Headroom+sizes[0]]
}

func TestUDPEndpointIsBoundBeforeTheReply(t *testing.T) {
	exeunit, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer exeunit.Close()
	u, _ := Parse("udp://" + exeunit.LocalAddr().String())
	e, err := Open(u, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	r := e.Reply()
	if r.Kind() != api.EndpointUDPDatagram {
		t.Fatalf("reply kind %v", r.Kind())
	}
	runtimeAddr := netip.MustParseAddrPort(r.Addr())
	// The ExeUnit may send as soon as it has the reply, before the pump
	// has even started: the datagram must wait in the bound socket.
	exeunit.WriteToUDPAddrPort([]byte("early frame"), runtimeAddr)
	l, err := e.Link(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := readOne(t, l); string(got) != "early frame" {
		t.Fatalf("got %q", got)
	}
	l.Write([][]byte{frameBuf([]byte("to exeunit"))}, link.Headroom)
	buf := make([]byte, 100)
	exeunit.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := exeunit.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "to exeunit" || from != runtimeAddr {
		t.Fatalf("ExeUnit got %q from %v (%v), want from %v", buf[:n], from, err, runtimeAddr)
	}
}

func TestPinnedLocalAddress(t *testing.T) {
	probe, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	pinned := probe.LocalAddr().String()
	probe.Close()
	u, _ := Parse("udp://127.0.0.1:9")
	e, err := Open(u, Options{Local: pinned})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Reply().Addr() != pinned {
		t.Fatalf("reply %q, want the pinned %q", e.Reply().Addr(), pinned)
	}
	if _, err := Open(u, Options{Local: "10.1.2.3:5000"}); err == nil {
		t.Fatal("a non-loopback local address was accepted")
	}
}

func TestUnixEndpointU16Framing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vpn.sock")
	u, _ := Parse("unix://" + path)
	e, err := Open(u, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if r := e.Reply(); r.Kind() != api.EndpointUnixStream || r.Addr() != path {
		t.Fatalf("reply %+v", r)
	}
	// The ExeUnit connects after the reply.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, err := e.Link(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var hdr [2]byte
	binary.NativeEndian.PutUint16(hdr[:], 3)
	c.Write(append(hdr[:], 'a', 'b', 'c'))
	if got := readOne(t, l); string(got) != "abc" {
		t.Fatalf("got %q", got)
	}
	l.Write([][]byte{frameBuf([]byte("xyz"))}, link.Headroom)
	got := make([]byte, 5)
	io.ReadFull(c, got)
	if binary.NativeEndian.Uint16(got) != 3 || string(got[2:]) != "xyz" {
		t.Fatalf("ExeUnit got % x", got)
	}
}

func TestUnixEndpointRemovesStaleSocketButNotLiveOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vpn.sock")
	l, _ := net.Listen("unix", path)
	u, _ := Parse("unix://" + path)
	if _, err := Open(u, Options{}); err == nil {
		t.Fatal("Open took over a socket another process listens on")
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // leaves a stale socket file, as a crashed runtime would
	e, err := Open(u, Options{})
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	e.Close()
}

func TestTCPListenAndConnectU32Framing(t *testing.T) {
	u, _ := Parse("tcp-listen://127.0.0.1:0")
	e, err := Open(u, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Reply().Kind() != api.EndpointTCPStream {
		t.Fatalf("reply %+v", e.Reply())
	}
	exeunitSide, err := net.Dial("tcp", e.Reply().Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer exeunitSide.Close()
	l, err := e.Link(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	exeunitSide.Write([]byte{0, 0, 0, 2, 'h', 'i'})
	if got := readOne(t, l); string(got) != "hi" {
		t.Fatalf("got %q", got)
	}

	// tcp-connect: the runtime dials an address someone listens on.
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	defer ln.Close()
	u2, _ := Parse("tcp-connect://" + ln.Addr().String())
	e2, err := Open(u2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	peer, _ := ln.Accept()
	defer peer.Close()
	l2, _ := e2.Link(context.Background())
	defer l2.Close()
	l2.Write([][]byte{frameBuf([]byte("yo"))}, link.Headroom)
	got := make([]byte, 6)
	io.ReadFull(peer, got)
	if !bytes.Equal(got, []byte{0, 0, 0, 2, 'y', 'o'}) {
		t.Fatalf("peer got % x", got)
	}
}

func TestLinkWaitEndsWithContext(t *testing.T) {
	u, _ := Parse("tcp-listen://127.0.0.1:0")
	e, err := Open(u, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := e.Link(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestLocal(t *testing.T) {
	for s, want := range map[string]bool{
		"udp://127.0.0.1:4000":         true,
		"udp://127.0.0.53:4000":        true,
		"unix:///run/x.sock":           true,
		"tcp-connect://127.0.0.1:9":    true,
		"tcp-listen://127.0.0.1:0":     true,
		"udp://192.0.2.1:53":           false,
		"tcp-connect://198.51.100.7:9": false,
		"tcp-listen://0.0.0.0:0":       false,
	} {
		u, err := Parse(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if u.Local() != want {
			t.Errorf("%s: Local() = %v, want %v", s, u.Local(), want)
		}
	}
}
