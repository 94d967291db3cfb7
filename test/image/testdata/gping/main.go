// Command gping sends ICMP echo requests through an unprivileged ICMP
// socket (SOCK_DGRAM, allowed by net.ipv4.ping_group_range) and prints how
// many were answered. The image test puts it in its images because
// busybox's ping needs a raw socket, which an unprivileged payload does
// not get. Usage: gping HOST COUNT; it exits 1 unless every echo came back.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gping HOST COUNT")
		os.Exit(2)
	}
	count, err := strconv.Atoi(os.Args[2])
	if err != nil || count < 1 {
		fmt.Fprintln(os.Stderr, "gping: bad count")
		os.Exit(2)
	}
	dst, err := net.ResolveIPAddr("ip4", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "gping:", err)
		os.Exit(1)
	}
	c, err := icmp.ListenPacket("udp4", "0.0.0.0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "gping:", err)
		os.Exit(1)
	}
	defer c.Close()
	got := 0
	buf := make([]byte, 1500)
	for seq := 1; seq <= count; seq++ {
		m := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: os.Getpid() & 0xffff, Seq: seq, Data: []byte("gvpn image ping")}}
		b, _ := m.Marshal(nil)
		if _, err := c.WriteTo(b, &net.UDPAddr{IP: dst.IP}); err != nil {
			fmt.Fprintln(os.Stderr, "gping:", err)
			os.Exit(1)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			r, err := icmp.ParseMessage(1, buf[:n])
			if e, ok := r.Body.(*icmp.Echo); err == nil && ok && r.Type == ipv4.ICMPTypeEchoReply && e.Seq == seq {
				got++
				break
			}
		}
	}
	fmt.Printf("%s: %d/%d echoes answered\n", dst.IP, got, count)
	if got != count {
		os.Exit(1)
	}
}
