package contract

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// TestContract runs the VPN contract over every kind. The checks are
// subtests in the order a requestor meets them; the nodes are set up by
// the kind's test itself, so `-run TestContract/vm/ping` runs the vm
// kind's set-up and its ping only, and the nodes are shut down (and
// checked for leftovers) when the kind's test ends whichever checks ran.
func TestContract(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) { contract(t, k) })
	}
}

func contract(t *testing.T, k kind) {
	nodes := twoNodes(t, k)
	a, b := nodes[0], nodes[1]
	ctx := privtest.Context(t, 5*time.Minute)

	t.Run("deploy", func(t *testing.T) {
		// The ExeUnit forwards deploy's output to the requestor: the set-up
		// (golemnet.Deploy) already refused anything on stderr, stdout that
		// is not one JSON object, and a start mode but blocking.
		for _, n := range nodes {
			if _, ok := n.deployed.Valid["Ok"]; !ok {
				t.Errorf("%s: deploy's valid %v, want Ok", n.name, n.deployed.Valid)
			}
			if !k.volumes {
				if len(n.deployed.Vols) != 0 {
					t.Errorf("%s: deploy lists volumes %s for a payload that has its own disks", n.name, n.deployed.Vols)
				}
			} else if _, _, err := golemnet.DefaultVolume(n.deployed); err != nil {
				t.Errorf("%s: %v", n.name, err)
			}
		}
	})
	t.Run("hello", func(t *testing.T) {
		for _, n := range nodes {
			if v, err := n.eu.Hello(ctx, "0.1.0"); err != nil || v == "" {
				t.Errorf("%s: Hello: version %q, %v", n.name, v, err)
			}
		}
	})
	t.Run("network", func(t *testing.T) {
		for _, n := range nodes {
			// 90:13 and the node's address, as Golem VPN peers expect.
			ip := netip.MustParseAddr(n.ip).As4()
			mac := fmt.Sprintf("90:13:%02x:%02x:%02x:%02x", ip[0], ip[1], ip[2], ip[3])
			link := n.run(t, ctx, busybox, "ip", "-o", "link", "show", "vpn0")
			if !strings.Contains(link, "mtu 1220") || !strings.Contains(link, mac) || !strings.Contains(link, "UP") {
				t.Errorf("%s: vpn0 is not up with MTU 1220 and MAC %s: %s", n.name, mac, link)
			}
			if addr := n.run(t, ctx, busybox, "ip", "-o", "-4", "addr", "show", "vpn0"); !strings.Contains(addr, n.ip+"/24") {
				t.Errorf("%s: vpn0's address: %s", n.name, addr)
			}
			routes := n.run(t, ctx, busybox, "ip", "-4", "route", "show", "dev", "vpn0")
			if via := strings.Contains(routes, "via "); via != (n.gateway != "") {
				t.Errorf("%s: routes on vpn0 with gateway %q in CreateNetwork:\n%s", n.name, n.gateway, routes)
			}
		}
	})
	t.Run("ping", func(t *testing.T) {
		for _, p := range [][2]*node{{a, b}, {b, a}} {
			p[0].run(t, ctx, k.ping[0], append(k.ping[1:], "-c", "3", "-W", "5", p[1].ip)...)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		for _, p := range [][2]*node{{a, b}, {b, a}} {
			transfer(t, ctx, p[0], p[1], 2<<20)
		}
	})
	t.Run("run", func(t *testing.T) {
		res, err := a.eu.Run(ctx, busybox, "sh", "-c", "echo hi; echo err >&2; exit 3")
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Stdout) != "hi\n" || string(res.Stderr) != "err\n" || res.ReturnCode != 3 {
			t.Fatalf("got stdout %q stderr %q rc %d; want \"hi\\n\" \"err\\n\" 3", res.Stdout, res.Stderr, res.ReturnCode)
		}
		var ce *golemnet.CallError
		if _, err := a.eu.Spawn(ctx, "/no/such/program"); !errors.As(err, &ce) || ce.Code != api.Response_NOT_FOUND {
			t.Fatalf("missing program: %v, want a NOT_FOUND error", err)
		}
	})
	t.Run("kill", func(t *testing.T) {
		p, err := a.eu.Spawn(ctx, busybox, "sleep", "1000")
		if err != nil {
			t.Fatal(err)
		}
		if err := a.eu.KillProcess(ctx, p.Pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if r, err := p.Wait(ctx); err != nil || r.ReturnCode != 128+15 {
			t.Fatalf("the killed process: rc %d, %v; want %d", r.ReturnCode, err, 128+15)
		}
	})
	t.Run("spoofed-source-dropped", func(t *testing.T) { spoof(t, ctx, k, a, b) })
	t.Run("shutdown", func(t *testing.T) {
		// A daemon that outlives its command must not outlive the
		// activity: a duration that names it on the host.
		token := randomToken(t)
		for _, n := range nodes {
			n.sh(t, ctx, busybox+" setsid "+busybox+" sleep "+token+" >/dev/null 2>&1 </dev/null &")
		}
		for _, n := range nodes {
			if err := n.eu.ProtocolError(); err != nil {
				t.Error(err)
			}
			if err := n.eu.Shutdown(ctx); err != nil {
				t.Fatalf("%s: Shutdown: %v", n.name, err)
			}
			n.checkGone(t)
			// The ExeUnit's second teardown finds nothing to do and no
			// runtime to ask, and changes nothing.
			if err := n.eu.Shutdown(ctx); !errors.Is(err, golemnet.ErrRuntimeGone) {
				t.Errorf("%s: a second Shutdown: %v, want %v", n.name, err, golemnet.ErrRuntimeGone)
			}
			n.checkGone(t)
		}
		if pids := processesNaming(busybox + "\x00sleep\x00" + token); len(pids) > 0 {
			t.Errorf("payload daemons survived Shutdown: pids %v", pids)
		}
	})
}

// transfer serves size random bytes over HTTP from srv's payload to cli's
// and checks that they arrive whole, by their SHA-256 on either side.
func transfer(t *testing.T, ctx context.Context, srv, cli *node, size int) {
	t.Helper()
	dir := strings.TrimSpace(srv.sh(t, ctx, busybox+" mktemp -d"))
	defer srv.sh(t, ctx, busybox+" rm -rf "+dir)
	want := strings.Fields(srv.sh(t, ctx, fmt.Sprintf("%[1]s head -c %[2]d /dev/urandom > %[3]s/blob && %[1]s sha256sum %[3]s/blob", busybox, size, dir)))[0]
	httpd, err := srv.eu.Spawn(ctx, busybox, "httpd", "-f", "-p", "8080", "-h", dir)
	if err != nil {
		t.Fatal(err)
	}
	srv.sh(t, ctx, "for i in $(seq 400); do "+busybox+" netstat -ltn | grep -q ':8080 ' && exit 0; sleep 0.05; done; exit 1")
	out := cli.sh(t, ctx, fmt.Sprintf("%[1]s wget -q -O - http://%[2]s:8080/blob | %[1]s sha256sum", busybox, srv.ip))
	if got := strings.Fields(out); len(got) == 0 || got[0] != want {
		t.Errorf("HTTP %s → %s: the body's sha256 is %v, want %s", srv.name, cli.name, got, want)
	}
	if err := srv.eu.KillProcess(ctx, httpd.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if r, err := httpd.Wait(ctx); err != nil || r.ReturnCode != 128+15 {
		t.Fatalf("httpd after SIGTERM: rc %d, %v", r.ReturnCode, err)
	}
}

// spoof has node a's payload speak as an address that is not its own: the
// frames must be dropped before the ExeUnit sees them (it would learn a
// wrong route), the drop counted by its reason in a's gvpn.vpn, and the
// VPN must keep working.
func spoof(t *testing.T, ctx context.Context, k kind, a, b *node) {
	const other = "192.168.21.99"
	reason := k.dropPrefix + "spoofed_ip"
	before := a.stats(t).Egress.Drops[reason]
	script := fmt.Sprintf("ip addr add %[1]s/32 dev vpn0 && { ping -c 2 -W 1 -I %[1]s %[2]s; ip addr del %[1]s/32 dev vpn0; }", other, b.ip)
	if k.rootPayload {
		res, err := a.eu.Run(ctx, busybox, "sh", "-c", script)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("as the payload: rc %d %s%s", res.ReturnCode, res.Stdout, res.Stderr)
	} else {
		// The payload has no capabilities: the test sends in its place,
		// from the sandbox's network namespace.
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", a.sandbox, "sh", "-c", script).CombinedOutput()
		t.Logf("in the payload's namespace: %v %s", err, out)
	}
	var st api.VPNStats
	privtest.WaitFor(t, a.name+"'s gvpn.vpn to count egress "+reason, func() bool {
		st = a.stats(t)
		return st.Egress.Drops[reason] > before
	})
	t.Logf("%s's egress drops: %v", a.name, st.Egress.Drops)
	a.run(t, ctx, k.ping[0], append(k.ping[1:], "-c", "1", "-W", "5", b.ip)...)
}

// randomToken returns a number no other process on the machine has on
// its command line.
func randomToken(t *testing.T) string {
	n, err := rand.Int(rand.Reader, big.NewInt(1<<30))
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(1<<30 + n.Int64())
}
