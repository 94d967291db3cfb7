package agent

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/runtime/cmdflag"
	"github.com/gvpn/gvpn/vsock"
)

// Version is stamped at build time (-ldflags -X).
var Version = "dev"

// Environment variables gvpn-runtime sets for the agent command; the flags
// default to them.
const (
	EnvBridge  = "GVPN_BRIDGE"
	EnvControl = "GVPN_CONTROL"
)

// Options are the parsed command line.
type Options struct {
	Config
	LogLevel    string
	LogFormat   string
	ShowVersion bool
}

const usageHead = `gvpn-agent — the payload end of the gvpn bridge: the VPN interface inside a
payload VM or container, its frames carried to gvpn-runtime over vsock or a
unix socket.

Usage:
  gvpn-agent [--bridge ADDR]                      managed: gvpn-runtime configures the
                                                  interface and runs processes through
                                                  the agent (the normal case)
  gvpn-agent --bridge ADDR --ip A.B.C.D/N [...]   by hand: the interface comes from flags,
                                                  frames go to whatever is at ADDR

ADDR is vsock://CID:PORT (CID a number, host = 2, local = 1; any only with
--listen) or unix:///absolute/path. The agent dials ADDR and, in managed mode,
the control address next to it (PORT+1, or PATH.ctl); it re-dials with backoff
whenever a connection drops, keeping the interface configured meanwhile.
SIGTERM or SIGINT removes the interface and exits 0.

Flags may be given as --flag value or --flag=value.
`

// flagGroups orders the help text.
var flagGroups = []cmdflag.Group{
	{Title: "The bridge to gvpn-runtime", Names: []string{"bridge", "control", "connect", "listen", "agent-id", "no-vnet-hdr"}},
	{Title: "Manual mode (the interface from flags, no runtime)", Names: []string{"ip", "gateway", "mtu", "name", "host", "hosts-file"}},
	{Title: "Logging and information", Names: []string{"log-level", "log-format", "version"}},
}

const usageTail = `
Examples:
  # inside a VM whose host runs gvpn-runtime listening on vsock port 5000
  gvpn-agent --bridge vsock://host:5000
  # inside a container started by gvpn-runtime (it sets GVPN_BRIDGE)
  gvpn-agent
  # by hand: two network namespaces joined directly, no runtime
  ip netns exec a gvpn-agent --bridge unix:///tmp/vpn.sock --ip 10.0.0.1/24 --listen --hosts-file ''
  ip netns exec b gvpn-agent --bridge unix:///tmp/vpn.sock --ip 10.0.0.2/24 --hosts-file ''
  ip netns exec b ping 10.0.0.1
  # (--host entries go to --hosts-file; under ip netns exec, /etc/hosts is the
  # host's own unless /etc/netns/NAME/hosts exists)

Logs go to stderr; SIGUSR1 logs the counters (frames, drops by reason, frames
dropped while the bridge was down). Wire format: docs/bridge.md.
`

type hostsFlag map[string]string

func (h hostsFlag) String() string {
	names := make([]string, 0, len(h))
	for n := range h {
		names = append(names, n+"="+h[n])
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

func (h hostsFlag) Set(v string) error {
	name, ip, ok := strings.Cut(v, "=")
	if !ok || name == "" || ip == "" {
		return fmt.Errorf("want NAME=IP, got %q", v)
	}
	h[name] = ip
	return nil
}

// usageError is a command line the agent cannot run with, naming the flag
// at fault ("--bridge") when there is one: a *netcfg.FieldError.
func usageError(flag string, err error) error {
	if flag != "" {
		flag = "--" + flag
	}
	return &netcfg.FieldError{Field: flag, Err: err}
}

// ParseArgs parses gvpn-agent's command line (without the program name).
// getenv supplies the environment defaults (GVPN_BRIDGE, GVPN_CONTROL,
// GVPN_LOG_LEVEL, GVPN_LOG_FORMAT); nil means none. The help text goes to
// usage. It returns flag.ErrHelp for --help, the flag package's error for
// a flag it cannot parse (cmdflag.Explain makes it one line), and
// *netcfg.FieldError (naming the flag) for a command line that parses but cannot work.
func ParseArgs(args []string, getenv func(string) string, usage io.Writer) (Options, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	envOr := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	var (
		o                      Options
		bridge, control, ipStr string
		gateway, name          string
		mtu                    int
		connect                bool
		hosts                  = hostsFlag{}
	)
	fs := cmdflag.New("gvpn-agent")
	fs.StringVar(&bridge, "bridge", getenv(EnvBridge), "bridge data address, vsock://CID:PORT or unix:///path (env "+EnvBridge+")")
	fs.StringVar(&control, "control", getenv(EnvControl), "control address, managed mode only; default: the one next to --bridge\n(PORT+1, or PATH.ctl), or env "+EnvControl+" when --bridge is not given either")
	fs.StringVar(&ipStr, "ip", "", "manual mode: the interface's address and prefix, e.g. 10.0.0.2/24")
	fs.StringVar(&gateway, "gateway", "", "manual mode: gateway inside the network (default: none)")
	fs.IntVar(&mtu, "mtu", netcfg.DefaultMTU, "manual mode: MTU of the interface (every node of a network must agree)")
	fs.StringVar(&name, "name", netcfg.DefaultName, "manual mode: interface name")
	fs.Var(hosts, "host", "manual mode: hosts entry NAME=IP for --hosts-file (repeatable)")
	fs.StringVar(&o.HostsFile, "hosts-file", "/etc/hosts", "file that receives the network's hosts entries ('' = none)")
	fs.BoolVar(&connect, "connect", false, "dial --bridge (the default)")
	fs.BoolVar(&o.Listen, "listen", false, "manual mode: listen on --bridge instead of dialling it\n(for a peer that dials: another agent, QEMU -netdev stream,server=off)")
	fs.StringVar(&o.AgentID, "agent-id", "", "name sent to the runtime in hello, for its logs (default: the hostname)")
	fs.BoolVar(&o.NoVNetHdr, "no-vnet-hdr", false, "managed mode: never offer the runtime superframes with virtio-net headers on the bridge;\nthe agent segments and coalesces at its TAP, as agents before them did")
	fs.StringVar(&o.LogLevel, "log-level", envOr("GVPN_LOG_LEVEL", "info"), "debug, info, warn, error (env GVPN_LOG_LEVEL)")
	fs.StringVar(&o.LogFormat, "log-format", envOr("GVPN_LOG_FORMAT", "text"), "text or json (env GVPN_LOG_FORMAT)")
	fs.BoolVar(&o.ShowVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if cmdflag.IsHelp(err) {
			fmt.Fprint(usage, usageHead)
			cmdflag.PrintFlags(usage, fs, flagGroups)
			fmt.Fprint(usage, usageTail)
		}
		return o, err
	}
	if fs.NArg() > 0 {
		return o, usageError("", fmt.Errorf("unexpected argument %q (flags only; see --help)", fs.Arg(0)))
	}
	if o.ShowVersion {
		return o, nil
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if bridge == "" {
		return o, usageError("bridge", errors.New("no bridge address (give --bridge or set "+EnvBridge+")"))
	}
	a, err := vsock.ParseAddr(bridge)
	if err != nil {
		return o, usageError("bridge", err)
	}
	o.Bridge = a
	if connect && o.Listen {
		return o, usageError("listen", errors.New("--connect and --listen exclude each other"))
	}
	if !o.Listen && a.Scheme == vsock.SchemeVsock && a.CID == vsock.CIDAny {
		return o, usageError("bridge", errors.New("CID any can only be listened on; dial the host with vsock://host:PORT"))
	}

	if ipStr == "" {
		for _, f := range []string{"gateway", "mtu", "name", "host", "listen"} {
			if set[f] {
				return o, usageError(f, errors.New("is for manual mode (with --ip); in managed mode the runtime sends the configuration"))
			}
		}
		// GVPN_CONTROL goes with GVPN_BRIDGE: an explicit --bridge means
		// the control address next to it, unless --control is given too.
		if set["bridge"] && !set["control"] {
			control = ""
		}
		if control != "" {
			c, err := vsock.ParseAddr(control)
			if err != nil {
				return o, usageError("control", err)
			}
			o.Control = c
		} else if _, err := a.Control(); err != nil {
			return o, usageError("bridge", err)
		}
		return o, nil
	}

	if set["control"] {
		return o, usageError("control", errors.New("manual mode (--ip) has no control connection"))
	}
	c, err := manualConfigure(ipStr, gateway, name, mtu, hosts)
	if err != nil {
		return o, err
	}
	o.Manual = &c
	return o, nil
}

// manualConfigure builds the configure request the flags describe and
// validates it with the one validator a runtime's request goes through
// (netcfg.Request, by way of Configure.Validate), naming the flag at fault.
func manualConfigure(ipStr, gateway, name string, mtu int, hosts map[string]string) (vsock.Configure, error) {
	p, err := netip.ParsePrefix(ipStr)
	if err != nil || !p.Addr().Is4() {
		return vsock.Configure{}, usageError("ip", fmt.Errorf("want an IPv4 ADDRESS/PREFIX such as 10.0.0.2/24, got %q", ipStr))
	}
	c := vsock.Configure{
		Name:    name,
		IfAddr:  p.Addr().String(),
		Mask:    net.IP(net.CIDRMask(p.Bits(), 32)).String(),
		Gateway: gateway,
		MTU:     mtu,
	}
	if len(hosts) > 0 {
		c.Hosts = hosts
	}
	if err := c.Validate(); err != nil {
		var fe *netcfg.FieldError
		if errors.As(err, &fe) {
			// Named by the flag that set the member.
			return c, usageError(flagOf[fe.Field], fe)
		}
		return c, usageError("", err)
	}
	return c, nil
}

// flagOf maps a configure member to the flag that sets it in manual mode.
var flagOf = map[string]string{
	"name":    "name",
	"if_addr": "ip",
	"mask":    "ip",
	"gateway": "gateway",
	"mtu":     "mtu",
	"hosts":   "host",
}
