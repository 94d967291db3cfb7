package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gvpn/gvpn/test/golemnet/labcli"
)

// This file holds the pure parts of the benchmark: parsing what iperf3,
// ping (both with the lab's parsers, labcli) and /proc print, and the
// statistics over repetitions. It needs no root or namespaces, so it is
// unit tested and fuzzed without them.

// errParse wraps every "the tool printed something we do not understand".
var errParse = errors.New("bench: cannot parse")

// parseIperf reads an iperf3 client's -J output with labcli.ParseIperf3.
// A failure iperf3 itself reports (labcli.ErrIperf3) is a failed run, not
// output we misread, so only the other errors wrap errParse.
func parseIperf(out []byte) (labcli.IperfResult, error) {
	r, err := labcli.ParseIperf3(out)
	if err != nil && !errors.Is(err, labcli.ErrIperf3) {
		err = fmt.Errorf("%w: %w", errParse, err)
	}
	return r, err
}

// udpRun is one iperf3 UDP run: datagrams sent and received per second.
type udpRun struct {
	Seconds     float64
	Packets     int64 // sent
	LostPackets int64 // of those, never received
}

// SentPPS and RecvPPS are datagram rates.
func (u udpRun) SentPPS() float64 { return float64(u.Packets) / u.Seconds }
func (u udpRun) RecvPPS() float64 { return float64(u.Packets-u.LostPackets) / u.Seconds }

// parseIperfUDP reads an iperf3 UDP client's -J output: the sender's packet
// count and the receiver's loss (end.sum; newer iperf3 also has
// sum_received, preferred when there).
func parseIperfUDP(out []byte) (udpRun, error) {
	type sum struct {
		Seconds     float64 `json:"seconds"`
		Packets     int64   `json:"packets"`
		LostPackets int64   `json:"lost_packets"`
	}
	var rep struct {
		Error string `json:"error"`
		End   struct {
			Sum         sum  `json:"sum"`
			SumReceived *sum `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return udpRun{}, fmt.Errorf("%w: iperf3 UDP JSON: %w", errParse, err)
	}
	if rep.Error != "" {
		return udpRun{}, fmt.Errorf("%w: %s", labcli.ErrIperf3, rep.Error)
	}
	s := rep.End.Sum
	if r := rep.End.SumReceived; r != nil && r.Packets > 0 {
		s = *r
	}
	if !(s.Seconds > 0) || s.Packets <= 0 || s.LostPackets < 0 || s.LostPackets > s.Packets {
		return udpRun{}, fmt.Errorf("%w: iperf3 UDP report without usable counts (%+v)", errParse, s)
	}
	return udpRun(s), nil
}

// pingResult is one ping run's summary.
type pingResult struct {
	Size int // ICMP payload bytes (-s)
	labcli.PingStats
}

// parsePing reads the summary iputils ping prints (with or without -q) with
// labcli.ParsePing. The benchmark reports RTTs, so unlike the lab it also
// fails when no echo was answered (a plain error: the path is broken, the
// output is fine) and when there is no well-formed rtt line (errParse).
func parsePing(out []byte) (pingResult, error) {
	st, err := labcli.ParsePing(out)
	r := pingResult{PingStats: st}
	switch {
	case err != nil:
		return r, fmt.Errorf("%w: %w", errParse, err)
	case r.Received == 0:
		return r, fmt.Errorf("ping: none of %d echo requests was answered", r.Sent)
	case !r.HasRTT:
		return r, fmt.Errorf("%w: no well-formed rtt line in the ping output", errParse)
	}
	return r, nil
}

// cpuTicksPerSecond is USER_HZ, the unit of /proc's CPU times. It is 100 on
// every Linux architecture Go supports (the kernel fixes it for userspace,
// whatever CONFIG_HZ is).
const cpuTicksPerSecond = 100

// parseProcStat returns utime+stime, in seconds, from /proc/PID/stat: the
// CPU the whole process (all its threads) consumed, not its children.
func parseProcStat(b []byte) (float64, error) {
	// The command name is in parentheses and may hold spaces or ')'; the
	// fields after the last ')' start with field 3 (state).
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("%w /proc/PID/stat: no ')'", errParse)
	}
	f := strings.Fields(string(b[i+1:]))
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("%w /proc/PID/stat: %d fields", errParse, len(f)+2)
	}
	u, err1 := strconv.ParseUint(f[utime], 10, 64)
	s, err2 := strconv.ParseUint(f[stime], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%w /proc/PID/stat: utime %q stime %q", errParse, f[utime], f[stime])
	}
	return float64(u+s) / cpuTicksPerSecond, nil
}

// machineCPU is the first line of /proc/stat: all CPUs together, seconds.
type machineCPU struct {
	Busy, Total float64
}

// parseMachineStat reads the "cpu " line of /proc/stat. Busy is everything
// but idle and iowait.
func parseMachineStat(b []byte) (machineCPU, error) {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return machineCPU{}, fmt.Errorf("%w /proc/stat: first line %q", errParse, line)
	}
	var m machineCPU
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return machineCPU{}, fmt.Errorf("%w /proc/stat: %q", errParse, s)
		}
		sec := float64(v) / cpuTicksPerSecond
		// Fields 9 and 10 (guest, guest_nice) are already in user and nice.
		if i >= 8 {
			continue
		}
		m.Total += sec
		if i != 3 && i != 4 { // idle, iowait
			m.Busy += sec
		}
	}
	return m, nil
}

// udpRcvbufErrors returns the RcvbufErrors counter from /proc/net/snmp: UDP
// datagrams the kernel dropped because a socket's receive buffer was full.
func udpRcvbufErrors(snmp []byte) (uint64, error) {
	var head []string
	for line := range strings.SplitSeq(string(snmp), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		i := slices.Index(head, "RcvbufErrors")
		if i < 0 || i >= len(f) {
			break
		}
		return strconv.ParseUint(f[i], 10, 64)
	}
	return 0, fmt.Errorf("%w /proc/net/snmp: no Udp RcvbufErrors", errParse)
}

// linkCounters are a network interface's kernel counters.
type linkCounters struct {
	RxPackets, RxDropped, RxErrors uint64
	TxPackets, TxDropped, TxErrors uint64
}

func (c linkCounters) sub(o linkCounters) linkCounters {
	return linkCounters{
		RxPackets: c.RxPackets - o.RxPackets, RxDropped: c.RxDropped - o.RxDropped, RxErrors: c.RxErrors - o.RxErrors,
		TxPackets: c.TxPackets - o.TxPackets, TxDropped: c.TxDropped - o.TxDropped, TxErrors: c.TxErrors - o.TxErrors,
	}
}

// parseLinkJSON reads `ip -s -j link show dev X`.
func parseLinkJSON(out []byte) (linkCounters, error) {
	var links []struct {
		Stats struct {
			Rx struct {
				Packets uint64 `json:"packets"`
				Errors  uint64 `json:"errors"`
				Dropped uint64 `json:"dropped"`
			} `json:"rx"`
			Tx struct {
				Packets uint64 `json:"packets"`
				Errors  uint64 `json:"errors"`
				Dropped uint64 `json:"dropped"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return linkCounters{}, fmt.Errorf("%w ip -s -j link: %v", errParse, err)
	}
	if len(links) != 1 {
		return linkCounters{}, fmt.Errorf("%w ip -s -j link: %d links", errParse, len(links))
	}
	s := links[0].Stats
	return linkCounters{
		RxPackets: s.Rx.Packets, RxDropped: s.Rx.Dropped, RxErrors: s.Rx.Errors,
		TxPackets: s.Tx.Packets, TxDropped: s.Tx.Dropped, TxErrors: s.Tx.Errors,
	}, nil
}

// spread is the median and range of repeated measurements.
type spread struct {
	Median, Min, Max float64
	N                int
}

// summarize returns the median (the mean of the two middle values for an
// even count) and the range of vs.
func summarize(vs []float64) spread {
	if len(vs) == 0 {
		return spread{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return spread{Median: med, Min: s[0], Max: s[n-1], N: n}
}

// fmtSpread renders s as "median (min–max)".
func fmtSpread(s spread) string {
	if s.N == 0 {
		return "n/a"
	}
	if s.N == 1 {
		return fmt.Sprintf("%.3f", s.Median)
	}
	return fmt.Sprintf("%.3f (%.3f–%.3f)", s.Median, s.Min, s.Max)
}

// medianIndex returns the index in vs of the run whose value is the median
// (the lower middle one for an even count), so that the CPU figures shown
// belong to a real run.
func medianIndex(vs []float64) int {
	if len(vs) == 0 {
		return -1
	}
	idx := make([]int, len(vs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case vs[a] < vs[b]:
			return -1
		case vs[a] > vs[b]:
			return 1
		}
		return 0
	})
	return idx[(len(idx)-1)/2]
}

// wholeSeconds rounds d to whole seconds, at least 1: iperf3's -t.
func wholeSeconds(d time.Duration) int {
	return max(1, int((d+time.Second/2)/time.Second))
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
