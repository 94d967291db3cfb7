package api

import (
	"bytes"
	"net/netip"
	"strings"

	"google.golang.org/protobuf/proto"
)

// EndpointKind is the kind of data endpoint a runtime offers in its
// CreateNetwork reply; it fixes how the ExeUnit frames Ethernet frames on it.
type EndpointKind int

const (
	// EndpointNone is the zero Endpoint: no usable endpoint.
	EndpointNone EndpointKind = iota
	// EndpointUDPDatagram: a UDP socket, one frame per datagram.
	EndpointUDPDatagram
	// EndpointUnixStream: a unix stream socket, each frame prefixed by its
	// length as a native-endian u16.
	EndpointUnixStream
	// EndpointTCPStream: a TCP listener, each frame prefixed by its length
	// as a big-endian u32.
	EndpointTCPStream
)

// String returns the URL scheme of the kind ("udp", "unix", "tcp"), or
// "none".
func (k EndpointKind) String() string {
	switch k {
	case EndpointUDPDatagram:
		return "udp"
	case EndpointUnixStream:
		return "unix"
	case EndpointTCPStream:
		return "tcp"
	}
	return "none"
}

// Endpoint is a data endpoint as the ExeUnit expects it in a CreateNetwork
// reply. Build one with UDPEndpoint, UnixStreamEndpoint or TCPStreamEndpoint,
// which produce the text forms the ExeUnit parses ("IP:PORT" or a path). The
// zero Endpoint is invalid.
type Endpoint struct {
	kind EndpointKind
	addr string
}

// UDPEndpoint is a UDP socket bound at addr. An invalid addr gives an invalid
// Endpoint. IPv4-mapped IPv6 addresses are unmapped.
func UDPEndpoint(addr netip.AddrPort) Endpoint {
	return ipEndpoint(EndpointUDPDatagram, addr)
}

// TCPStreamEndpoint is a TCP listener at addr. An invalid addr gives an
// invalid Endpoint. IPv4-mapped IPv6 addresses are unmapped.
func TCPStreamEndpoint(addr netip.AddrPort) Endpoint {
	return ipEndpoint(EndpointTCPStream, addr)
}

// UnixStreamEndpoint is a unix stream socket listening at path. An empty
// path gives an invalid Endpoint.
func UnixStreamEndpoint(path string) Endpoint {
	if path == "" {
		return Endpoint{}
	}
	return Endpoint{kind: EndpointUnixStream, addr: path}
}

func ipEndpoint(kind EndpointKind, addr netip.AddrPort) Endpoint {
	if !addr.IsValid() {
		return Endpoint{}
	}
	// The ExeUnit parses the text as a socket address; "[::ffff:a.b.c.d]:p"
	// is what a dual-stack socket reports but not what anyone means.
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	return Endpoint{kind: kind, addr: addr.String()}
}

// Kind returns the endpoint's kind; EndpointNone for an invalid Endpoint.
func (e Endpoint) Kind() EndpointKind { return e.kind }

// Addr returns the text that goes on the wire: "IP:PORT" or a path.
func (e Endpoint) Addr() string { return e.addr }

// IsValid reports whether e can be sent to the ExeUnit.
func (e Endpoint) IsValid() bool { return e.kind != EndpointNone && e.addr != "" }

// String returns e as a URL for logs ("udp://127.0.0.1:40000",
// "unix:///run/vpn.sock"), or "none".
func (e Endpoint) String() string {
	if !e.IsValid() {
		return "none"
	}
	return e.kind.String() + "://" + e.addr
}

// ResponseEndpoint extracts the endpoint of a CreateNetwork reply, for
// ExeUnit stand-ins. It reports false if resp is not a network reply or
// carries a kind the ExeUnit cannot use (none, unix_datagram, tcp_listener).
func ResponseEndpoint(resp *Response) (Endpoint, bool) {
	var ep Endpoint
	switch v := resp.GetNetwork().GetEndpoint().(type) {
	case *Response_CreateNetwork_UdpDatagram:
		ep = Endpoint{kind: EndpointUDPDatagram, addr: v.UdpDatagram}
	case *Response_CreateNetwork_UnixStream:
		ep = Endpoint{kind: EndpointUnixStream, addr: v.UnixStream}
	case *Response_CreateNetwork_TcpStream:
		ep = Endpoint{kind: EndpointTCPStream, addr: v.TcpStream}
	}
	return ep, ep.IsValid()
}

// ReplyHello answers Hello request id. The ExeUnit ignores version.
func ReplyHello(id uint64, version string) *Response {
	return &Response{Id: id, Command: &Response_Hello_{Hello: &Response_Hello{Version: version}}}
}

// ReplyRun answers RunProcess request id with the pid later used in the
// process's ProcessStatus events.
func ReplyRun(id, pid uint64) *Response {
	return &Response{Id: id, Command: &Response_Run{Run: &Response_RunProcess{Pid: pid}}}
}

// ReplyKill answers KillProcess request id.
func ReplyKill(id uint64) *Response {
	return &Response{Id: id, Command: &Response_Kill{Kill: &Response_KillProcess{}}}
}

// ReplyShutdown answers Shutdown request id. The ExeUnit kills the runtime
// as soon as it reads this, so send it only after cleanup.
func ReplyShutdown(id uint64) *Response {
	return &Response{Id: id, Command: &Response_Shutdown_{Shutdown: &Response_Shutdown{}}}
}

// ReplyNetwork answers CreateNetwork request id with the data endpoint the
// runtime is already listening on. An invalid ep gives an INTERNAL error
// reply instead: a network reply without a usable endpoint fails the
// ExeUnit's start just the same, and this way it says why.
func ReplyNetwork(id uint64, ep Endpoint) *Response {
	var endpoint isResponse_CreateNetwork_Endpoint
	switch {
	case !ep.IsValid():
		return ReplyError(id, Response_INTERNAL, "no usable data endpoint", nil)
	case ep.kind == EndpointUDPDatagram:
		endpoint = &Response_CreateNetwork_UdpDatagram{UdpDatagram: ep.addr}
	case ep.kind == EndpointUnixStream:
		endpoint = &Response_CreateNetwork_UnixStream{UnixStream: ep.addr}
	case ep.kind == EndpointTCPStream:
		endpoint = &Response_CreateNetwork_TcpStream{TcpStream: ep.addr}
	}
	return &Response{Id: id, Command: &Response_Network{Network: &Response_CreateNetwork{Endpoint: endpoint}}}
}

// ReplyError answers request id, whatever its command, with an error. msg and
// context are human-readable text, often built from OS errors, so invalid
// UTF-8 in them is replaced with U+FFFD rather than making the reply
// unencodable. context is copied.
func ReplyError(id uint64, code Response_ErrorCode, msg string, context map[string]string) *Response {
	var ctx map[string]string
	if len(context) > 0 {
		ctx = make(map[string]string, len(context))
		for k, v := range context {
			ctx[validUTF8(k)] = validUTF8(v)
		}
	}
	return &Response{Id: id, Command: &Response_Error_{Error: &Response_Error{
		Code:    code,
		Message: validUTF8(msg),
		Context: ctx,
	}}}
}

func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// ProcessOutput is the event carrying output of running process pid. With
// both slices empty it announces that the process started. The slices are
// copied.
func ProcessOutput(pid uint64, stdout, stderr []byte) *Response {
	return &Response{Event: true, Command: &Response_Status{Status: &Response_ProcessStatus{
		Pid:     pid,
		Running: true,
		Stdout:  bytes.Clone(stdout),
		Stderr:  bytes.Clone(stderr),
	}}}
}

// ProcessExited is the event that completes process pid with exit code rc.
func ProcessExited(pid uint64, rc int32) *Response {
	return &Response{Event: true, Command: &Response_Status{Status: &Response_ProcessStatus{
		Pid:        pid,
		ReturnCode: rc,
	}}}
}

// RuntimeCounter is the event that sets usage counter name to v.
func RuntimeCounter(name string, v float64) *Response {
	return &Response{Event: true, Command: &Response_RtStatus{RtStatus: &Response_RuntimeStatus{
		Kind: &Response_RuntimeStatus_Counter_{Counter: &Response_RuntimeStatus_Counter{Name: name, Value: v}},
	}}}
}

// RuntimeState is the event that reports state name (by convention value is
// JSON). The ExeUnit logs it and otherwise ignores it. value is copied.
func RuntimeState(name string, value []byte) *Response {
	return &Response{Event: true, Command: &Response_RtStatus{RtStatus: &Response_RuntimeStatus{
		Kind: &Response_RuntimeStatus_State_{State: &Response_RuntimeStatus_State{Name: name, Value: bytes.Clone(value)}},
	}}}
}

// CommandName names req's command for logs by its field in runtime.proto:
// "hello", "run", "kill", "shutdown", "network", or "" when it has none (or
// one this schema does not know).
func CommandName(req *Request) string { return commandField(req) }

// ResponseName names resp's variant for logs by its field in
// runtime.proto: "error", "hello", "run", "kill", "shutdown", "status",
// "rt_status", "network", or "" for none.
func ResponseName(resp *Response) string { return commandField(resp) }

// commandField is the name of the field set in m's oneof "command".
func commandField(m proto.Message) string {
	r := m.ProtoReflect()
	if !r.IsValid() {
		return ""
	}
	if f := r.WhichOneof(r.Descriptor().Oneofs().ByName("command")); f != nil {
		return string(f.Name())
	}
	return ""
}

// ReplyMatches reports whether resp is a reply the ExeUnit accepts for req:
// not an event, the same id, and either an error or the variant of req's
// command. A request without a command accepts only an error. The ExeUnit
// panics on a wrong variant and waits forever for a reply sent with the
// wrong id or as an event.
func ReplyMatches(req *Request, resp *Response) bool {
	if req == nil || resp == nil || resp.GetEvent() || resp.GetId() != req.GetId() {
		return false
	}
	if _, ok := resp.GetCommand().(*Response_Error_); ok {
		return true
	}
	name := CommandName(req)
	return name != "" && name == ResponseName(resp)
}
