//go:build linux

package golemnet

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gvpn/gvpn/netcfg"
)

func TestLabConfigValidate(t *testing.T) {
	ok := LabConfig{Runtime: "/bin/true", Nodes: 3}
	cases := []struct {
		name string
		edit func(*LabConfig)
		want string // substring of the error; "" means valid
	}{
		{"defaults", func(*LabConfig) {}, ""},
		{"no runtime", func(c *LabConfig) { c.Runtime = "" }, "no runtime"},
		{"zero nodes", func(c *LabConfig) { c.Nodes = 0 }, "at least 1 node"},
		{"negative nodes", func(c *LabConfig) { c.Nodes = -2 }, "at least 1 node"},
		{"too many nodes", func(c *LabConfig) { c.Nodes = MaxLabNodes + 1 }, "at most 64"},
		{"ipv6", func(c *LabConfig) { c.Net = netip.MustParsePrefix("fd00::/64") }, "not IPv4"},
		{"/30 holds one", func(c *LabConfig) { c.Nodes = 1; c.Net = netip.MustParsePrefix("10.0.0.0/30") }, ""},
		{"/30 too small", func(c *LabConfig) { c.Nodes = 2; c.Net = netip.MustParsePrefix("10.0.0.0/30") }, "room for 1 node, not 2"},
		{"/31 holds none", func(c *LabConfig) { c.Nodes = 1; c.Net = netip.MustParsePrefix("10.0.0.0/31") }, "room for 0 nodes"},
		{"/26 full", func(c *LabConfig) { c.Nodes = 61; c.Net = netip.MustParsePrefix("10.0.0.0/26") }, ""},
		{"/26 over", func(c *LabConfig) { c.Nodes = 62; c.Net = netip.MustParsePrefix("10.0.0.0/26") }, "room for 61 nodes"},
		{"hostnames", func(c *LabConfig) { c.Hostnames = []string{"web", "db", "cache.local"} }, ""},
		{"hostname count", func(c *LabConfig) { c.Hostnames = []string{"web", "db"} }, "2 hostnames for 3 nodes"},
		{"duplicate hostname", func(c *LabConfig) { c.Hostnames = []string{"web", "db", "WEB"} }, "given twice"},
		{"bad hostname", func(c *LabConfig) { c.Hostnames = []string{"web", "d b", "x"} }, `hostname "d b"`},
		{"dash first", func(c *LabConfig) { c.Hostnames = []string{"web", "-db", "x"} }, `hostname "-db"`},
		{"gateway first-host", func(c *LabConfig) { c.Gateway = GatewayFirstHost }, ""},
		{"gateway bogus", func(c *LabConfig) { c.Gateway = "gw" }, "gateway mode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if !errors.Is(err, ErrLabConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrLabConfig with %q", err, tc.want)
			}
		})
	}
}

func TestLabPlanAddresses(t *testing.T) {
	p, err := LabConfig{Runtime: "x", Nodes: 3, Net: netip.MustParsePrefix("10.1.2.77/24")}.plan()
	if err != nil {
		t.Fatal(err)
	}
	if p.net.String() != "10.1.2.0/24" || p.mask != "255.255.255.0" || p.prefix != DefaultLabSandboxPrefix {
		t.Fatalf("plan %+v", p)
	}
	want := []string{"10.1.2.2", "10.1.2.3", "10.1.2.4"}
	for i, ip := range p.ips {
		if ip.String() != want[i] || p.names[i] != []string{"node-a", "node-b", "node-c"}[i] {
			t.Fatalf("node %d: %s %s", i, p.names[i], ip)
		}
	}
	// The last node of a full network gets the address before broadcast.
	p, err = LabConfig{Runtime: "x", Nodes: 5, Net: netip.MustParsePrefix("10.9.0.0/29")}.plan()
	if err != nil {
		t.Fatal(err)
	}
	if last := p.ips[4].String(); last != "10.9.0.6" || p.mask != "255.255.255.248" {
		t.Fatalf("last node %s mask %s; want 10.9.0.6 255.255.255.248", last, p.mask)
	}
	p, _ = LabConfig{Runtime: "x", Nodes: 1}.plan()
	if p.net.String() != DefaultLabNet {
		t.Fatalf("default net %s", p.net)
	}
}

func TestLabNodeNames(t *testing.T) {
	for i, want := range map[int]string{0: "node-a", 1: "node-b", 25: "node-z", 26: "node-27", 63: "node-64"} {
		if got := LabNodeName(i); got != want {
			t.Errorf("LabNodeName(%d) = %s, want %s", i, got, want)
		}
	}
	seen := map[string]bool{}
	for i := range MaxLabNodes {
		n := LabNodeName(i)
		if seen[n] || netcfg.CheckHostname(n) != nil {
			t.Fatalf("name %s repeated or invalid", n)
		}
		seen[n] = true
	}
}

func TestLabCapacity(t *testing.T) {
	for s, want := range map[string]int{"10.0.0.0/24": 253, "10.0.0.0/30": 1, "10.0.0.0/31": 0, "10.0.0.1/32": 0, "10.0.0.0/8": 1<<24 - 3, "0.0.0.0/0": 1<<32 - 3, "fd00::/64": 0} {
		if got := LabCapacity(netip.MustParsePrefix(s)); got != want {
			t.Errorf("LabCapacity(%s) = %d, want %d", s, got, want)
		}
	}
	if LabCapacity(netip.Prefix{}) != 0 {
		t.Error("invalid prefix has room")
	}
}

// NewLab refuses a bad config before it starts anything.
func TestNewLabRejectsBeforeStarting(t *testing.T) {
	dir := t.TempDir()
	_, err := NewLab(context.Background(), LabConfig{Runtime: "/bin/true", Nodes: 0, Workdir: filepath.Join(dir, "w")})
	if !errors.Is(err, ErrLabConfig) {
		t.Fatalf("got %v", err)
	}
	_, err = NewLab(context.Background(), LabConfig{Runtime: filepath.Join(dir, "missing"), Nodes: 1, Workdir: filepath.Join(dir, "w")})
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing runtime: %v", err)
	}
	_, err = NewLab(context.Background(), LabConfig{Runtime: dir, Nodes: 1, Workdir: filepath.Join(dir, "w")})
	if err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Fatalf("directory as runtime: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "w")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("NewLab made its workdir for a config it refused")
	}
}

const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1659 1 0000000046b81c6d 100 0 0 10 0
   1: 0200A8C0:1451 0300A8C0:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 1660 1 0000000046b81c6d 100 0 0 10 0
`

const procNetTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1451 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2000 1 0000000000000000 100 0 0 10 0
`

func TestTCPListening(t *testing.T) {
	both := []byte(procNetTCP + procNetTCP6)
	cases := []struct {
		text []byte
		port uint16
		want bool
	}{
		{[]byte(procNetTCP), 8080, true},  // 0x1F90, LISTEN
		{[]byte(procNetTCP), 5201, false}, // 0x1451 is only an established connection here
		{both, 5201, true},                // iperf3 listens on [::]
		{[]byte(procNetTCP), 80, false},   // 0x0050 is a suffix of nothing
		{[]byte(procNetTCP), 0x90, false}, // ":0090" must not match ":1F90"
		{[]byte("garbage\n\n:1F90 0A"), 8080, false},
		{nil, 8080, false},
	}
	for i, tc := range cases {
		if got := TCPListening(tc.text, tc.port); got != tc.want {
			t.Errorf("case %d: TCPListening(port %d) = %v, want %v", i, tc.port, got, tc.want)
		}
	}
}

func FuzzTCPListening(f *testing.F) {
	f.Add([]byte(procNetTCP), uint16(8080))
	f.Add([]byte(procNetTCP6), uint16(5201))
	f.Fuzz(func(t *testing.T, text []byte, port uint16) {
		TCPListening(text, port) // must not panic
	})
}

func TestTailBuffer(t *testing.T) {
	tb := NewTailBuffer(16)
	if tb.LastLines(3) != "" {
		t.Fatal("empty buffer has lines")
	}
	tb.Write([]byte("first line\nsecond\n"))
	tb.Write([]byte("third\n"))
	if s := tb.String(); len(s) > 16 || !strings.HasSuffix(s, "second\nthird\n") {
		t.Fatalf("tail %q", s)
	}
	if got := tb.LastLines(1); got != "; runtime log: third" {
		t.Fatalf("lastLines %q", got)
	}
}
