package main

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

func TestParseIperfRealOutput(t *testing.T) {
	b, err := os.ReadFile("testdata/iperf3-client.json")
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseIperf(b)
	if err != nil {
		t.Fatal(err)
	}
	// Values from the captured file (iperf3 3.12, 1 s over loopback).
	if r.BitsPerSecond != 20414340191.14693 || r.Seconds != 1.000173 {
		t.Errorf("rate %v over %v s", r.BitsPerSecond, r.Seconds)
	}
	if math.Abs(r.ClientCPU-29.07880620111754) > 1e-9 || math.Abs(r.ServerCPU-55.38637506611303) > 1e-9 {
		t.Errorf("cpu %v / %v", r.ClientCPU, r.ServerCPU)
	}
}

func TestParseIperfErrors(t *testing.T) {
	b, err := os.ReadFile("testdata/iperf3-refused.json")
	if err != nil {
		t.Fatal(err)
	}
	// iperf3's own error is a failed run, not output we misread.
	if _, err := parseIperf(b); err == nil || errors.Is(err, errParse) || !strings.Contains(err.Error(), "Connection refused") {
		t.Errorf("refused: %v, want a plain error", err)
	}
	for _, in := range []string{"", "not json", `{"end":{}}`, `{"end":{"sum_received":{"bits_per_second":-1,"seconds":1}}}`} {
		if _, err := parseIperf([]byte(in)); !errors.Is(err, errParse) {
			t.Errorf("%q: %v, want errParse", in, err)
		}
	}
}

func TestParsePing(t *testing.T) {
	b, err := os.ReadFile("testdata/ping-q.txt")
	if err != nil {
		t.Fatal(err)
	}
	p, err := parsePing(b)
	if err != nil {
		t.Fatal(err)
	}
	if p.Sent != 5 || p.Received != 5 || p.MinMs != 0.013 || p.AvgMs != 0.015 || p.MaxMs != 0.020 || p.MdevMs != 0.002 {
		t.Errorf("%+v", p)
	}

	// With errors and a pipe line, as iputils prints under load.
	p, err = parsePing([]byte("--- 192.168.0.3 ping statistics ---\n200 packets transmitted, 198 received, +2 errors, 1% packet loss, time 2101ms\nrtt min/avg/max/mdev = 0.210/0.301/1.020/0.050 ms, pipe 2, ipg/ewma 10.5/0.3 ms\n"))
	if err != nil || p.Received != 198 || p.AvgMs != 0.301 {
		t.Errorf("%+v %v", p, err)
	}

	if _, err := parsePing([]byte("3 packets transmitted, 0 received, 100% packet loss, time 2046ms\n")); err == nil || errors.Is(err, errParse) {
		t.Errorf("all lost: %v, want a plain error", err)
	}
	for _, in := range []string{"", "ping: connect: Network is unreachable", "3 packets transmitted, 3 received\nrtt min/avg/max/mdev = a/b/c/d ms"} {
		if _, err := parsePing([]byte(in)); !errors.Is(err, errParse) {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	// A comm with spaces and a ')' must not shift the fields.
	line := "1234 (gvpn) run (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 123 0 0"
	got, err := parseProcStat([]byte(line))
	if err != nil || got != 3.25 {
		t.Errorf("got %v, %v; want 3.25 s", got, err)
	}
	for _, in := range []string{"", "1 (x) S 1 2", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u s"} {
		if _, err := parseProcStat([]byte(in)); !errors.Is(err, errParse) {
			t.Errorf("%q: %v", in, err)
		}
	}
	self, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skip("no /proc")
	}
	if _, err := parseProcStat(self); err != nil {
		t.Error(err)
	}
}

func TestParseMachineStat(t *testing.T) {
	m, err := parseMachineStat([]byte("cpu  100 0 50 800 50 0 0 0 30 0\ncpu0 1 2 3 4\n"))
	if err != nil {
		t.Fatal(err)
	}
	// busy = user+system = 150 ticks; total excludes guest (already in user).
	if m.Busy != 1.5 || m.Total != 10 {
		t.Errorf("%+v", m)
	}
	if _, err := parseMachineStat([]byte("intr 1 2 3\n")); !errors.Is(err, errParse) {
		t.Error(err)
	}
}

func TestUDPRcvbufErrors(t *testing.T) {
	snmp := "Ip: Forwarding\nIp: 1\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 10 0 7 12 7 0\nUdpLite: InDatagrams\nUdpLite: 0\n"
	if n, err := udpRcvbufErrors([]byte(snmp)); err != nil || n != 7 {
		t.Errorf("%d %v", n, err)
	}
	if _, err := udpRcvbufErrors([]byte("Ip: a\nIp: 1\n")); !errors.Is(err, errParse) {
		t.Error(err)
	}
}

func TestParseLinkJSON(t *testing.T) {
	in := `[{"ifname":"vpn0","stats64":{"rx":{"bytes":1,"packets":10,"errors":1,"dropped":2},"tx":{"bytes":1,"packets":20,"errors":3,"dropped":4}}}]`
	c, err := parseLinkJSON([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := linkCounters{RxPackets: 10, RxErrors: 1, RxDropped: 2, TxPackets: 20, TxErrors: 3, TxDropped: 4}
	if c != want {
		t.Errorf("%+v", c)
	}
	if d := c.sub(linkCounters{RxPackets: 4, TxDropped: 1}); d.RxPackets != 6 || d.TxDropped != 3 {
		t.Errorf("sub %+v", d)
	}
	if _, err := parseLinkJSON([]byte("[]")); !errors.Is(err, errParse) {
		t.Error(err)
	}
}

func TestSummarize(t *testing.T) {
	s := summarize([]float64{3, 1, 2})
	if s != (spread{Median: 2, Min: 1, Max: 3, N: 3}) {
		t.Errorf("%+v", s)
	}
	if s := summarize([]float64{4, 1, 2, 3}); s.Median != 2.5 {
		t.Errorf("even: %+v", s)
	}
	if s := summarize(nil); s.N != 0 {
		t.Errorf("empty: %+v", s)
	}
	if i := medianIndex([]float64{0.9, 0.7, 0.8}); i != 2 {
		t.Errorf("median index %d, want 2", i)
	}
	if i := medianIndex([]float64{5, 5, 1, 9}); i != 0 {
		t.Errorf("median index %d, want 0 (lower middle, first of equals)", i)
	}
	if i := medianIndex(nil); i != -1 {
		t.Errorf("empty: %d", i)
	}
}

func FuzzParsePing(f *testing.F) {
	if b, err := os.ReadFile("testdata/ping-q.txt"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("1 packets transmitted, 1 received\nrtt min/avg/max/mdev = 1/2/3/4 ms"))
	f.Add([]byte("99999999999999999999 packets transmitted, 1 received"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePing(b)
		if err == nil && (p.Received <= 0 || !p.HasRTT || p.AvgMs < 0 || math.IsNaN(p.AvgMs) || math.IsInf(p.AvgMs, 0)) {
			t.Fatalf("accepted %+v", p)
		}
	})
}

func FuzzParseIperf(f *testing.F) {
	for _, name := range []string{"testdata/iperf3-client.json", "testdata/iperf3-refused.json"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"end":{"sum_received":{"bits_per_second":1e400,"seconds":1}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseIperf(b)
		if err == nil && !(finitePositive(r.BitsPerSecond) && finitePositive(r.Seconds)) {
			t.Fatalf("accepted %+v", r)
		}
	})
}

// finitePositive is what FuzzParseIperf asks of an accepted rate or interval.
func finitePositive(v float64) bool { return v > 0 && !math.IsInf(v, 1) }

func FuzzParseProcStat(f *testing.F) {
	f.Add([]byte("1234 (gvpn) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 123 0 0"))
	f.Add([]byte("1 ()) S"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, err := parseProcStat(b); err == nil && (v < 0 || math.IsNaN(v)) {
			t.Fatalf("accepted %v", v)
		}
		parseMachineStat(b)
		udpRcvbufErrors(b)
		parseLinkJSON(b)
	})
}
