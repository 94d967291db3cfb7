package vsock

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/runtime/link/linktest"
)

// docMessages are the examples of docs/bridge.md, one per type.
var docMessages = []Message{
	Hello{Version: 1, AgentID: "vm-3", VNetHdr: true},
	Hello{Version: 1, AgentID: "vm-3"},
	Configure{ID: 1, Name: "vpn0", IfAddr: "10.0.0.2", Mask: "255.255.255.0", Gateway: "", MTU: 1220,
		Hosts: map[string]string{"node-a": "10.0.0.3", "node-b": "10.0.0.4"}, VNetHdr: true},
	Configure{ID: 1, Name: "vpn0", IfAddr: "10.0.0.2", Mask: "255.255.255.0", Gateway: "", MTU: 1220,
		Hosts: map[string]string{"node-a": "10.0.0.3", "node-b": "10.0.0.4"}},
	Configured{ID: 1, OK: true, VNetHdr: true},
	Configured{ID: 1, OK: true},
	Configured{ID: 1, OK: false, Error: "mask: 255.0.255.0 is not a netmask (its ones are not contiguous)", Field: "mask"},
	Run{ID: 2, Bin: "/bin/sh", Args: []string{"sh", "-c", "echo hi"}, Dir: "/", Env: []string{"PATH=/usr/bin:/bin"}},
	Started{ID: 2, PID: 7},
	Failed{ID: 2, Error: "exec: \"/bin/shh\": no such file or directory"},
	Output{PID: 7, Stdout: []byte("hi\n")},
	Exited{PID: 7, ReturnCode: 0},
	Kill{ID: 3, PID: 7, Signal: 15},
	Killed{ID: 3, OK: true},
	Shutdown{ID: 4},
	ShutdownDone{ID: 4},
}

// allMessages has every type with every member set, to check that nothing
// is lost on the way.
var allMessages = []Message{
	Hello{Version: ProtocolVersion, AgentID: "agent-\u00e9\u2603", VNetHdr: true},
	Configure{ID: 1<<64 - 1, Name: "vpn0", IfAddr: "192.168.8.2", Mask: "255.255.252.0", Gateway: "192.168.8.1", MTU: 1220,
		Hosts: map[string]string{"a": "192.168.8.3", "b.example": "fd00::1"}, VNetHdr: true, CountersMS: 1000},
	Configured{ID: 8, OK: true, VNetHdr: true},
	Configured{ID: 9, OK: false, Error: "if_addr: \"x\" is not an IPv4 address", Field: "if_addr"},
	Run{ID: 10, Bin: "/usr/bin/env", Args: []string{"env", "-i", "a b", ""}, Dir: "/tmp", Env: []string{"A=1", "B=<&>"}},
	Started{ID: 10, PID: 4242},
	Failed{ID: 11, Error: "permission denied"},
	Output{PID: 4242, Stdout: []byte{0, 1, 2, 0xff, '\n'}, Stderr: []byte("err\n")},
	Exited{PID: 4242, ReturnCode: -9},
	Kill{ID: 12, PID: 4242, Signal: 9},
	Killed{ID: 12, OK: false, Error: "no such process"},
	Shutdown{ID: 13},
	ShutdownDone{ID: 13},
	Counters{Instance: "9f86d081884c7d65", Egress: CounterDir{Frames: 1, Bytes: 2, Drops: map[string]uint64{"spoofed_ip": 3}, KernelDrops: map[string]uint64{"tap_tx_dropped": 4}},
		Ingress: CounterDir{Frames: 1<<64 - 1, Bytes: 6, Drops: map[string]uint64{"bridge_dropped": 7}},
		Events:  map[string]uint64{"bridge_reconnects": 8}, KernelError: "tap gone"},
}

// decodeStream reads messages from b until an error.
func decodeStream(b []byte) ([]Message, error) {
	c := NewControlConn(linktest.ReaderConn(bytes.NewReader(b)))
	var out []Message
	for {
		m, err := c.Receive()
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

func TestControlRoundTrip(t *testing.T) {
	types := map[string]bool{}
	var stream []byte
	for _, m := range allMessages {
		var err error
		stream, err = AppendMessage(stream, m)
		if err != nil {
			t.Fatalf("encode %T: %v", m, err)
		}
		types[m.Type()] = true
	}
	if len(types) != len(decoders) {
		t.Fatalf("allMessages covers %d types of %d", len(types), len(decoders))
	}
	got, err := decodeStream(stream)
	if err != io.EOF {
		t.Fatalf("stream ended with %v, want io.EOF", err)
	}
	if !reflect.DeepEqual(got, allMessages) {
		t.Fatalf("round trip:\n got %#v\nwant %#v", got, allMessages)
	}
}

// TestControlSendPointer: Send takes pointers as well as values.
func TestControlSendPointer(t *testing.T) {
	b1, err1 := AppendMessage(nil, &Kill{ID: 1, PID: 2, Signal: 15})
	b2, err2 := AppendMessage(nil, Kill{ID: 1, PID: 2, Signal: 15})
	if err1 != nil || err2 != nil || !bytes.Equal(b1, b2) {
		t.Fatalf("pointer %q %v, value %q %v", b1, err1, b2, err2)
	}
	if _, err := AppendMessage(nil, (*Kill)(nil)); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("nil pointer: %v", err)
	}
	if _, err := AppendMessage(nil, nil); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("nil message: %v", err)
	}
}

// docExample matches a control example line of docs/bridge.md: the
// four prefix bytes in hex, two spaces, the JSON.
var docExample = regexp.MustCompile(`^([0-9a-f]{2}) ([0-9a-f]{2}) ([0-9a-f]{2}) ([0-9a-f]{2})  (\{.*\})$`)

// TestControlDocExamples checks docs/bridge.md against the codec both ways:
// every example there decodes and re-encodes to the same bytes, and every
// example here is in the document.
func TestControlDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/bridge.md")
	if err != nil {
		t.Fatalf("the spec must exist: %v", err)
	}
	inDoc := map[string]bool{}
	for line := range strings.Lines(string(doc)) {
		sm := docExample.FindStringSubmatch(strings.TrimRight(line, "\n"))
		if sm == nil {
			continue
		}
		var wire []byte
		for _, h := range sm[1:5] {
			v, _ := strconv.ParseUint(h, 16, 8)
			wire = append(wire, byte(v))
		}
		wire = append(wire, sm[5]...)
		if n := binary.BigEndian.Uint32(wire); int(n) != len(sm[5]) {
			t.Errorf("doc example %s: prefix says %d bytes, JSON has %d", sm[5], n, len(sm[5]))
			continue
		}
		msgs, err := decodeStream(wire)
		if err != io.EOF || len(msgs) != 1 {
			t.Errorf("doc example %s: %v, %v", sm[5], msgs, err)
			continue
		}
		again, err := AppendMessage(nil, msgs[0])
		if err != nil || !bytes.Equal(again, wire) {
			t.Errorf("doc example %s re-encodes as %q (%v)", sm[5], again[min(4, len(again)):], err)
		}
		inDoc[string(wire)] = true
	}
	for _, m := range docMessages {
		b, _ := AppendMessage(nil, m)
		if !inDoc[string(b)] {
			t.Errorf("docs/bridge.md lacks the example\n%02x %02x %02x %02x  %s", b[0], b[1], b[2], b[3], b[4:])
		}
	}
}

// TestControlHelloBytes pins the wire form independently of the document.
func TestControlHelloBytes(t *testing.T) {
	want := append([]byte{0, 0, 0, 0x2e}, `{"type":"hello","version":1,"agent_id":"vm-3"}`...)
	got, err := AppendMessage(nil, Hello{Version: 1, AgentID: "vm-3"})
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("hello = %q, %v; want %q", got, err, want)
	}
	empty, err := AppendMessage(nil, ShutdownDone{})
	if want := append([]byte{0, 0, 0, 0x1f}, `{"type":"shutdown_done","id":0}`...); err != nil || !bytes.Equal(empty, want) {
		t.Fatalf("shutdown_done = %q, %v; want %q", empty, err, want)
	}
}

func frameMsg(body string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// TestControlRefused: refused messages are typed errors, and the stream
// stays in step after the ones that keep framing.
func TestControlRefused(t *testing.T) {
	good := frameMsg(`{"type":"shutdown","id":5}`)
	for _, tc := range []struct {
		name, body string
		kind       error
		typ        string
	}{
		{"garbage", `not json`, ErrBadMessage, ""},
		{"truncated json", `{"type":"hello"`, ErrBadMessage, ""},
		{"trailing data", `{"type":"shutdown","id":1} {}`, ErrBadMessage, ""},
		{"array", `[1,2]`, ErrBadMessage, ""},
		{"null", `null`, ErrBadMessage, ""},
		{"empty", ``, ErrBadMessage, ""},
		{"no type", `{"id":1}`, ErrBadMessage, ""},
		{"type not a string", `{"type":7}`, ErrBadMessage, ""},
		{"member of the wrong type", `{"type":"kill","id":"one"}`, ErrBadMessage, "kill"},
		{"negative id", `{"type":"shutdown","id":-1}`, ErrBadMessage, "shutdown"},
		{"unknown type", `{"type":"reboot","id":1}`, ErrUnknownType, "reboot"},
		{"type case", `{"type":"Hello"}`, ErrUnknownType, "Hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewControlConn(linktest.ReaderConn(bytes.NewReader(append(frameMsg(tc.body), good...))))
			m, err := c.Receive()
			var pe *ProtocolError
			if !errors.As(err, &pe) || !errors.Is(err, tc.kind) || m != nil {
				t.Fatalf("Receive = %v, %v; want a *ProtocolError of kind %v", m, err, tc.kind)
			}
			if pe.Type != tc.typ {
				t.Errorf("ProtocolError.Type = %q, want %q", pe.Type, tc.typ)
			}
			m, err = c.Receive()
			if err != nil || m != (Shutdown{ID: 5}) {
				t.Fatalf("next message = %v, %v; the stream lost step", m, err)
			}
		})
	}
}

// TestControlUnknownMembers: members a newer peer adds are ignored.
func TestControlUnknownMembers(t *testing.T) {
	c := NewControlConn(linktest.ReaderConn(bytes.NewReader(frameMsg(`{"type":"started","id":3,"pid":9,"cgroup":"x","extra":{"a":[1]}}`))))
	m, err := c.Receive()
	if err != nil || m != (Started{ID: 3, PID: 9}) {
		t.Fatalf("Receive = %#v, %v", m, err)
	}
}

// memoryFor returns the bytes allocated while running f.
func memoryFor(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestControlOversize: a length above the limit is refused before any
// body is read or allocated, and the error sticks; a length within the
// limit costs memory only for the bytes that actually arrive.
func TestControlOversize(t *testing.T) {
	for _, n := range []uint32{MaxControlMessage + 1, 1<<32 - 1} {
		input := append(binary.BigEndian.AppendUint32(nil, n), frameMsg(`{"type":"shutdown","id":1}`)...)
		c := NewControlConn(linktest.ReaderConn(bytes.NewReader(input)))
		var err error
		used := memoryFor(func() { _, err = c.Receive() })
		var pe *ProtocolError
		if !errors.As(err, &pe) || !errors.Is(err, ErrMessageTooLarge) || pe.Length != n {
			t.Fatalf("length %d: %v", n, err)
		}
		if used > 64<<10 {
			t.Errorf("length %d: refusing it allocated %d bytes", n, used)
		}
		if _, err2 := c.Receive(); !errors.Is(err2, ErrMessageTooLarge) {
			t.Errorf("length %d: next Receive = %v; a desynchronised stream must stay failed", n, err2)
		}
	}

	// Declared 1 MiB, sent 10 bytes.
	input := append(binary.BigEndian.AppendUint32(nil, MaxControlMessage), "0123456789"...)
	c := NewControlConn(linktest.ReaderConn(bytes.NewReader(input)))
	var err error
	used := memoryFor(func() { _, err = c.Receive() })
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short body: %v", err)
	}
	if used > 256<<10 {
		t.Errorf("a 10-byte body declared as 1 MiB allocated %d bytes", used)
	}

	// A body of exactly the limit is accepted.
	shell := `{"type":"failed","id":1,"error":""}`
	body := shell[:len(shell)-2] + strings.Repeat("e", MaxControlMessage-len(shell)) + `"}`
	if len(body) != MaxControlMessage {
		t.Fatalf("test bug: body is %d bytes", len(body))
	}
	c = NewControlConn(linktest.ReaderConn(bytes.NewReader(frameMsg(body))))
	m, err := c.Receive()
	if err != nil {
		t.Fatalf("a message of exactly MaxControlMessage bytes: %v", err)
	}
	if f, ok := m.(Failed); !ok || len(f.Error) != MaxControlMessage-len(shell) {
		t.Fatalf("got %T %d", m, len(body))
	}

	// Send refuses what Receive would refuse, and writes nothing.
	var sink bytes.Buffer
	sc := NewControlConn(writerConn{w: &sink})
	err = sc.Send(Output{PID: 1, Stdout: make([]byte, MaxControlMessage)})
	if !errors.Is(err, ErrMessageTooLarge) || sink.Len() != 0 {
		t.Fatalf("Send of an oversize message: %v, %d bytes written", err, sink.Len())
	}
}

// writerConn is the write side of a net.Conn over an io.Writer.
type writerConn struct {
	net.Conn
	w io.Writer
}

func (c writerConn) Write(b []byte) (int, error) { return c.w.Write(b) }
func (c writerConn) Close() error                { return nil }

// TestControlConcurrentSend sends from several goroutines over a real
// bridge control connection; every message arrives whole.
func TestControlConcurrentSend(t *testing.T) {
	bridge := tempUnix(t)
	l, err := ListenControl(bridge)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if want, _ := bridge.Control(); l.Addr().String() != want.Path {
		t.Fatalf("control listener at %s, want %s", l.Addr(), want.Path)
	}
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	agent, err := DialControl(ctx, bridge)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	rc := acceptOne(t, l)
	rc.SetReadDeadline(time.Now().Add(guard))
	runtimeSide := NewControlConn(rc)
	defer runtimeSide.Close()

	const senders, each = 4, 200
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				out := Output{PID: s, Stdout: bytes.Repeat([]byte{byte(i)}, 1000+i*37)}
				if err := agent.Send(out); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	next := make([]int, senders)
	for range senders * each {
		m, err := runtimeSide.Receive()
		if err != nil {
			t.Fatal(err)
		}
		o := m.(Output)
		i := next[o.PID]
		if !bytes.Equal(o.Stdout, bytes.Repeat([]byte{byte(i)}, 1000+i*37)) {
			t.Fatalf("sender %d message %d corrupted or out of order", o.PID, i)
		}
		next[o.PID]++
	}
	wg.Wait()

	// Close: the peer sees EOF, and our own Receive fails with ErrClosed.
	agent.Close()
	if _, err := runtimeSide.Receive(); err != io.EOF {
		t.Fatalf("Receive after the peer closed: %v, want io.EOF", err)
	}
	runtimeSide.Close()
	if _, err := NewControlConn(rc).Receive(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Receive after Close: %v", err)
	}
}

func TestConfigureParse(t *testing.T) {
	ok := Configure{ID: 1, Name: "vpn0", IfAddr: "10.0.0.2", Mask: "255.255.255.0", Gateway: "10.0.0.1", MTU: 1220,
		Hosts: map[string]string{"node-a": "10.0.0.3", "v6": "fd00::3"}}
	cfg, err := ok.Parse()
	if err != nil {
		t.Fatal(err)
	}
	want := NetConfig{Link: netcfg.LinkConfig{Name: "vpn0", MTU: 1220, Net: netcfg.Network{Prefix: netip.MustParsePrefix("10.0.0.0/24"),
		IfAddr: netip.MustParseAddr("10.0.0.2"), Gateway: netip.MustParseAddr("10.0.0.1")}},
		Hosts: map[string]netip.Addr{"node-a": netip.MustParseAddr("10.0.0.3"), "v6": netip.MustParseAddr("fd00::3")}}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("Parse = %+v, want %+v", cfg, want)
	}
	noGw := ok
	noGw.Gateway, noGw.Hosts = "", nil
	if cfg, err := noGw.Parse(); err != nil || cfg.Link.Net.Gateway.IsValid() || cfg.Hosts != nil {
		t.Fatalf("no gateway: %+v, %v", cfg, err)
	}
	selfGw := ok
	selfGw.Gateway = selfGw.IfAddr
	if err := selfGw.Validate(); err != nil {
		t.Fatalf("gateway = own address must be accepted: %v", err)
	}

	for _, tc := range []struct {
		field string
		edit  func(*Configure)
	}{
		{"name", func(c *Configure) { c.Name = "" }},
		{"name", func(c *Configure) { c.Name = "a-very-long-ifname" }},
		{"name", func(c *Configure) { c.Name = "vpn/0" }},
		{"name", func(c *Configure) { c.Name = "vpn 0" }},
		{"name", func(c *Configure) { c.Name = ".." }},
		{"if_addr", func(c *Configure) { c.IfAddr = "" }},
		{"if_addr", func(c *Configure) { c.IfAddr = "10.0.0" }},
		{"if_addr", func(c *Configure) { c.IfAddr = "fd00::2" }},
		{"if_addr", func(c *Configure) { c.IfAddr = "0.0.0.0" }},
		{"if_addr", func(c *Configure) { c.IfAddr = "224.0.0.1" }},
		{"if_addr", func(c *Configure) { c.IfAddr = "10.0.0.2/24" }},
		{"mask", func(c *Configure) { c.Mask = "" }},
		{"mask", func(c *Configure) { c.Mask = "24" }},
		{"mask", func(c *Configure) { c.Mask = "255.0.255.0" }},
		{"mask", func(c *Configure) { c.Mask = "0.0.0.0" }},
		{"gateway", func(c *Configure) { c.Gateway = "x" }},
		{"gateway", func(c *Configure) { c.Gateway = "10.0.1" }}, // outside the network is no route, not an error (netcfg.ParseNetwork)
		{"gateway", func(c *Configure) { c.Gateway = "fd00::1" }},
		{"mtu", func(c *Configure) { c.MTU = 0 }},
		{"mtu", func(c *Configure) { c.MTU = 67 }},
		{"mtu", func(c *Configure) { c.MTU = MaxMTU + 1 }},
		{"hosts", func(c *Configure) { c.Hosts = map[string]string{"": "10.0.0.3"} }},
		{"hosts", func(c *Configure) { c.Hosts = map[string]string{"a b": "10.0.0.3"} }},
		{"hosts", func(c *Configure) { c.Hosts = map[string]string{"a\n10.9.9.9 evil": "10.0.0.3"} }},
		{"hosts", func(c *Configure) { c.Hosts = map[string]string{"a#b": "10.0.0.3"} }},
		{"hosts", func(c *Configure) { c.Hosts = map[string]string{"a": "10.0.0.300"} }},
		{"hosts", func(c *Configure) { c.Hosts = map[string]string{"a": "fe80::1%eth0"} }},
	} {
		c := ok
		c.Hosts = maps.Clone(ok.Hosts)
		tc.edit(&c)
		err := c.Validate()
		var fe *netcfg.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v: %v, want a FieldError on %q", c, err, tc.field)
			continue
		}
		reply := ConfiguredFor(c.ID, fmt.Errorf("configure: %w", err))
		if reply.OK || reply.Field != tc.field || reply.ID != c.ID || !strings.Contains(reply.Error, tc.field) {
			t.Errorf("ConfiguredFor: %+v", reply)
		}
	}
	if r := ConfiguredFor(7, nil); r != (Configured{ID: 7, OK: true}) {
		t.Errorf("ConfiguredFor(nil) = %+v", r)
	}
	if r := ConfiguredFor(7, errors.New("netlink: operation not permitted")); r.OK || r.Field != "" || r.Error == "" {
		t.Errorf("ConfiguredFor(other error) = %+v", r)
	}
}
