package labcli

import (
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

const pingUsage = `gvpn-lab ping — ICMP echo through an unprivileged ICMP socket, for lab payloads
that run in an image (the demo uploads gvpn-lab and runs it inside a node).

An image's payload runs without capabilities on the host's network namespace
objects, so busybox's ping, which needs a raw socket, cannot run there; an
ICMP datagram socket (net.ipv4.ping_group_range, which the netns sandbox opens
to every group) can. The summary has iputils' form, which gvpn-lab parses.

Usage:
  gvpn-lab ping [-c COUNT] [-W SECONDS] HOST

Examples (with a lab up from an image):
  gvpn-lab exec node-b -- /golem/work/gvpn-lab ping -c 3 node-a

Flags:
`

func pingCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ping", pingUsage, stdout)
	count := fs.Int("c", 3, "`count` of echo requests")
	wait := fs.Int("W", 2, "`seconds` to wait for each reply")
	pos, code, ok := parseFlags(fs, args, stderr, 1)
	if !ok {
		return code
	}
	if len(pos) != 1 || *count < 1 || *count > 1000 || *wait < 1 {
		return fail(stderr, "ping", usagef("want one HOST, -c 1..1000 and -W of a second or more"))
	}
	dst, err := net.ResolveIPAddr("ip4", pos[0])
	if err != nil {
		return fail(stderr, "ping", err)
	}
	c, err := icmp.ListenPacket("udp4", "0.0.0.0")
	if err != nil {
		return fail(stderr, "ping", fmt.Errorf("ICMP datagram socket: %w", err))
	}
	defer c.Close()
	fmt.Fprintf(stdout, "PING %s (%s)\n", pos[0], dst.IP)
	var rtts []float64
	buf := make([]byte, 1500)
	for seq := 1; seq <= *count; seq++ {
		m := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: os.Getpid() & 0xffff, Seq: seq, Data: []byte("gvpn-lab ping")}}
		b, _ := m.Marshal(nil)
		sent := time.Now()
		if _, err := c.WriteTo(b, &net.UDPAddr{IP: dst.IP}); err != nil {
			return fail(stderr, "ping", err)
		}
		c.SetReadDeadline(sent.Add(time.Duration(*wait) * time.Second))
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				break // no reply in time
			}
			r, err := icmp.ParseMessage(1, buf[:n])
			if e, ok := r.Body.(*icmp.Echo); err == nil && ok && r.Type == ipv4.ICMPTypeEchoReply && e.Seq == seq {
				ms := float64(time.Since(sent).Microseconds()) / 1000
				rtts = append(rtts, ms)
				fmt.Fprintf(stdout, "%d bytes from %s: icmp_seq=%d time=%.3f ms\n", n, dst.IP, seq, ms)
				break
			}
		}
	}
	fmt.Fprintf(stdout, "--- %s ping statistics ---\n%d packets transmitted, %d received\n", pos[0], *count, len(rtts))
	if len(rtts) == 0 {
		return 1
	}
	lo, hi, sum := math.Inf(1), 0.0, 0.0
	for _, r := range rtts {
		lo, hi, sum = min(lo, r), max(hi, r), sum+r
	}
	fmt.Fprintf(stdout, "rtt min/avg/max = %.3f/%.3f/%.3f ms\n", lo, sum/float64(len(rtts)), hi)
	if len(rtts) != *count {
		return 1
	}
	return 0
}
