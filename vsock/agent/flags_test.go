package agent

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/vsock"
)

func TestParseArgs(t *testing.T) {
	env := func(m map[string]string) func(string) string {
		return func(k string) string { return m[k] }
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, o Options)
		badFlag string // the flag the *netcfg.FieldError names ("-" = one without flag)
		errHas  string
	}{
		{
			name: "managed from the runtime's environment",
			env:  map[string]string{EnvBridge: "unix:///run/gvpn/a/bridge.sock", EnvControl: "unix:///run/gvpn/a/other.ctl"},
			check: func(t *testing.T, o Options) {
				if o.Manual != nil || o.Listen || o.Bridge.Path != "/run/gvpn/a/bridge.sock" || o.Control.Path != "/run/gvpn/a/other.ctl" {
					t.Fatalf("%+v", o)
				}
				if o.HostsFile != "/etc/hosts" || o.LogLevel != "info" {
					t.Fatalf("defaults: hosts %q level %q", o.HostsFile, o.LogLevel)
				}
			},
		},
		{
			name: "explicit bridge overrides the environment's control address",
			args: []string{"--bridge", "vsock://host:5000"},
			env:  map[string]string{EnvBridge: "unix:///x.sock", EnvControl: "unix:///x.sock.ctl"},
			check: func(t *testing.T, o Options) {
				if o.Bridge != (vsock.Addr{Scheme: vsock.SchemeVsock, CID: vsock.CIDHost, Port: 5000}) || o.Control != (vsock.Addr{}) {
					t.Fatalf("bridge %v control %v; want vsock://host:5000 and the derived control", o.Bridge, o.Control)
				}
			},
		},
		{
			name: "explicit bridge and control",
			args: []string{"--bridge=unix:///a.sock", "--control", "unix:///b.ctl"},
			check: func(t *testing.T, o Options) {
				if o.Control.Path != "/b.ctl" {
					t.Fatalf("control %v", o.Control)
				}
			},
		},
		{
			name: "manual with every flag",
			args: []string{"--bridge", "unix:///tmp/v.sock", "--ip", "10.0.0.2/24", "--gateway", "10.0.0.1",
				"--mtu", "1400", "--name", "tun7", "--host", "a=10.0.0.3", "--host", "b=10.0.0.4", "--listen", "--hosts-file", ""},
			check: func(t *testing.T, o Options) {
				want := vsock.Configure{Name: "tun7", IfAddr: "10.0.0.2", Mask: "255.255.255.0", Gateway: "10.0.0.1", MTU: 1400,
					Hosts: map[string]string{"a": "10.0.0.3", "b": "10.0.0.4"}}
				m := o.Manual
				if m == nil || m.Name != want.Name || m.IfAddr != want.IfAddr || m.Mask != want.Mask || m.Gateway != want.Gateway ||
					m.MTU != want.MTU || len(m.Hosts) != 2 || m.Hosts["b"] != "10.0.0.4" {
					t.Fatalf("manual %+v, want %+v", m, want)
				}
				if !o.Listen || o.HostsFile != "" {
					t.Fatalf("listen %v hosts file %q", o.Listen, o.HostsFile)
				}
			},
		},
		{
			name: "manual defaults",
			args: []string{"--bridge", "unix:///tmp/v.sock", "--ip", "192.168.0.7/16"},
			check: func(t *testing.T, o Options) {
				m := o.Manual
				if m.Name != "vpn0" || m.MTU != 1220 || m.Mask != "255.255.0.0" || m.Gateway != "" || m.Hosts != nil || o.Listen {
					t.Fatalf("%+v", m)
				}
			},
		},
		{name: "no bridge", badFlag: "bridge", errHas: EnvBridge},
		{name: "bad bridge", args: []string{"--bridge", "unix://rel/path"}, badFlag: "bridge", errHas: "absolute"},
		{name: "dialling CID any", args: []string{"--bridge", "vsock://any:5000"}, badFlag: "bridge", errHas: "listened on"},
		{name: "no room for the control address", args: []string{"--bridge", "vsock://host:4294967294"}, badFlag: "bridge", errHas: "control"},
		{name: "bad control", args: []string{"--bridge", "unix:///a", "--control", "tcp://x"}, badFlag: "control"},
		{name: "mtu without ip", args: []string{"--bridge", "unix:///a", "--mtu", "1400"}, badFlag: "mtu", errHas: "manual mode"},
		{name: "host without ip", args: []string{"--bridge", "unix:///a", "--host", "a=1.2.3.4"}, badFlag: "host"},
		{name: "listen without ip", args: []string{"--bridge", "unix:///a", "--listen"}, badFlag: "listen"},
		{name: "control in manual mode", args: []string{"--bridge", "unix:///a", "--ip", "10.0.0.2/24", "--control", "unix:///c"}, badFlag: "control"},
		{name: "connect and listen", args: []string{"--bridge", "unix:///a", "--ip", "10.0.0.2/24", "--listen", "--connect"}, badFlag: "listen"},
		{name: "ip without prefix", args: []string{"--bridge", "unix:///a", "--ip", "10.0.0.2"}, badFlag: "ip", errHas: "10.0.0.2/24"},
		{name: "ipv6", args: []string{"--bridge", "unix:///a", "--ip", "fd00::2/64"}, badFlag: "ip"},
		{name: "network address", args: []string{"--bridge", "unix:///a", "--ip", "10.0.0.0/24"}, badFlag: "ip"},
		{name: "gateway not an address", args: []string{"--bridge", "unix:///a", "--ip", "10.0.0.2/24", "--gateway", "10.0.1"}, badFlag: "gateway"},
		{name: "mtu too small", args: []string{"--bridge", "unix:///a", "--ip", "10.0.0.2/24", "--mtu", "60"}, badFlag: "mtu"},
		{name: "bad name", args: []string{"--bridge", "unix:///a", "--ip", "10.0.0.2/24", "--name", "a/b"}, badFlag: "name"},
		{name: "bad host entry", args: []string{"--bridge", "unix:///a", "--ip", "10.0.0.2/24", "--host", "a=notanip"}, badFlag: "host"},
		{name: "host without =", args: []string{"--bridge", "unix:///a", "--ip", "10.0.0.2/24", "--host", "a"}, errHas: "NAME=IP"},
		{name: "stray argument", args: []string{"--bridge", "unix:///a", "extra"}, badFlag: "-", errHas: "extra"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var usage strings.Builder
			o, err := ParseArgs(tc.args, env(tc.env), &usage)
			if tc.check != nil {
				if err != nil {
					t.Fatalf("ParseArgs: %v", err)
				}
				tc.check(t, o)
				return
			}
			if err == nil {
				t.Fatalf("ParseArgs accepted %v", tc.args)
			}
			var ue *netcfg.FieldError
			switch {
			case tc.badFlag == "-":
				if !errors.As(err, &ue) || ue.Field != "" {
					t.Fatalf("err %v, want a FieldError without flag", err)
				}
			case tc.badFlag != "":
				if !errors.As(err, &ue) || ue.Field != "--"+tc.badFlag {
					t.Fatalf("err %v, want a FieldError naming --%s", err, tc.badFlag)
				}
				if !strings.HasPrefix(err.Error(), "--"+tc.badFlag+": ") {
					t.Fatalf("message %q does not start with the flag", err)
				}
			}
			if !strings.Contains(err.Error()+usage.String(), tc.errHas) {
				t.Fatalf("error %q (usage output %q) does not mention %q", err, usage.String(), tc.errHas)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var usage strings.Builder
	_, err := ParseArgs([]string{"--help"}, nil, &usage)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"Examples:", "--bridge", "--ip", "--listen", "vsock://host:5000", "SIGTERM"} {
		if !strings.Contains(usage.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if code := Main([]string{"--help"}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("Main --help: exit %d", code)
	}
	var out strings.Builder
	if code := Main([]string{"--version"}, &out, io.Discard); code != 0 || !strings.HasPrefix(out.String(), "gvpn-agent ") {
		t.Fatalf("--version: exit %d, %q", code, out.String())
	}
	var errOut strings.Builder
	if code := Main([]string{"--ip", "10.0.0.2"}, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), "--") {
		t.Fatalf("bad command line: exit %d, %q", code, errOut.String())
	}
}
