package labcli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// PingStats is what the summary lines of ping(8) say.
type PingStats struct {
	Sent, Received int
	// HasRTT reports whether a well-formed rtt line was read. ping prints
	// none when no reply came; the RTTs below are zero without one.
	HasRTT bool
	// RTTs in milliseconds. MdevMs is iputils' mean deviation; busybox
	// prints no mdev, so it stays zero there.
	MinMs, AvgMs, MaxMs, MdevMs float64
}

// ParsePing reads the statistics of iputils or busybox ping output:
//
//	3 packets transmitted, 3 received, 0% packet loss, time 402ms
//	rtt min/avg/max/mdev = 0.050/0.071/0.090/0.016 ms
//
// (busybox: "round-trip min/avg/max = …"). It fails when there is no
// "packets transmitted" line; an rtt line with a value that is not a
// finite non-negative number is ignored, leaving HasRTT false.
func ParsePing(out []byte) (PingStats, error) {
	var st PingStats
	found := false
	for line := range bytes.Lines(out) {
		s := strings.TrimSpace(string(line))
		if i := strings.Index(s, " packets transmitted, "); i > 0 {
			sent, err1 := strconv.Atoi(s[:i])
			rest := s[i+len(" packets transmitted, "):]
			j := strings.Index(rest, " ")
			if j <= 0 {
				continue
			}
			recv, err2 := strconv.Atoi(rest[:j])
			if err1 != nil || err2 != nil || sent < 0 || recv < 0 {
				continue
			}
			st.Sent, st.Received, found = sent, recv, true
			continue
		}
		if !strings.HasPrefix(s, "rtt ") && !strings.HasPrefix(s, "round-trip ") {
			continue
		}
		if v, ok := parseRTTs(s); ok {
			st.MinMs, st.AvgMs, st.MaxMs, st.MdevMs, st.HasRTT = v[0], v[1], v[2], v[3], true
		}
	}
	if !found {
		return st, errors.New("no ping statistics in the output")
	}
	return st, nil
}

// parseRTTs reads the values of an rtt line: min/avg/max and, from iputils,
// mdev (left zero when absent).
func parseRTTs(line string) (v [4]float64, ok bool) {
	eq := strings.Index(line, "= ")
	if eq < 0 {
		return v, false
	}
	vals := strings.Fields(line[eq+2:])
	if len(vals) == 0 {
		return v, false
	}
	parts := strings.Split(vals[0], "/")
	if len(parts) < 3 {
		return v, false
	}
	for k := range min(len(parts), len(v)) {
		f, err := strconv.ParseFloat(parts[k], 64)
		// ParseFloat takes "NaN" and "Inf" without an error.
		if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return v, false
		}
		v[k] = f
	}
	return v, true
}

// ErrIperf3 is wrapped by the error ParseIperf3 returns for a report in
// which iperf3 itself tells of a failure (its "error" field), so that
// callers can tell a failed run from output that is no usable report.
var ErrIperf3 = errors.New("iperf3")

// IperfResult is the part of iperf3's JSON report (-J) the lab and the
// benchmark (test/bench) read. The report is the client's; with -R the
// client receives, and sum_received is still the receiving side, so the
// fields mean the same in both directions.
type IperfResult struct {
	// Seconds and BitsPerSecond are the receiver's: what actually arrived.
	Seconds       float64
	BitsPerSecond float64
	// Retransmits is the sender's TCP retransmission count.
	Retransmits int64
	// ClientCPU and ServerCPU are iperf3's own CPU use on either end
	// (cpu_utilization_percent host_total and remote_total): user plus
	// system time over the run's wall time, in percent of one core.
	ClientCPU, ServerCPU float64
}

// ParseIperf3 reads the JSON report of an iperf3 TCP client run. A report
// with an "error" field is an error wrapping ErrIperf3 and carrying that
// text; a report without a positive receiver rate and interval is an error
// too.
func ParseIperf3(out []byte) (IperfResult, error) {
	var rep struct {
		Error string `json:"error"`
		End   struct {
			SumSent struct {
				Retransmits int64 `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				Seconds       float64 `json:"seconds"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			CPU struct {
				HostTotal   float64 `json:"host_total"`
				RemoteTotal float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return IperfResult{}, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if rep.Error != "" {
		return IperfResult{}, fmt.Errorf("%w: %s", ErrIperf3, rep.Error)
	}
	r := IperfResult{
		Seconds:       rep.End.SumReceived.Seconds,
		BitsPerSecond: rep.End.SumReceived.BitsPerSecond,
		Retransmits:   rep.End.SumSent.Retransmits,
		ClientCPU:     rep.End.CPU.HostTotal,
		ServerCPU:     rep.End.CPU.RemoteTotal,
	}
	// JSON has no Inf or NaN, so "> 0" is all a rate needs.
	if !(r.BitsPerSecond > 0) || !(r.Seconds > 0) {
		return r, fmt.Errorf("iperf3 report has no received data (%v bit/s over %v s)", r.BitsPerSecond, r.Seconds)
	}
	return r, nil
}

// LinkInfo is what `ip -o link show dev X` says about an interface.
type LinkInfo struct {
	MTU int
	MAC string
	Up  bool
}

// ParseIPLink reads one line of `ip -o link show`:
//
//	5: vpn0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1220 qdisc … link/ether 90:13:c0:a8:00:02 brd …
func ParseIPLink(out []byte) (LinkInfo, error) {
	var li LinkInfo
	f := strings.Fields(string(out))
	for i, w := range f {
		switch {
		case w == "mtu" && i+1 < len(f):
			li.MTU, _ = strconv.Atoi(f[i+1])
		case w == "link/ether" && i+1 < len(f):
			li.MAC = f[i+1]
		case strings.HasPrefix(w, "<") && strings.HasSuffix(w, ">"):
			for flag := range strings.SplitSeq(strings.Trim(w, "<>"), ",") {
				li.Up = li.Up || flag == "UP"
			}
		}
	}
	if li.MTU <= 0 {
		return li, fmt.Errorf("no MTU in %q", bytes.TrimSpace(out))
	}
	return li, nil
}
