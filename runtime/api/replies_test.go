package api

import (
	"maps"
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"
)

func allRequests(id uint64) map[string]*Request {
	return map[string]*Request{
		"hello":    req(id, &Request_Hello_{Hello: &Request_Hello{Version: "0.1.0"}}),
		"run":      req(id, &Request_Run{Run: &Request_RunProcess{Bin: "/bin/true"}}),
		"kill":     req(id, &Request_Kill{Kill: &Request_KillProcess{Pid: 1}}),
		"shutdown": req(id, &Request_Shutdown_{Shutdown: &Request_Shutdown{}}),
		"network":  req(id, &Request_Network{Network: &Request_CreateNetwork{}}),
		"":         req(id, nil),
	}
}

func allReplies(id uint64) map[string]*Response {
	return map[string]*Response{
		"hello":    ReplyHello(id, "1"),
		"run":      ReplyRun(id, 3),
		"kill":     ReplyKill(id),
		"shutdown": ReplyShutdown(id),
		"network":  ReplyNetwork(id, UDPEndpoint(netip.MustParseAddrPort("127.0.0.1:1"))),
		"error":    ReplyError(id, Response_NOT_FOUND, "no", nil),
	}
}

func TestCommandNames(t *testing.T) {
	for name, r := range allRequests(2) {
		if got := CommandName(r); got != name {
			t.Errorf("CommandName = %q, want %q", got, name)
		}
	}
	if CommandName(nil) != "" || ResponseName(nil) != "" || ResponseName(&Response{Id: 2}) != "" {
		t.Error("nil or empty messages have a name")
	}
	for name, r := range allReplies(2) {
		if got := ResponseName(r); got != name {
			t.Errorf("ResponseName = %q, want %q", got, name)
		}
	}
	if ResponseName(ProcessExited(1, 0)) != "status" || ResponseName(RuntimeCounter("c", 1)) != "rt_status" {
		t.Error("event names")
	}
}

func TestReplyMatches(t *testing.T) {
	for reqName, r := range allRequests(5) {
		for respName, resp := range allReplies(5) {
			want := respName == "error" || respName == reqName
			if got := ReplyMatches(r, resp); got != want {
				t.Errorf("request %q, reply %q: ReplyMatches = %v, want %v", reqName, respName, got, want)
			}
		}
		for _, wrong := range []*Response{
			allReplies(6)["error"], // other id
			nil,
			{Id: 5}, // no variant: the ExeUnit panics
			{Id: 5, Event: true, Command: allReplies(5)["error"].Command}, // routed as an event
			ProcessExited(5, 0),
			RuntimeCounter("x", 1),
		} {
			if ReplyMatches(r, wrong) {
				t.Errorf("request %q accepted %v", reqName, wrong)
			}
		}
	}
	if ReplyMatches(nil, ReplyError(0, Response_INTERNAL, "", nil)) {
		t.Error("nil request matched")
	}
}

func TestEndpoints(t *testing.T) {
	cases := []struct {
		ep        Endpoint
		kind      EndpointKind
		addr, url string
		valid     bool
	}{
		{UDPEndpoint(netip.MustParseAddrPort("127.0.0.1:40000")), EndpointUDPDatagram, "127.0.0.1:40000", "udp://127.0.0.1:40000", true},
		{UDPEndpoint(netip.MustParseAddrPort("[::ffff:127.0.0.1]:9")), EndpointUDPDatagram, "127.0.0.1:9", "udp://127.0.0.1:9", true},
		{TCPStreamEndpoint(netip.MustParseAddrPort("[::1]:80")), EndpointTCPStream, "[::1]:80", "tcp://[::1]:80", true},
		{UnixStreamEndpoint("/run/gvpn/vpn.sock"), EndpointUnixStream, "/run/gvpn/vpn.sock", "unix:///run/gvpn/vpn.sock", true},
		{UDPEndpoint(netip.AddrPort{}), EndpointNone, "", "none", false},
		{TCPStreamEndpoint(netip.AddrPort{}), EndpointNone, "", "none", false},
		{UnixStreamEndpoint(""), EndpointNone, "", "none", false},
		{Endpoint{}, EndpointNone, "", "none", false},
	}
	for _, c := range cases {
		if c.ep.Kind() != c.kind || c.ep.Addr() != c.addr || c.ep.String() != c.url || c.ep.IsValid() != c.valid {
			t.Errorf("%v: kind %v addr %q valid %v", c.ep, c.ep.Kind(), c.ep.Addr(), c.ep.IsValid())
			continue
		}
		reply := ReplyNetwork(7, c.ep)
		if !ReplyMatches(allRequests(7)["network"], reply) {
			t.Errorf("%v: reply %v does not match a network request", c.ep, reply)
		}
		if !c.valid {
			if reply.GetError().GetCode() != Response_INTERNAL || reply.GetError().GetMessage() == "" {
				t.Errorf("invalid endpoint gave %v, want an INTERNAL error reply", reply)
			}
			continue
		}
		got, ok := ResponseEndpoint(reply)
		if !ok || got != c.ep {
			t.Errorf("ResponseEndpoint(%v) = %v, %v", reply, got, ok)
		}
	}

	for _, unusable := range []*Response{
		nil,
		ReplyHello(1, ""),
		{Command: &Response_Network{Network: &Response_CreateNetwork{}}},
		{Command: &Response_Network{Network: &Response_CreateNetwork{Endpoint: &Response_CreateNetwork_TcpListener{TcpListener: "127.0.0.1:1"}}}},
		{Command: &Response_Network{Network: &Response_CreateNetwork{Endpoint: &Response_CreateNetwork_UnixDatagram{UnixDatagram: "/x"}}}},
		{Command: &Response_Network{Network: &Response_CreateNetwork{Endpoint: &Response_CreateNetwork_UdpDatagram{}}}},
	} {
		if ep, ok := ResponseEndpoint(unusable); ok {
			t.Errorf("ResponseEndpoint(%v) = %v, true", unusable, ep)
		}
	}
}

func TestReplyErrorSanitizes(t *testing.T) {
	ctx := map[string]string{"path\xff": "/tmp/\xfe", "ok": "fine"}
	resp := ReplyError(3, Response_BAD_REQUEST, "open /tmp/\xff: no such file", ctx)
	ctx["later"] = "mutation"
	want := map[string]string{"path\uFFFD": "/tmp/\uFFFD", "ok": "fine"}
	if got := resp.GetError().GetContext(); !maps.Equal(got, want) {
		t.Errorf("context = %q, want %q", got, want)
	}
	if got := resp.GetError().GetMessage(); got != "open /tmp/\uFFFD: no such file" {
		t.Errorf("message = %q", got)
	}
	framed := encode(t, resp)
	back := decodeOne(t, toExeUnit, framed)
	if !proto.Equal(back, resp) {
		t.Errorf("round trip: %v", back)
	}
	if ReplyError(3, Response_INTERNAL, "x", map[string]string{}).GetError().Context != nil {
		t.Error("empty context should stay nil")
	}
}

func TestEventsCopyInput(t *testing.T) {
	out, errb, state := []byte("out"), []byte("err"), []byte(`{"a":1}`)
	o := ProcessOutput(4, out, errb)
	s := RuntimeState("s", state)
	out[0], errb[0], state[0] = 'X', 'X', 'X'
	if string(o.GetStatus().GetStdout()) != "out" || string(o.GetStatus().GetStderr()) != "err" {
		t.Errorf("ProcessOutput kept the caller's buffers: %v", o)
	}
	if string(s.GetRtStatus().GetState().GetValue()) != `{"a":1}` {
		t.Errorf("RuntimeState kept the caller's buffer: %v", s)
	}
	for _, ev := range []*Response{o, s, ProcessExited(1, 2), RuntimeCounter("c", 2)} {
		if !ev.GetEvent() || ev.GetId() != 0 {
			t.Errorf("event %v: event flag or id wrong", ev)
		}
	}
	if st := o.GetStatus(); !st.GetRunning() || st.GetPid() != 4 {
		t.Errorf("output event %v", o)
	}
	if st := ProcessExited(9, 3).GetStatus(); st.GetRunning() || st.GetPid() != 9 || st.GetReturnCode() != 3 {
		t.Errorf("exit event %v", st)
	}
}
