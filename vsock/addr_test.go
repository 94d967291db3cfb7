package vsock

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAddr(t *testing.T) {
	long := "/" + strings.Repeat("a", MaxUnixPath-1)
	good := []struct {
		in        string
		want      Addr
		canonical string
	}{
		{"vsock://3:1024", Addr{Scheme: SchemeVsock, CID: 3, Port: 1024}, ""},
		{"vsock://any:5000", Addr{Scheme: SchemeVsock, CID: CIDAny, Port: 5000}, ""},
		{"vsock://host:5000", Addr{Scheme: SchemeVsock, CID: CIDHost, Port: 5000}, ""},
		{"vsock://local:1", Addr{Scheme: SchemeVsock, CID: CIDLocal, Port: 1}, ""},
		{"vsock://2:5000", Addr{Scheme: SchemeVsock, CID: 2, Port: 5000}, "vsock://host:5000"},
		{"vsock://1:5000", Addr{Scheme: SchemeVsock, CID: 1, Port: 5000}, "vsock://local:5000"},
		{"vsock://4294967295:7", Addr{Scheme: SchemeVsock, CID: CIDAny, Port: 7}, "vsock://any:7"},
		{"vsock://0:7", Addr{Scheme: SchemeVsock, CID: 0, Port: 7}, ""},
		{"vsock://4294967294:4294967294", Addr{Scheme: SchemeVsock, CID: 4294967294, Port: 4294967294}, ""},
		{"vsock://007:0100", Addr{Scheme: SchemeVsock, CID: 7, Port: 100}, "vsock://7:100"},
		{"unix:///run/gvpn/bridge.sock", Addr{Scheme: SchemeUnix, Path: "/run/gvpn/bridge.sock"}, ""},
		{"unix:///a b/c:d", Addr{Scheme: SchemeUnix, Path: "/a b/c:d"}, ""},
		{"unix://" + long, Addr{Scheme: SchemeUnix, Path: long}, ""},
		{"virtio-serial://gvpn.bridge", Addr{Scheme: SchemeVirtioSerial, Name: "gvpn.bridge"}, ""},
		{"virtio-serial://A_b-9", Addr{Scheme: SchemeVirtioSerial, Name: "A_b-9"}, ""},
	}
	for _, tc := range good {
		a, err := ParseAddr(tc.in)
		if err != nil {
			t.Errorf("ParseAddr(%q): %v", tc.in, err)
			continue
		}
		if a != tc.want {
			t.Errorf("ParseAddr(%q) = %+v, want %+v", tc.in, a, tc.want)
		}
		canonical := tc.canonical
		if canonical == "" {
			canonical = tc.in
		}
		if s := a.String(); s != canonical {
			t.Errorf("ParseAddr(%q).String() = %q, want %q", tc.in, s, canonical)
		}
		back, err := ParseAddr(a.String())
		if err != nil || back != a {
			t.Errorf("round trip of %q: %+v, %v", a.String(), back, err)
		}
		if err := a.Validate(); err != nil {
			t.Errorf("Validate(%q): %v", tc.in, err)
		}
	}

	bad := []struct{ in, why string }{
		{"", "want vsock://"},
		{"/run/gvpn/bridge.sock", "want vsock://"},
		{"vsock:3:1024", "want vsock://"},
		{"tcp://127.0.0.1:80", `unknown scheme "tcp"`},
		{"virtio-serial://", "empty virtio-serial port name"},
		{"virtio-serial://a/b", `has '/'`},
		{"virtio-serial://..", "not a file name"},
		{"virtio-serial://a b", `has ' '`},
		{"virtio-serial://" + strings.Repeat("p", MaxPortName+1), "longer than 255"},
		{"VSOCK://3:1024", `unknown scheme "VSOCK"`},
		{"vsock://3", "missing :PORT"},
		{"vsock://:1024", "missing CID"},
		{"vsock://3:", "port"},
		{"vsock://3:0", "port 0 out of range"},
		{"vsock://3:4294967295", "port 4294967295 out of range"},
		{"vsock://3:4294967296", "not a decimal number"},
		{"vsock://3:-1", "not a decimal number"},
		{"vsock://3:+5", "not a decimal number"},
		{"vsock://3:0x10", "not a decimal number"},
		{"vsock://3:10/", "not a decimal number"},
		{"vsock://3:1:2", "not a decimal number"},
		{"vsock://4294967296:1", "not a decimal uint32"},
		{"vsock://-1:1", "not a decimal uint32"},
		{"vsock://+1:1", "not a decimal number"},
		{"vsock://ANY:1", "not a decimal uint32"},
		{"vsock://hypervisor:1", "not a decimal uint32"},
		{"unix://", "empty path"},
		{"unix://relative/path", "not absolute"},
		{"unix://bridge.sock", "not absolute"},
		{"unix:///a\x00b", "NUL"},
		{"unix://" + long + "x", "longer than the 107"},
	}
	for _, tc := range bad {
		_, err := ParseAddr(tc.in)
		if err == nil {
			t.Errorf("ParseAddr(%q) succeeded, want an error about %q", tc.in, tc.why)
			continue
		}
		var ae *AddrError
		if !errors.As(err, &ae) || !errors.Is(err, ErrInvalidAddr) {
			t.Errorf("ParseAddr(%q): error %T %v is not an *AddrError / ErrInvalidAddr", tc.in, err, err)
		}
		if !strings.Contains(err.Error(), tc.why) {
			t.Errorf("ParseAddr(%q): error %q does not say %q", tc.in, err, tc.why)
		}
		if ae != nil && ae.Addr != tc.in {
			t.Errorf("ParseAddr(%q): AddrError.Addr = %q", tc.in, ae.Addr)
		}
	}
}

func TestAddrValidate(t *testing.T) {
	for _, a := range []Addr{
		{},
		{Scheme: "tcp", Path: "/x"},
		{Scheme: SchemeVsock, CID: 3},
		{Scheme: SchemeVsock, CID: 3, Port: 1, Path: "/x"},
		{Scheme: SchemeUnix, Path: "/x", Port: 1},
		{Scheme: SchemeUnix, Path: "x"},
	} {
		if err := a.Validate(); !errors.Is(err, ErrInvalidAddr) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalidAddr", a, err)
		}
		if _, err := a.Control(); !errors.Is(err, ErrInvalidAddr) {
			t.Errorf("Control(%+v) = %v, want ErrInvalidAddr", a, err)
		}
	}
}

func TestControlAddr(t *testing.T) {
	for _, tc := range []struct{ data, ctl string }{
		{"vsock://3:1024", "vsock://3:1025"},
		{"vsock://any:5000", "vsock://any:5001"},
		{"vsock://host:4294967293", "vsock://host:4294967294"},
		{"unix:///run/gvpn/bridge.sock", "unix:///run/gvpn/bridge.sock.ctl"},
		{"virtio-serial://gvpn.bridge", "virtio-serial://gvpn.bridge.ctl"},
		{"unix:///" + strings.Repeat("a", MaxUnixPath-1-len(controlSuffix)), "unix:///" + strings.Repeat("a", MaxUnixPath-1-len(controlSuffix)) + ".ctl"},
	} {
		a, err := ParseAddr(tc.data)
		if err != nil {
			t.Fatal(err)
		}
		c, err := a.Control()
		if err != nil {
			t.Errorf("Control(%s): %v", tc.data, err)
			continue
		}
		if c.String() != tc.ctl {
			t.Errorf("Control(%s) = %s, want %s", tc.data, c, tc.ctl)
		}
	}
	for _, s := range []string{
		"vsock://3:4294967294",
		"unix:///" + strings.Repeat("a", MaxUnixPath-len(controlSuffix)),
	} {
		a, err := ParseAddr(s)
		if err != nil {
			t.Fatal(err)
		}
		if c, err := a.Control(); !errors.Is(err, ErrInvalidAddr) || !strings.Contains(err.Error(), "no room for the control address") {
			t.Errorf("Control(%s) = %v, %v; want an error", s, c, err)
		}
	}
}

// FuzzParseAddr: whatever the input, ParseAddr either refuses it with an
// *AddrError or returns an address whose canonical form parses back to
// it, and whose control address (when there is room for one) is valid.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"vsock://3:1024", "vsock://any:5000", "unix:///run/gvpn/bridge.sock",
		"virtio-serial://gvpn.bridge", "virtio-serial://", "virtio-serial://a/b", "unix://rel", "vsock://host:4294967294"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddr(s)
		if err != nil {
			var ae *AddrError
			if !errors.As(err, &ae) || !errors.Is(err, ErrInvalidAddr) {
				t.Fatalf("ParseAddr(%q): %v is not an *AddrError", s, err)
			}
			return
		}
		back, err := ParseAddr(a.String())
		if err != nil || back != a {
			t.Fatalf("ParseAddr(%q) = %+v; its canonical form %q parses to %+v, %v", s, a, a.String(), back, err)
		}
		if c, err := a.Control(); err == nil {
			if err := c.Validate(); err != nil {
				t.Fatalf("control address of %q is invalid: %v", s, err)
			}
		}
	})
}
