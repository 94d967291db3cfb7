package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// This file holds the pure parts of the benchmark: parsing what iperf3,
// ping and /proc print, and the statistics over repetitions. It runs
// anywhere, so it is unit tested and fuzzed without root.

// errParse wraps every "the tool printed something we do not understand".
var errParse = errors.New("bench: cannot parse")

// iperfRun is one iperf3 client run as its JSON report (-J) tells it.
type iperfRun struct {
	// BitsPerSecond is the receiver's rate: what actually arrived.
	BitsPerSecond float64
	// Seconds is the measured interval of the receiver.
	Seconds float64
	// Retransmits is the sender's TCP retransmission count.
	Retransmits int64
	// ClientCPU and ServerCPU are iperf3's own CPU use, in percent of one
	// core (user+system over the run's wall time).
	ClientCPU, ServerCPU float64
}

// iperfJSON is the part of iperf3's -J report we read (iperf3 ≥ 3.1).
type iperfJSON struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			Seconds       float64 `json:"seconds"`
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   int64   `json:"retransmits"`
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

// parseIperf reads an iperf3 client's -J output. With -R the client is the
// receiver, and sum_received is still the side that received, so the same
// field is the throughput in both directions.
func parseIperf(out []byte) (iperfRun, error) {
	var j iperfJSON
	if err := json.Unmarshal(out, &j); err != nil {
		return iperfRun{}, fmt.Errorf("%w iperf3 JSON: %v", errParse, err)
	}
	if j.Error != "" {
		return iperfRun{}, fmt.Errorf("iperf3: %s", j.Error)
	}
	r := iperfRun{
		BitsPerSecond: j.End.SumReceived.BitsPerSecond,
		Seconds:       j.End.SumReceived.Seconds,
		Retransmits:   j.End.SumSent.Retransmits,
		ClientCPU:     j.End.CPU.HostTotal,
		ServerCPU:     j.End.CPU.RemoteTotal,
	}
	if !finitePositive(r.BitsPerSecond) || !finitePositive(r.Seconds) {
		return r, fmt.Errorf("%w iperf3 JSON: no receiver rate (bits_per_second %v over %v s)", errParse, r.BitsPerSecond, r.Seconds)
	}
	return r, nil
}

func finitePositive(v float64) bool { return v > 0 && !math.IsInf(v, 1) }

// pingResult is ping's summary, times in milliseconds.
type pingResult struct {
	Size                int // ICMP payload bytes (-s)
	Sent, Received      int
	Min, Avg, Max, Mdev float64
}

var (
	pingCounts = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)
	pingRTT    = regexp.MustCompile(`= ([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+) ms`)
)

// parsePing reads the summary iputils ping prints (with or without -q):
//
//	200 packets transmitted, 200 received, 0% packet loss, time 2036ms
//	rtt min/avg/max/mdev = 0.031/0.052/0.101/0.012 ms
func parsePing(out []byte) (pingResult, error) {
	var r pingResult
	m := pingCounts.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("%w ping output: no packet counts in %q", errParse, tail(out, 200))
	}
	var err error
	if r.Sent, err = strconv.Atoi(string(m[1])); err != nil {
		return r, fmt.Errorf("%w ping output: %v", errParse, err)
	}
	if r.Received, err = strconv.Atoi(string(m[2])); err != nil {
		return r, fmt.Errorf("%w ping output: %v", errParse, err)
	}
	if r.Received == 0 {
		return r, fmt.Errorf("ping: none of %d echo requests was answered", r.Sent)
	}
	t := pingRTT.FindSubmatch(out)
	if t == nil {
		return r, fmt.Errorf("%w ping output: no rtt line in %q", errParse, tail(out, 200))
	}
	vals := make([]float64, 4)
	for i := range vals {
		v, err := strconv.ParseFloat(string(t[i+1]), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return r, fmt.Errorf("%w ping output: bad rtt %q", errParse, t[i+1])
		}
		vals[i] = v
	}
	r.Min, r.Avg, r.Max, r.Mdev = vals[0], vals[1], vals[2], vals[3]
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

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
