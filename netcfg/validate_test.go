package netcfg

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestRequestParse(t *testing.T) {
	ok := Request{Name: "vpn0", Addr: "10.0.0.7", Mask: "255.255.255.0", Gateway: "10.0.0.1", IfAddr: "10.0.0.2", MTU: 1220,
		Hosts: map[string]string{"node-a": "10.0.0.3"}}
	lc, hosts, err := ok.Parse()
	if err != nil {
		t.Fatal(err)
	}
	if lc.Name != "vpn0" || lc.MTU != 1220 || lc.Net.Prefix != netip.MustParsePrefix("10.0.0.0/24") ||
		lc.Net.IfAddr != netip.MustParseAddr("10.0.0.2") || lc.Net.Gateway != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("Parse = %+v", lc)
	}
	if hosts["node-a"] != netip.MustParseAddr("10.0.0.3") || len(hosts) != 1 {
		t.Fatalf("hosts = %v", hosts)
	}
	noAddr := ok
	noAddr.Addr, noAddr.Mask = "", "/24"
	if lc, _, err := noAddr.Parse(); err != nil || lc.Net.Prefix != netip.MustParsePrefix("10.0.0.0/24") {
		t.Fatalf("empty addr means if_addr's network: %+v, %v", lc, err)
	}
	for _, tc := range []struct {
		field string
		edit  func(*Request)
	}{
		{"name", func(r *Request) { r.Name = "" }},
		{"name", func(r *Request) { r.Name = "vpn/0" }},
		{"addr", func(r *Request) { r.Addr = "fd00::1" }},
		{"mask", func(r *Request) { r.Mask = "255.0.255.0" }},
		{"if_addr", func(r *Request) { r.IfAddr = "10.0.0.255" }},
		{"gateway", func(r *Request) { r.Gateway = "10.0.1.1" }},
		{"mtu", func(r *Request) { r.MTU = MinMTU - 1 }},
		{"mtu", func(r *Request) { r.MTU = MaxMTU + 1 }},
		{"hosts", func(r *Request) { r.Hosts = map[string]string{"a b": "10.0.0.3"} }},
		{"hosts", func(r *Request) { r.Hosts = map[string]string{"a": "10.0.0.300"} }},
	} {
		r := ok
		tc.edit(&r)
		_, _, err := r.Parse()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v: %v, want a FieldError on %q", r, err, tc.field)
		}
		if tc.field == "hosts" {
			var he *HostsEntryError
			if !errors.As(err, &he) {
				t.Errorf("%+v: %v, want a HostsEntryError inside", r, err)
			}
		}
	}
}

func TestCheckHostname(t *testing.T) {
	for _, ok := range []string{"golem", "node-a", "a.b-c.d", strings.Repeat("h", 63)} {
		if err := CheckHostname(ok); err != nil {
			t.Errorf("CheckHostname(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "a-", "a..b", ".a", "a b", "a_b", "10.0.0.1", strings.Repeat("h", 64), strings.Repeat("a.", 33) + "a"} {
		if err := CheckHostname(bad); err == nil {
			t.Errorf("CheckHostname(%q) = nil", bad)
		}
	}
}
