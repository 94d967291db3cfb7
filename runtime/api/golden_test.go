package api

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/netip"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// vector is one entry of testdata/runtime-api-vectors.json: framed
// messages computed from yagna's schema and checked against protoc's
// encoder.
type vector struct {
	Name      string `json:"name"`
	Direction string `json:"direction"`
	Meaning   string `json:"meaning"`
	FramedHex string `json:"framed_hex"`
}

const (
	toRuntime = "exeunit->runtime"
	toExeUnit = "runtime->exeunit"
)

func loadVectors(t testing.TB) []vector {
	t.Helper()
	raw, err := os.ReadFile("testdata/runtime-api-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Vectors []vector `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	return file.Vectors
}

func (v vector) framed(t testing.TB) []byte {
	t.Helper()
	b, err := hex.DecodeString(v.FramedHex)
	if err != nil {
		t.Fatalf("%s: %v", v.Name, err)
	}
	return b
}

// golden says what each vector means, written out field by field from its
// "meaning" text. build, for responses, is the constructor a runtime uses to
// produce that reply or event.
type golden struct {
	want  proto.Message
	build func() *Response
	// maps is the largest number of entries in any map field; bytes are
	// compared only when there is at most one, since entry order is free.
	maps int
}

func req(id uint64, cmd isRequest_Command) *Request { return &Request{Id: id, Command: cmd} }

var goldens = map[string]golden{
	"req-hello": {want: req(2, &Request_Hello_{Hello: &Request_Hello{Version: "0.1.0"}})},
	"req-network-vpn": {maps: 1, want: req(3, &Request_Network{Network: &Request_CreateNetwork{
		Networks: []*Network{{Addr: "192.168.0.0", Gateway: "192.168.0.1", Mask: "255.255.255.0", IfAddr: "192.168.0.2"}},
		Hosts:    map[string]string{"prov-1": "192.168.0.2"},
	}})},
	"req-network-vpn-empty-gateway": {want: req(3, &Request_Network{Network: &Request_CreateNetwork{
		Networks: []*Network{{Addr: "192.168.0.0", Mask: "255.255.255.0", IfAddr: "192.168.0.3"}},
	}})},
	"req-network-inet": {want: req(3, &Request_Network{Network: &Request_CreateNetwork{
		Networks:  []*Network{{Addr: "10.42.42.1", Gateway: "10.42.42.1", Mask: "255.255.255.0", IfAddr: "10.42.42.2"}},
		Interface: NetworkInterface_INET,
	}})},
	"req-run":      {want: req(4, &Request_Run{Run: &Request_RunProcess{Bin: "/bin/echo", Args: []string{"echo", "hi"}}})},
	"req-kill":     {want: req(5, &Request_Kill{Kill: &Request_KillProcess{Pid: 7, Signal: 15}})},
	"req-shutdown": {want: req(6, &Request_Shutdown_{Shutdown: &Request_Shutdown{}})},
	"req-empty":    {want: req(7, nil)},

	"resp-hello": {
		want:  &Response{Id: 2, Command: &Response_Hello_{Hello: &Response_Hello{Version: "0.5.2"}}},
		build: func() *Response { return ReplyHello(2, "0.5.2") },
	},
	"resp-network-udp": {
		want: &Response{Id: 3, Command: &Response_Network{Network: &Response_CreateNetwork{
			Endpoint: &Response_CreateNetwork_UdpDatagram{UdpDatagram: "127.0.0.1:40000"}}}},
		build: func() *Response {
			return ReplyNetwork(3, UDPEndpoint(netip.MustParseAddrPort("127.0.0.1:40000")))
		},
	},
	"resp-network-unix": {
		want: &Response{Id: 3, Command: &Response_Network{Network: &Response_CreateNetwork{
			Endpoint: &Response_CreateNetwork_UnixStream{UnixStream: "/tmp/vpn.sock"}}}},
		build: func() *Response { return ReplyNetwork(3, UnixStreamEndpoint("/tmp/vpn.sock")) },
	},
	"resp-network-tcp": {
		want: &Response{Id: 3, Command: &Response_Network{Network: &Response_CreateNetwork{
			Endpoint: &Response_CreateNetwork_TcpStream{TcpStream: "127.0.0.1:40001"}}}},
		build: func() *Response {
			return ReplyNetwork(3, TCPStreamEndpoint(netip.MustParseAddrPort("127.0.0.1:40001")))
		},
	},
	"resp-run": {
		want:  &Response{Id: 4, Command: &Response_Run{Run: &Response_RunProcess{Pid: 1}}},
		build: func() *Response { return ReplyRun(4, 1) },
	},
	"resp-kill": {
		want:  &Response{Id: 5, Command: &Response_Kill{Kill: &Response_KillProcess{}}},
		build: func() *Response { return ReplyKill(5) },
	},
	"resp-shutdown": {
		want:  &Response{Id: 6, Command: &Response_Shutdown_{Shutdown: &Response_Shutdown{}}},
		build: func() *Response { return ReplyShutdown(6) },
	},
	"resp-error": {
		want: &Response{Id: 7, Command: &Response_Error_{Error: &Response_Error{
			Code: Response_INTERNAL, Message: "unknown command"}}},
		build: func() *Response { return ReplyError(7, Response_INTERNAL, "unknown command", nil) },
	},
	"resp-error-bad-request": {
		want: &Response{Id: 3, Command: &Response_Error_{Error: &Response_Error{
			Code: Response_BAD_REQUEST, Message: "if_addr: invalid IPv4"}}},
		build: func() *Response { return ReplyError(3, Response_BAD_REQUEST, "if_addr: invalid IPv4", nil) },
	},
	"event-status-stdout": {
		want: &Response{Event: true, Command: &Response_Status{Status: &Response_ProcessStatus{
			Pid: 7, Running: true, Stdout: []byte("hi\n")}}},
		build: func() *Response { return ProcessOutput(7, []byte("hi\n"), nil) },
	},
	"event-status-exit0": {
		want:  &Response{Event: true, Command: &Response_Status{Status: &Response_ProcessStatus{Pid: 7}}},
		build: func() *Response { return ProcessExited(7, 0) },
	},
	"event-status-exit3": {
		want:  &Response{Event: true, Command: &Response_Status{Status: &Response_ProcessStatus{Pid: 7, ReturnCode: 3}}},
		build: func() *Response { return ProcessExited(7, 3) },
	},
	"event-status-exit-neg1": {
		want:  &Response{Event: true, Command: &Response_Status{Status: &Response_ProcessStatus{Pid: 7, ReturnCode: -1}}},
		build: func() *Response { return ProcessExited(7, -1) },
	},
	"event-rt-counter": {
		want: &Response{Event: true, Command: &Response_RtStatus{RtStatus: &Response_RuntimeStatus{
			Kind: &Response_RuntimeStatus_Counter_{Counter: &Response_RuntimeStatus_Counter{
				Name: "golem.usage.gpu-sec", Value: 1.5}}}}},
		build: func() *Response { return RuntimeCounter("golem.usage.gpu-sec", 1.5) },
	},
	"event-rt-state": {
		want: &Response{Event: true, Command: &Response_RtStatus{RtStatus: &Response_RuntimeStatus{
			Kind: &Response_RuntimeStatus_State_{State: &Response_RuntimeStatus_State{
				Name: "vpn", Value: []byte(`{"rx":1}`)}}}}},
		build: func() *Response { return RuntimeState("vpn", []byte(`{"rx":1}`)) },
	},
}

// decodeOne reads exactly one message of the vector's direction from framed
// and checks that the stream then ends cleanly.
func decodeOne(t *testing.T, direction string, framed []byte) proto.Message {
	t.Helper()
	r := NewReader(bytes.NewReader(framed), 0)
	var (
		got proto.Message
		err error
	)
	switch direction {
	case toRuntime:
		got, err = r.ReadRequest()
	case toExeUnit:
		got, err = r.ReadResponse()
	default:
		t.Fatalf("unknown direction %q", direction)
	}
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if _, err := r.ReadRequest(); err != io.EOF {
		t.Fatalf("after the frame: got %v, want io.EOF", err)
	}
	return got
}

func encode(t *testing.T, m proto.Message) []byte {
	t.Helper()
	var out bytes.Buffer
	w := NewWriter(&out)
	var err error
	switch m := m.(type) {
	case *Request:
		err = w.WriteRequest(m)
	case *Response:
		err = w.WriteResponse(m)
	default:
		t.Fatalf("unexpected %T", m)
	}
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return out.Bytes()
}

func TestGoldenVectors(t *testing.T) {
	seen := map[string]bool{}
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			g, ok := goldens[v.Name]
			if !ok {
				t.Fatalf("vector %q has no expected meaning in this test", v.Name)
			}
			seen[v.Name] = true
			framed := v.framed(t)

			got := decodeOne(t, v.Direction, framed)
			if !proto.Equal(got, g.want) {
				t.Fatalf("decoded\n %v\nwant\n %v\n(meaning: %s)", got, g.want, v.Meaning)
			}
			if (v.Direction == toExeUnit) != (g.build != nil) {
				t.Fatalf("direction %s but build set: %v", v.Direction, g.build != nil)
			}
			if g.build != nil {
				built := g.build()
				if !proto.Equal(built, g.want) {
					t.Fatalf("constructor gives\n %v\nwant\n %v", built, g.want)
				}
				if g.maps <= 1 {
					if enc := encode(t, built); !bytes.Equal(enc, framed) {
						t.Fatalf("constructor encodes to\n %x\nwant\n %x", enc, framed)
					}
				}
			}
			if g.maps <= 1 {
				if enc := encode(t, g.want); !bytes.Equal(enc, framed) {
					t.Fatalf("re-encoded to\n %x\nwant\n %x", enc, framed)
				}
			}
		})
	}
	for name := range goldens {
		if !seen[name] {
			t.Errorf("expected vector %q is missing from the vectors file", name)
		}
	}
}

// Absent fields must read as their proto3 defaults: this is how the
// ExeUnit says "VPN", "no gateway", "reply" and "INTERNAL".
func TestGoldenDefaults(t *testing.T) {
	byName := map[string]vector{}
	for _, v := range loadVectors(t) {
		byName[v.Name] = v
	}

	vpn := decodeOne(t, toRuntime, byName["req-network-vpn"].framed(t)).(*Request)
	if got := vpn.GetNetwork().GetInterface(); got != NetworkInterface_VPN {
		t.Errorf("interface = %v, want VPN", got)
	}
	if got, want := vpn.GetNetwork().GetHosts(), map[string]string{"prov-1": "192.168.0.2"}; !maps.Equal(got, want) {
		t.Errorf("hosts = %v, want %v", got, want)
	}

	noGW := decodeOne(t, toRuntime, byName["req-network-vpn-empty-gateway"].framed(t)).(*Request)
	nets := noGW.GetNetwork().GetNetworks()
	if len(nets) != 1 || nets[0].GetGateway() != "" || len(noGW.GetNetwork().GetHosts()) != 0 {
		t.Errorf("empty-gateway request decoded as %v", noGW)
	}

	empty := decodeOne(t, toRuntime, byName["req-empty"].framed(t)).(*Request)
	if empty.GetId() != 7 || empty.GetCommand() != nil || CommandName(empty) != "" {
		t.Errorf("empty request decoded as %v", empty)
	}

	reply := decodeOne(t, toExeUnit, byName["resp-error"].framed(t)).(*Response)
	if reply.GetEvent() || reply.GetError().GetCode() != Response_INTERNAL || reply.GetError().GetContext() != nil {
		t.Errorf("error reply decoded as %v", reply)
	}

	event := decodeOne(t, toExeUnit, byName["event-status-exit0"].framed(t)).(*Response)
	if !event.GetEvent() || event.GetId() != 0 || event.GetStatus().GetRunning() || event.GetStatus().GetReturnCode() != 0 {
		t.Errorf("exit event decoded as %v", event)
	}
}

// A map with several entries decodes to the same map whatever order its
// entries come in, and the Writer's output does not depend on Go's map
// iteration order.
func TestGoldenMapOrder(t *testing.T) {
	hosts := map[string]string{}
	for _, h := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		hosts["prov-"+h] = "192.168.0." + string(rune('1'+len(hosts)))
	}
	m := req(3, &Request_Network{Network: &Request_CreateNetwork{Hosts: hosts}})
	first := encode(t, m)
	for range 50 {
		if again := encode(t, proto.Clone(m)); !bytes.Equal(again, first) {
			t.Fatalf("encoding not stable:\n %x\n %x", first, again)
		}
	}
	got := decodeOne(t, toRuntime, first).(*Request)
	if !maps.Equal(got.GetNetwork().GetHosts(), hosts) {
		t.Fatalf("hosts = %v, want %v", got.GetNetwork().GetHosts(), hosts)
	}

	// Reverse the order of the entries on the wire by hand: same meaning.
	entries := [][]byte{}
	for k, v := range hosts {
		entries = append(entries, mapEntry(2, k, v))
	}
	var fwd, rev []byte
	for i := range entries {
		fwd = append(fwd, entries[i]...)
		rev = append(rev, entries[len(entries)-1-i]...)
	}
	for _, body := range [][]byte{fwd, rev} {
		msg := protowire.AppendVarint([]byte{0x08, 0x03, 0xf2, 0x01}, uint64(len(body)))
		msg = append(msg, body...)
		framed := append(protowire.AppendVarint(nil, uint64(len(msg))), msg...)
		got := decodeOne(t, toRuntime, framed).(*Request)
		if !maps.Equal(got.GetNetwork().GetHosts(), hosts) {
			t.Fatalf("hosts = %v, want %v", got.GetNetwork().GetHosts(), hosts)
		}
	}
}

// mapEntry encodes one map<string,string> entry as field num (short strings
// only).
func mapEntry(num byte, k, v string) []byte {
	e := append([]byte{0x0a, byte(len(k))}, k...)
	e = append(append(e, 0x12, byte(len(v))), v...)
	return append([]byte{num<<3 | 2, byte(len(e))}, e...)
}

// Byte-level examples worked out by hand from the schema, transcribed
// independently of the vectors file.
func TestGoldenDocExamples(t *testing.T) {
	cases := []struct {
		name string
		hex  string
		want proto.Message
	}{
		{"request hello", "0b 08 02 12 07 0a 05 30 2e 31 2e 30",
			req(2, &Request_Hello_{Hello: &Request_Hello{Version: "0.1.0"}})},
		{"response hello", "0b 10 02 22 07 0a 05 30 2e 35 2e 32", ReplyHello(2, "0.5.2")},
		{"request network inet",
			"3c 08 03 f2 01 37 0a 33 0a 0a 31 30 2e 34 32 2e 34 32 2e 31 12 0a 31 30 2e 34 32 2e 34 32 2e 31 " +
				"1a 0d 32 35 35 2e 32 35 35 2e 32 35 35 2e 30 22 0a 31 30 2e 34 32 2e 34 32 2e 32 18 01",
			req(3, &Request_Network{Network: &Request_CreateNetwork{
				Networks:  []*Network{{Addr: "10.42.42.1", Gateway: "10.42.42.1", Mask: "255.255.255.0", IfAddr: "10.42.42.2"}},
				Interface: NetworkInterface_INET,
			}})},
		{"response network udp", "16 10 03 f2 01 11 1a 0f 31 32 37 2e 30 2e 30 2e 31 3a 34 30 30 30 30",
			ReplyNetwork(3, UDPEndpoint(netip.MustParseAddrPort("127.0.0.1:40000")))},
		{"response run", "06 10 04 52 02 08 01", ReplyRun(4, 1)},
		{"response kill", "04 10 05 5a 00", ReplyKill(5)},
		{"response shutdown", "04 10 06 62 00", ReplyShutdown(6)},
		{"response error boom", "0a 10 04 1a 06 12 04 62 6f 6f 6d", ReplyError(4, Response_INTERNAL, "boom", nil)},
		{"event exit 0", "07 08 01 a2 01 02 08 07", ProcessExited(7, 0)},
		{"event stdout", "0e 08 01 a2 01 09 08 07 10 01 22 03 68 69 0a", ProcessOutput(7, []byte("hi\n"), nil)},
		{"event exit -1", "12 08 01 a2 01 0d 08 07 18 ff ff ff ff ff ff ff ff ff 01", ProcessExited(7, -1)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			framed, err := hex.DecodeString(strings.ReplaceAll(c.hex, " ", ""))
			if err != nil {
				t.Fatal(err)
			}
			dir := toExeUnit
			if _, ok := c.want.(*Request); ok {
				dir = toRuntime
			}
			if got := decodeOne(t, dir, framed); !proto.Equal(got, c.want) {
				t.Fatalf("decoded %v, want %v", got, c.want)
			}
			if enc := encode(t, c.want); !bytes.Equal(enc, framed) {
				t.Fatalf("encoded\n %x\nwant\n %x", enc, framed)
			}
		})
	}
}

// Every vector framed in one direction decodes as the other message type
// either cleanly or with ErrMalformed, never with a panic or a framing error:
// the framing is independent of the message.
func TestGoldenWrongDirection(t *testing.T) {
	for _, v := range loadVectors(t) {
		r := NewReader(bytes.NewReader(v.framed(t)), 0)
		var err error
		if v.Direction == toRuntime {
			_, err = r.ReadResponse()
		} else {
			_, err = r.ReadRequest()
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", v.Name, err)
		}
	}
}
