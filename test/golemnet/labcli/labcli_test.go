package labcli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/runtime/api"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const pingIputils = `PING node-b (192.168.0.3) 56(84) bytes of data.
64 bytes from node-b (192.168.0.3): icmp_seq=1 ttl=64 time=1.17 ms
64 bytes from node-b (192.168.0.3): icmp_seq=2 ttl=64 time=0.391 ms

--- node-b ping statistics ---
2 packets transmitted, 2 received, 0% packet loss, time 201ms
rtt min/avg/max/mdev = 0.391/0.782/1.173/0.391 ms
`

const pingLost = `PING 192.168.0.9 (192.168.0.9) 56(84) bytes of data.
From 192.168.0.2 icmp_seq=1 Destination Host Unreachable

--- 192.168.0.9 ping statistics ---
3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2041ms
`

const pingBusybox = `PING 10.0.0.2 (10.0.0.2): 56 data bytes
64 bytes from 10.0.0.2: seq=0 ttl=64 time=0.101 ms

--- 10.0.0.2 ping statistics ---
3 packets transmitted, 3 packets received, 0% packet loss
round-trip min/avg/max = 0.080/0.095/0.101 ms
`

func TestParsePing(t *testing.T) {
	cases := []struct {
		out  string
		want PingStats
		err  bool
	}{
		{pingIputils, PingStats{Sent: 2, Received: 2, HasRTT: true, MinMs: 0.391, AvgMs: 0.782, MaxMs: 1.173, MdevMs: 0.391}, false},
		{pingLost, PingStats{Sent: 3, Received: 0}, false},
		// busybox has no mdev.
		{pingBusybox, PingStats{Sent: 3, Received: 3, HasRTT: true, MinMs: 0.080, AvgMs: 0.095, MaxMs: 0.101}, false},
		// iputils under load: errors, and more after the rtt values.
		{"200 packets transmitted, 198 received, +2 errors, 1% packet loss, time 2101ms\nrtt min/avg/max/mdev = 0.210/0.301/1.020/0.050 ms, pipe 2, ipg/ewma 10.5/0.3 ms\n",
			PingStats{Sent: 200, Received: 198, HasRTT: true, MinMs: 0.210, AvgMs: 0.301, MaxMs: 1.020, MdevMs: 0.050}, false},
		// A malformed rtt line leaves the counts usable but no RTTs.
		{"3 packets transmitted, 3 received\nrtt min/avg/max/mdev = 0.1/0.2/0.3/x ms\n", PingStats{Sent: 3, Received: 3}, false},
		{"1 packets transmitted, 1 packets received\nround-trip min/avg/max = inf/inf/inf ms\n", PingStats{Sent: 1, Received: 1}, false},
		{"ping: node-x: Name or service not known\n", PingStats{}, true},
		{"", PingStats{}, true},
		{"x packets transmitted, 2 received\nrtt min/avg/max/mdev = a/b/c/d ms\n", PingStats{}, true},
	}
	for i, tc := range cases {
		got, err := ParsePing([]byte(tc.out))
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("case %d: got %+v, %v; want %+v, error %v", i, got, err, tc.want, tc.err)
		}
	}
}

func TestParseIperf3(t *testing.T) {
	b, err := os.ReadFile("testdata/iperf3-client.json")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseIperf3(b)
	if err != nil {
		t.Fatal(err)
	}
	if r.BitsPerSecond < 1e9 || r.Seconds < 0.9 || r.Retransmits != 0 {
		t.Fatalf("parsed %+v", r)
	}
	// end.cpu_utilization_percent.host_total and remote_total of the file.
	if r.ClientCPU != 17.7336958086067 || r.ServerCPU != 61.0920560299338 {
		t.Errorf("cpu %v / %v", r.ClientCPU, r.ServerCPU)
	}
	r, err = ParseIperf3([]byte(`{"end":{"sum_sent":{"retransmits":5000000000},"sum_received":{"seconds":1,"bits_per_second":8}}}`))
	if err != nil || r.Retransmits != 5_000_000_000 {
		t.Errorf("retransmits beyond 32 bits: %+v %v", r, err)
	}
	_, err = ParseIperf3([]byte(`{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}`))
	if !errors.Is(err, ErrIperf3) || !strings.Contains(err.Error(), "Connection refused") {
		t.Fatalf("error report: %v", err)
	}
	for _, bad := range []string{"", "iperf3: error", `{"end":{}}`, `{"end":{"sum_received":{"seconds":1,"bits_per_second":-5}}}`} {
		if _, err := ParseIperf3([]byte(bad)); err == nil || errors.Is(err, ErrIperf3) {
			t.Errorf("%q: %v, want an error other than ErrIperf3", bad, err)
		}
	}
}

func TestParseIPLink(t *testing.T) {
	li, err := ParseIPLink([]byte("5: vpn0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1220 qdisc fq_codel state UNKNOWN mode DEFAULT group default qlen 1000\\    link/ether 90:13:c0:a8:00:02 brd ff:ff:ff:ff:ff:ff\n"))
	if err != nil || li != (LinkInfo{MTU: 1220, MAC: "90:13:c0:a8:00:02", Up: true}) {
		t.Fatalf("%+v %v", li, err)
	}
	li, err = ParseIPLink([]byte("5: vpn0: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN"))
	if err != nil || li.Up || li.MTU != 1500 || li.MAC != "" {
		t.Fatalf("%+v %v", li, err)
	}
	if _, err := ParseIPLink([]byte(`Device "vpn0" does not exist.`)); err == nil {
		t.Fatal("no link parsed")
	}
}

func TestParseSize(t *testing.T) {
	for s, want := range map[string]int64{"0": 0, "512": 512, "64k": 64 << 10, "8M": 8 << 20, "8MiB": 8 << 20, "1G": 1 << 30, "3MB": 3 << 20, "2K": 2048} {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "M", "-1", "1.5M", "10T", "99999999999G", "k8"} {
		if _, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) accepted", s)
		}
	}
}

// The payload is the same however it is read, and a prefix of a longer one.
func TestPayloadDeterministic(t *testing.T) {
	const size = 200_003 // not a multiple of the block or the word
	whole, err := io.ReadAll(NewPayload(size))
	if err != nil || len(whole) != size {
		t.Fatalf("read %d bytes, %v", len(whole), err)
	}
	var chunked bytes.Buffer
	g := NewPayload(size)
	buf := make([]byte, 7)
	for {
		n, err := g.Read(buf[:1+chunked.Len()%7])
		chunked.Write(buf[:n])
		if err == io.EOF {
			break
		}
	}
	if !bytes.Equal(whole, chunked.Bytes()) {
		t.Fatal("payload depends on the read sizes")
	}
	longer, _ := io.ReadAll(NewPayload(size + 100_000))
	if !bytes.Equal(longer[:size], whole) {
		t.Fatal("a shorter payload is not a prefix of a longer one")
	}
	sum := sha256.Sum256(whole)
	if PayloadSHA256(size) != hex.EncodeToString(sum[:]) {
		t.Fatal("PayloadSHA256 disagrees with the bytes")
	}
	if bytes.Count(whole, whole[:8]) != 1 {
		t.Fatal("the payload repeats")
	}
	if n, _ := io.Copy(io.Discard, NewPayload(0)); n != 0 {
		t.Fatal("empty payload has bytes")
	}
	f := filepath.Join(t.TempDir(), "p")
	os.WriteFile(f, whole, 0o600)
	if n, sha, err := FileSHA256(f); err != nil || n != size || sha != PayloadSHA256(size) {
		t.Fatalf("FileSHA256 = %d %s %v", n, sha, err)
	}
}

type rateWriter struct{ n int64 }

func (w *rateWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func TestServePayloadRate(t *testing.T) {
	// Only the amount is checked; the pacing is what the cut test relies on.
	var w rateWriter
	if err := servePayload(t.Context(), &w, 300<<10, 10<<20); err != nil || w.n != 300<<10 {
		t.Fatalf("wrote %d, %v", w.n, err)
	}
}

func TestDecodeRequest(t *testing.T) {
	valid := []string{
		`{"op":"status"}`,
		`{"op":"exec","node":"node-a","argv":["ping","-c","1","node-b"]}`,
		`{"op":"signal","signal":2}`,
		`{"op":"fault","node":"node-a","cut":true}`,
		`{"op":"fault","node":"node-a","latency_ms":50,"loss":0.1}`,
		`{"op":"fault","node":"node-a","restore":true}`,
		`{"op":"fault","node":"node-a","docker":"partition"}`,
		`{"op":"fault","node":"node-a","docker":"restart"}`,
	}
	for _, s := range valid {
		if _, err := decodeRequest([]byte(s)); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	invalid := []string{
		``, `[]`, `{"op":"reboot"}`, `{"op":"exec","node":"node-a"}`, `{"op":"exec","argv":["true"]}`,
		`{"op":"exec","node":"a","argv":[""]}`, `{"op":"exec","node":"a","argv":["a\u0000b"]}`,
		`{"op":"signal","signal":0}`, `{"op":"signal","signal":99}`,
		`{"op":"fault","node":"a"}`, `{"op":"fault","node":"a","restore":true,"cut":true}`,
		`{"op":"fault","node":"a","latency_ms":-1}`, `{"op":"fault","node":"a","latency_ms":1e9}`,
		`{"op":"fault","node":"a","loss":1.5}`, `{"op":"fault","cut":true}`,
		`{"op":"fault","node":"a","docker":"explode"}`, `{"op":"fault","node":"a","docker":"kill","cut":true}`,
		`{"op":"fault","node":"a","docker":"heal","restore":true}`,
	}
	for _, s := range invalid {
		if _, err := decodeRequest([]byte(s)); err == nil {
			t.Errorf("%s accepted", s)
		}
	}
}

// Bad input is one line on stderr and exit code 2, before anything is
// started or root is checked.
func TestBadInputIsOneLine(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"up", "--nodes", "0"}, "at least 1 node"},
		{[]string{"up", "--nodes", "65"}, "at most 64 nodes"},
		{[]string{"up", "--nodes", "3", "--net", "10.0.0.0/30"}, "too small for 3 nodes: it has room for 1"},
		{[]string{"up", "--net", "fd00::/64"}, "only IPv4"},
		{[]string{"up", "--net", "banana"}, "not a CIDR"},
		{[]string{"up", "--hostnames", "a,a"}, "given twice"},
		{[]string{"up", "--gateway", "yes"}, "gateway mode"},
		{[]string{"up", "--sandbox-prefix", "a/b"}, "--sandbox-prefix"},
		{[]string{"up", "--bogus"}, "unknown flag --bogus; see gvpn-lab up --help"},
		{[]string{"status", "--nodes", "2"}, "unknown flag --nodes"},
		{[]string{"up", "extra"}, `unexpected argument "extra"`},
		{[]string{"up", "--docker", "--also-net", "10.9.0.0/24"}, "--also-net and --docker together"},
		{[]string{"demo", "--docker", "--vm"}, "--vm and --docker together"},
		{[]string{"demo", "--http-size", "lots"}, "--http-size"},
		{[]string{"demo", "--iperf-time", "0"}, "--iperf-time"},
		{[]string{"exec"}, "missing NODE"},
		{[]string{"exec", "node-a"}, "missing the command"},
		{[]string{"exec", "node-a", "--"}, "missing the command"},
		{[]string{"fault", "--state-dir", dir}, "missing NODE"},
		{[]string{"fault", "node-a"}, "give --restore"},
		{[]string{"fault", "node-a", "--restore", "--cut"}, "give --restore"},
		{[]string{"fault", "node-a", "--cut", "--uncut"}, "--cut and --uncut"},
		{[]string{"fault", "node-a", "--loss", "2"}, "--loss 2"},
		{[]string{"fault", "node-a", "--latency", "-5ms"}, "--latency"},
		{[]string{"status", "now"}, `unexpected argument "now"`},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := Main(tc.args, &stdout, &stderr)
		lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) || stdout.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", tc.args, code, stdout.String(), stderr.String(), tc.want)
		}
	}
}

func TestHelpTeachesWithExamples(t *testing.T) {
	for _, cmd := range []string{"demo", "up", "exec", "status", "fault", "serve-http", "ping"} {
		var stdout, stderr bytes.Buffer
		if code := Main([]string{cmd, "--help"}, &stdout, &stderr); code != 0 {
			t.Errorf("%s --help: exit %d", cmd, code)
		}
		if !strings.Contains(stdout.String(), "Examples") || !strings.Contains(stdout.String(), "Usage:") {
			t.Errorf("%s --help lacks usage or examples:\n%s", cmd, stdout.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if Main([]string{"--help"}, &stdout, &stderr) != 0 || !strings.Contains(stdout.String(), "gvpn-lab demo") {
		t.Errorf("gvpn-lab --help: %q", stdout.String())
	}
	if strings.Contains(stdout.String(), "\n  -") {
		t.Errorf("a flag printed with one dash:\n%s", stdout.String())
	}
	stdout.Reset()
	if Main(nil, &stdout, &stderr) != 2 {
		t.Error("no command: want exit 2")
	}
	stdout.Reset()
	if Main([]string{"--version"}, &stdout, &stderr) != 0 || !strings.HasPrefix(stdout.String(), "gvpn-lab ") {
		t.Errorf("gvpn-lab --version: %q", stdout.String())
	}
	stdout.Reset()
	stderr.Reset()
	Main([]string{"up", "--help"}, &stdout, &stderr)
	if !strings.Contains(stdout.String(), "\n  --nodes NODES\n") || strings.Contains(stdout.String(), "\n  -nodes") {
		t.Errorf("up --help does not print flags as --flag:\n%s", stdout.String())
	}
}

// TestStatusJSONWithoutALab: a script asking for JSON gets JSON, saying no
// lab runs (or why it cannot tell).
func TestStatusJSONWithoutALab(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := Main([]string{"status", "--json", "--state-dir", t.TempDir()}, &stdout, &stderr)
	var st map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &st); err != nil || st["running"] != false || st["error"] == "" || len(st) != 2 || code == 0 {
		t.Errorf("status --json without a lab: exit %d, stdout %q (%v), stderr %q", code, stdout.String(), err, stderr.String())
	}
}

func TestProgressPlain(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b, 0, 2)
	p.Step(1, "first")
	p.Detail("doing %d", 1)
	p.Done("fine")
	p.Step(2, "second")
	p.Failed(io.ErrUnexpectedEOF)
	p.Close()
	p.Close()
	out := b.String()
	for _, want := range []string{"[1/2] first\n", "      doing 1\n", "ok [1/2] first: fine (", "FAILED [2/2] second: unexpected EOF ("} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\r") || strings.Contains(out, "\x1b") {
		t.Errorf("terminal codes in plain output: %q", out)
	}
}

type lockedBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu <- struct{}{}
	defer func() { <-l.mu }()
	return l.buf.Write(p)
}

func TestProgressTerminal(t *testing.T) {
	b := &lockedBuffer{mu: make(chan struct{}, 1)}
	p := newProgress(b, 30, 6)
	p.Step(3, "HTTP by hostname")
	p.Detail("node-b: curl http://node-a:8080/data?size=8388608")
	time.Sleep(250 * time.Millisecond) // let the ticker redraw once
	p.Done("ok")
	p.Close()
	out := b.buf.String()
	for line := range strings.SplitSeq(out, "\r\x1b[K") {
		line = strings.TrimSuffix(line, "\n")
		if strings.HasPrefix(line, "[") && len([]rune(line)) >= 30 {
			t.Errorf("live line %q is wider than the terminal", line)
		}
	}
	if !strings.Contains(out, "✓ [3/6] HTTP by hostname: ok (") {
		t.Errorf("no result line in %q", out)
	}
}

func TestTablesRender(t *testing.T) {
	rt := `{"up":true,"address":"192.168.0.2","network":"192.168.0.0/24","egress":{"frames":10,"bytes":868,"drops":{"ipv6":2}},"ingress":{"frames":9,"bytes":800}}`
	var st api.VPNStats
	if err := json.Unmarshal([]byte(rt), &st); err != nil {
		t.Fatal(err)
	}
	nodes := []NodeJSON{{Name: "node-a", IP: "192.168.0.2", Netns: "gvpn-lab-x", RuntimePid: 7, Alive: true, Runtime: &st,
		Hub: HubJSON{RxFrames: 10, RxBytes: 868, Drops: map[string]uint64{"no_route": 3, "ipv6": 1}}, Fault: FaultJSON{Cut: true, LatencyMs: 50}}}
	var b bytes.Buffer
	writeDemo(&b, DemoSummary{OK: true, Network: "192.168.0.0/24", Nodes: nodes,
		Pings:      []PingResult{{From: "node-a", To: "node-b", IP: "192.168.0.3", Sent: 3, Received: 3, RTTAvgMs: 0.4}},
		HTTP:       []HTTPResult{{Client: "node-b", URL: "http://node-a:8080/data", Bytes: 8 << 20, SHA256OK: true, BitsPerSecond: 5e8}},
		Throughput: &IperfRunResult{From: "node-b", To: "node-a", Protocol: "tcp", Seconds: 3, BitsPerSecond: 1.2e9}})
	for _, want := range []string{"all steps passed", "node-a → node-b", "8.0 MiB", "1.20 Gbit/s", "ipv6=1 no_route=3", "10 (868 B)", "egress ipv6=2", "9 (800 B)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("demo table lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	writeStatus(&b, StatusJSON{Pid: 1, Network: "192.168.0.0/24", Started: time.Now(), Nodes: nodes})
	for _, want := range []string{"pid 7", "cut, latency 50ms", "gvpn-lab-x"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status table lacks %q:\n%s", want, b.String())
		}
	}
}

func FuzzParsePing(f *testing.F) {
	for _, s := range []string{pingIputils, pingLost, pingBusybox} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		st, err := ParsePing(out)
		if err == nil && (st.Sent < 0 || st.Received < 0) {
			t.Fatalf("negative counts %+v", st)
		}
		for _, v := range []float64{st.MinMs, st.AvgMs, st.MaxMs, st.MdevMs} {
			if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) || (v != 0 && !st.HasRTT) {
				t.Fatalf("bad RTTs %+v", st)
			}
		}
	})
}

func FuzzParseIperf3(f *testing.F) {
	if b, err := os.ReadFile("testdata/iperf3-client.json"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"error":"x"}`))
	f.Fuzz(func(t *testing.T, out []byte) {
		if r, err := ParseIperf3(out); err == nil && !(r.BitsPerSecond > 0) {
			t.Fatalf("accepted a report without data: %+v", r)
		}
	})
}

func FuzzParseIPLink(f *testing.F) {
	f.Add([]byte("5: vpn0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1220 qdisc fq_codel link/ether 90:13:c0:a8:00:02 brd ff:ff:ff:ff:ff:ff"))
	f.Fuzz(func(t *testing.T, out []byte) {
		if li, err := ParseIPLink(out); err == nil && li.MTU <= 0 {
			t.Fatalf("accepted MTU %d", li.MTU)
		}
	})
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"op":"exec","node":"node-a","argv":["ping","-c","1","node-b"]}`))
	f.Add([]byte(`{"op":"fault","node":"node-a","latency_ms":50,"loss":0.1}`))
	f.Add([]byte(`{"op":"signal","signal":2}`))
	f.Add([]byte(`{"op":"fault","node":"node-a","docker":"pause"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := decodeRequest(line)
		if err != nil {
			return
		}
		switch r.Op {
		case "exec":
			if r.Node == "" || len(r.Argv) == 0 || r.Argv[0] == "" {
				t.Fatalf("accepted exec %+v", r)
			}
		case "fault":
			if r.Loss != nil && !(*r.Loss >= 0 && *r.Loss <= 1) {
				t.Fatalf("accepted loss %v", *r.Loss)
			}
			if r.Docker != "" && (!slices.Contains(dockerFaults, r.Docker) || r.Cut != nil || r.LatencyMs != nil || r.Loss != nil || r.Restore) {
				t.Fatalf("accepted docker fault %+v", r)
			}
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"8M", "512", "64k", "1GiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseSize(s); err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}
