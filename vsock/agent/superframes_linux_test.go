package agent

import (
	"encoding/binary"
	"io"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/offload"
	"github.com/gvpn/gvpn/test/privtest"
	"github.com/gvpn/gvpn/vsock"
)

// nextTCP reads frames from the data connection as they travelled until a
// TCP/IPv4 one to 10.1.0.3, and reports whether it came behind a header
// (link.HeaderFlag) and the header.
func nextTCP(t *testing.T, c net.Conn) (flagged bool, h offload.VNetHdr) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(guard))
	for {
		var p [4]byte
		if _, err := io.ReadFull(c, p[:]); err != nil {
			t.Fatal(err)
		}
		n := binary.BigEndian.Uint32(p[:])
		body := make([]byte, n&^link.HeaderFlag)
		if _, err := io.ReadFull(c, body); err != nil {
			t.Fatal(err)
		}
		flagged = n&link.HeaderFlag != 0
		f := body
		if flagged {
			h, _ = offload.DecodeVNetHdr(body)
			f = body[offload.VNetHdrLen:]
		}
		if len(f) >= 34 && f[12] == 8 && f[13] == 0 && f[23] == 6 && [4]byte(f[30:34]) == [4]byte{10, 1, 0, 3} {
			return flagged, h
		}
	}
}

// TestManagedSuperframes: the agent offers superframes in hello, confirms
// them to a configure that asks (its TAP has a virtio-net header), and then
// passes the TAP's packets to the bridge with their headers (a TCP SYN
// with a partial checksum arrives flagged, NEEDS_CSUM); to a configure that
// does not ask, and after its control connection is lost, it sends plain
// frames (the checksum completed at its TAP). With NoVNetHdr it neither
// offers nor confirms.
func TestManagedSuperframes(t *testing.T) {
	privtest.RequireRoot(t)
	nsName, ns := privtest.NewNetns(t, "gvt-ag-")
	rt := newFakeRuntime(t)
	runAgent(t, Config{Bridge: rt.addr, NS: ns, HostsFile: "", Backoff: fast, Log: privtest.Log(t)})
	if h := rt.acceptControl(); !h.VNetHdr {
		t.Fatal("hello does not offer superframes")
	}
	data := accept(t, rt.dataL)
	defer data.Close()
	c := vsock.Configure{Name: "vpn0", IfAddr: "10.1.0.2", Mask: "255.255.255.0", MTU: 1220}
	configure := func(vnet bool) vsock.Configured {
		c.VNetHdr = vnet
		return rt.call(func(id uint64) vsock.Message { c.ID = id; return c }).(vsock.Configured)
	}
	if r := configure(false); !r.OK || r.VNetHdr {
		t.Fatalf("configure without superframes: %+v", r)
	}
	r := configure(true)
	if !r.OK {
		t.Fatalf("configure: %+v", r)
	}
	if !r.VNetHdr {
		t.Skip("the kernel gave the TAP no virtio-net header here: nothing to carry")
	}

	// TCP from the payload toward a peer whose MAC is known: SYNs, sent
	// again and again while nobody answers.
	ip := func(args ...string) {
		if out, err := exec.Command("ip", append([]string{"netns", "exec", nsName}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	ip("ip", "neigh", "replace", "10.1.0.3", "lladdr", "90:13:0a:01:00:03", "dev", "vpn0")
	syn := exec.Command("ip", "netns", "exec", nsName, "bash", "-c", "exec 3<>/dev/tcp/10.1.0.3/80")
	if err := syn.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { syn.Process.Kill(); syn.Wait() }()
	// A read of the TAP already under way when superframes were agreed
	// finishes plain; a retransmitted SYN comes behind its TAP header.
	for {
		if flagged, h := nextTCP(t, data); flagged {
			if h.Flags&offload.FlagNeedsCsum == 0 {
				t.Fatalf("SYN behind header %+v; want the TAP's, with a partial checksum", h)
			}
			break
		}
	}

	// The control connection goes: plain frames from then on.
	rt.ctl.Close()
	rt.acceptControl()
	for {
		if flagged, _ := nextTCP(t, data); !flagged {
			break // a retransmitted SYN, plain
		}
	}
	if r := configure(true); !r.VNetHdr {
		t.Fatalf("configure on the new control connection: %+v", r)
	}
}

// TestManagedNoVNetHdr: an agent told not to (as an older agent) does not
// offer superframes and does not confirm them.
func TestManagedNoVNetHdr(t *testing.T) {
	privtest.RequireRoot(t)
	_, ns := privtest.NewNetns(t, "gvt-ag-")
	rt := newFakeRuntime(t)
	runAgent(t, Config{Bridge: rt.addr, NS: ns, NoVNetHdr: true, Backoff: fast, Log: privtest.Log(t)})
	if h := rt.acceptControl(); h.VNetHdr {
		t.Fatal("hello offers superframes")
	}
	r := rt.call(func(id uint64) vsock.Message {
		return vsock.Configure{ID: id, Name: "vpn0", IfAddr: "10.1.0.2", Mask: "255.255.255.0", MTU: 1220, VNetHdr: true}
	}).(vsock.Configured)
	if !r.OK || r.VNetHdr {
		t.Fatalf("configure: %+v", r)
	}
}
