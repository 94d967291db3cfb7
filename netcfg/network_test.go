package netcfg

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseNetwork(t *testing.T) {
	type in struct{ addr, mask, gateway, ifAddr string }
	ok := []struct {
		name string
		in   in
		want string // Prefix
		gw   string // "" = no gateway
	}{
		{"new ExeUnit: empty gateway", in{"192.168.0.0", "255.255.255.0", "", "192.168.0.2"}, "192.168.0.0/24", ""},
		{"old ExeUnit: first host", in{"192.168.0.0", "255.255.255.0", "192.168.0.1", "192.168.0.2"}, "192.168.0.0/24", "192.168.0.1"},
		{"gateway is our address", in{"192.168.0.0", "255.255.255.0", "192.168.0.1", "192.168.0.1"}, "192.168.0.0/24", ""},
		{"unmasked addr", in{"192.168.0.7", "255.255.255.0", "", "192.168.0.9"}, "192.168.0.0/24", ""},
		{"slash mask", in{"10.1.2.3", "/16", "10.1.0.1", "10.1.200.4"}, "10.1.0.0/16", "10.1.0.1"},
		{"INET network", in{"10.42.42.1", "255.255.255.0", "10.42.42.1", "10.42.42.2"}, "10.42.42.0/24", "10.42.42.1"},
		{"/31 both ends usable", in{"10.0.0.0", "255.255.255.254", "10.0.0.0", "10.0.0.1"}, "10.0.0.0/31", "10.0.0.0"},
		{"/32", in{"10.0.0.5", "255.255.255.255", "", "10.0.0.5"}, "10.0.0.5/32", ""},
		{"/8", in{"10.0.0.0", "255.0.0.0", "", "10.255.255.254"}, "10.0.0.0/8", ""},
		{"gateway outside the network", in{"192.168.0.0", "255.255.255.0", "10.0.0.1", "192.168.0.2"}, "192.168.0.0/24", ""},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			n, err := ParseNetwork(tc.in.addr, tc.in.mask, tc.in.gateway, tc.in.ifAddr)
			if err != nil {
				t.Fatalf("ParseNetwork: %v", err)
			}
			if n.Prefix.String() != tc.want {
				t.Errorf("Prefix = %v, want %s", n.Prefix, tc.want)
			}
			if n.IfAddr.String() != tc.in.ifAddr {
				t.Errorf("IfAddr = %v", n.IfAddr)
			}
			switch {
			case tc.gw == "" && n.HasGateway():
				t.Errorf("Gateway = %v, want none", n.Gateway)
			case tc.gw != "" && n.Gateway.String() != tc.gw:
				t.Errorf("Gateway = %v, want %s", n.Gateway, tc.gw)
			}
		})
	}

	bad := []struct {
		name   string
		in     in
		field  string
		reason string
	}{
		{"bad if_addr", in{"192.168.0.0", "255.255.255.0", "", "999.1.1.1"}, "if_addr", "not an IPv4 address"},
		{"empty if_addr", in{"192.168.0.0", "255.255.255.0", "", ""}, "if_addr", "empty"},
		{"empty addr", in{"", "255.255.255.0", "", "192.168.0.2"}, "addr", "empty"},
		{"empty mask", in{"192.168.0.0", "", "", "192.168.0.2"}, "mask", "empty"},
		{"non-contiguous mask", in{"10.0.0.0", "255.0.255.0", "", "10.0.0.2"}, "mask", "not a contiguous netmask"},
		{"zero mask", in{"10.0.0.0", "0.0.0.0", "", "10.0.0.2"}, "mask", "a /0 network would take every address"},
		{"slash too long", in{"10.0.0.0", "/33", "", "10.0.0.2"}, "mask", "not a prefix length from /1 to /32"},
		{"slash sign", in{"10.0.0.0", "/+8", "", "10.0.0.2"}, "mask", "not a prefix length from /1 to /32"},
		{"addr with length", in{"10.0.0.0/24", "255.255.255.0", "", "10.0.0.2"}, "addr", "not an IPv4 address"},
		{"if_addr outside", in{"192.168.0.0", "255.255.255.0", "", "192.168.1.2"}, "if_addr", "outside network 192.168.0.0/24"},
		{"if_addr network", in{"192.168.0.0", "255.255.255.0", "", "192.168.0.0"}, "if_addr", "is the network address of 192.168.0.0/24"},
		{"if_addr broadcast", in{"192.168.0.0", "255.255.255.0", "", "192.168.0.255"}, "if_addr", "is the broadcast address of 192.168.0.0/24"},
		{"if_addr multicast", in{"224.0.0.0", "255.255.255.0", "", "224.0.0.5"}, "if_addr", "not a unicast address"},
		{"if_addr loopback", in{"127.0.0.0", "255.0.0.0", "", "127.0.0.2"}, "if_addr", "not a unicast address"},
		{"gateway broadcast", in{"192.168.0.0", "255.255.255.0", "192.168.0.255", "192.168.0.2"}, "gateway", "is the broadcast address of 192.168.0.0/24"},
		{"gateway garbage", in{"192.168.0.0", "255.255.255.0", "gw", "192.168.0.2"}, "gateway", "not an IPv4 address"},
		{"IPv6 addr", in{"fd00::", "255.255.255.0", "", "192.168.0.2"}, "addr", "IPv6 is not supported"},
		{"IPv6 mask", in{"192.168.0.0", "ffff:ffff:ffff:ffff::", "", "192.168.0.2"}, "mask", "IPv6 is not supported"},
		{"IPv6 gateway", in{"192.168.0.0", "255.255.255.0", "fd00::1", "192.168.0.2"}, "gateway", "IPv6 is not supported"},
		{"IPv6 if_addr", in{"192.168.0.0", "255.255.255.0", "", "fd00::2"}, "if_addr", "IPv6 is not supported"},
		{"IPv4-mapped if_addr", in{"192.168.0.0", "255.255.255.0", "", "::ffff:192.168.0.2"}, "if_addr", "IPv6 is not supported"},
		{"white space", in{" 192.168.0.0", "255.255.255.0", "", "192.168.0.2"}, "addr", "not an IPv4 address"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseNetwork(tc.in.addr, tc.in.mask, tc.in.gateway, tc.in.ifAddr)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want *FieldError", err)
			}
			if fe.Field != tc.field || fe.Reason != tc.reason {
				t.Errorf("got field %q reason %q, want %q %q", fe.Field, fe.Reason, tc.field, tc.reason)
			}
		})
	}
}

func TestFieldErrorMessage(t *testing.T) {
	_, err := ParseNetwork("192.168.0.0", "255.255.255.0", "", "999.1.1.1")
	if got, want := err.Error(), `invalid if_addr "999.1.1.1": not an IPv4 address`; got != want {
		t.Errorf("Error() = %s, want %s", got, want)
	}
}

func TestNetworkString(t *testing.T) {
	n, _ := ParseNetwork("192.168.0.0", "255.255.255.0", "192.168.0.1", "192.168.0.2")
	if s := n.String(); s != "192.168.0.2/24 gw 192.168.0.1" {
		t.Errorf("String() = %s", s)
	}
}

func TestMAC(t *testing.T) {
	for ip, want := range map[string]string{
		"192.168.0.2":   "90:13:c0:a8:00:02",
		"10.42.42.2":    "90:13:0a:2a:2a:02",
		"0.0.0.0":       "90:13:00:00:00:00",
		"fd00::a0b:c0d": "90:13:0a:0b:0c:0d",
	} {
		if got := MAC(netip.MustParseAddr(ip)).String(); got != want {
			t.Errorf("MAC(%s) = %s, want %s", ip, got, want)
		}
	}
	if m := MAC(netip.Addr{}); m != nil {
		t.Errorf("MAC(zero) = %v, want nil", m)
	}
}

func TestParseNetworkGatewayIgnored(t *testing.T) {
	for _, tc := range []struct{ gw, ifAddr, why string }{
		{"", "192.168.0.2", ""},
		{"192.168.0.1", "192.168.0.2", ""},
		{"192.168.0.1", "192.168.0.1", "is this node's own address"},
		{"10.0.0.1", "192.168.0.2", "outside network 192.168.0.0/24"},
	} {
		n, err := ParseNetwork("192.168.0.0", "255.255.255.0", tc.gw, tc.ifAddr)
		if err != nil {
			t.Fatalf("gateway %q: %v", tc.gw, err)
		}
		if n.GatewayIgnored != tc.why {
			t.Errorf("gateway %q, if_addr %s: GatewayIgnored = %q, want %q", tc.gw, tc.ifAddr, n.GatewayIgnored, tc.why)
		}
	}
}

func TestCheckNetworks(t *testing.T) {
	mk := func(addr, mask, ifAddr string) Network {
		n, err := ParseNetwork(addr, mask, "", ifAddr)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	a := mk("192.168.0.0", "255.255.255.0", "192.168.0.2")
	b := mk("10.20.0.0", "255.255.0.0", "10.20.0.2")
	nested := mk("192.168.0.0", "255.255.0.0", "192.168.7.2")
	same := mk("192.168.0.0", "255.255.255.0", "192.168.0.3")
	if err := CheckNetworks([]Network{a, b}); err != nil {
		t.Errorf("disjoint networks: %v", err)
	}
	if err := CheckNetworks([]Network{b, a}); err != nil {
		t.Errorf("disjoint networks, other order: %v", err)
	}
	for _, pair := range [][]Network{{a, nested}, {a, same}, {b, a, same}} {
		err := CheckNetworks(pair)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "networks" || !strings.Contains(err.Error(), "overlap") {
			t.Errorf("CheckNetworks(%v) = %v, want a networks overlap error", pair, err)
		}
	}
}

func FuzzParseNetwork(f *testing.F) {
	f.Add("192.168.0.0", "255.255.255.0", "", "192.168.0.2")
	f.Add("192.168.0.0", "255.255.255.0", "192.168.0.1", "192.168.0.2")
	f.Add("10.0.0.7", "/31", "10.0.0.6", "10.0.0.7")
	f.Add("fd00::", "255.0.255.0", "x", "999.1.1.1")
	f.Fuzz(func(t *testing.T, addr, mask, gateway, ifAddr string) {
		n, err := ParseNetwork(addr, mask, gateway, ifAddr)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FieldError", err)
			}
			return
		}
		if !n.Prefix.Addr().Is4() || !n.IfAddr.Is4() || n.Prefix != n.Prefix.Masked() || n.Prefix.Bits() == 0 {
			t.Fatalf("bad network %+v", n)
		}
		if !n.Prefix.Contains(n.IfAddr) {
			t.Fatalf("if_addr %v outside %v", n.IfAddr, n.Prefix)
		}
		if n.HasGateway() && (!n.Gateway.Is4() || !n.Prefix.Contains(n.Gateway) || n.Gateway == n.IfAddr) {
			t.Fatalf("bad gateway in %+v", n)
		}
		if !n.HasGateway() && gateway != "" && n.GatewayIgnored == "" {
			t.Fatalf("gateway %q dropped without a reason", gateway)
		}
		if m := MAC(n.IfAddr); len(m) != 6 || m[0] != 0x90 || m[1] != 0x13 {
			t.Fatalf("MAC %v", m)
		}
	})
}
