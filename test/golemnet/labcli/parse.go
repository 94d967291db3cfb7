package labcli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// PingStats is what the summary lines of ping(8) say.
type PingStats struct {
	Sent, Received int
	// RTTs in milliseconds; zero when no reply came.
	MinMs, AvgMs, MaxMs float64
}

// ParsePing reads the statistics of iputils or busybox ping output:
//
//	3 packets transmitted, 3 received, 0% packet loss, time 402ms
//	rtt min/avg/max/mdev = 0.050/0.071/0.090/0.016 ms
//
// (busybox: "round-trip min/avg/max = …"). It fails when there is no
// "packets transmitted" line.
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
		eq := strings.Index(s, "= ")
		if eq < 0 {
			continue
		}
		vals := strings.Fields(s[eq+2:])
		if len(vals) == 0 {
			continue
		}
		parts := strings.Split(vals[0], "/")
		if len(parts) < 3 {
			continue
		}
		var v [3]float64
		ok := true
		for k := range v {
			f, err := strconv.ParseFloat(parts[k], 64)
			if err != nil || f < 0 || f != f {
				ok = false
				break
			}
			v[k] = f
		}
		if ok {
			st.MinMs, st.AvgMs, st.MaxMs = v[0], v[1], v[2]
		}
	}
	if !found {
		return st, errors.New("no ping statistics in the output")
	}
	return st, nil
}

// IperfResult is the part of iperf3's JSON report (-J) the lab shows.
type IperfResult struct {
	Seconds       float64
	BitsPerSecond float64 // as received by the server
	Retransmits   int
}

// ParseIperf3 reads the JSON report of an iperf3 TCP client run. A report
// with an "error" field is an error carrying that text.
func ParseIperf3(out []byte) (IperfResult, error) {
	var rep struct {
		Error string `json:"error"`
		End   struct {
			SumSent struct {
				Seconds       float64 `json:"seconds"`
				BitsPerSecond float64 `json:"bits_per_second"`
				Retransmits   int     `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				Seconds       float64 `json:"seconds"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return IperfResult{}, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if rep.Error != "" {
		return IperfResult{}, fmt.Errorf("iperf3: %s", rep.Error)
	}
	r := IperfResult{
		Seconds:       rep.End.SumReceived.Seconds,
		BitsPerSecond: rep.End.SumReceived.BitsPerSecond,
		Retransmits:   rep.End.SumSent.Retransmits,
	}
	if !(r.BitsPerSecond > 0) || !(r.Seconds > 0) {
		return r, errors.New("iperf3 report has no received data")
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
