package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/offload"
	"github.com/gvpn/gvpn/vsock"
)

// tcpRun returns n in-order TCP segments of one flow, 1000 bytes of payload
// each, as a sender without offloads puts them on the wire: what the
// runtime's Coalescer glues into one superframe.
func tcpRun(t *testing.T, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for i := range n {
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{0x90, 0x13, 10, 5, 0, 3}, DstMAC: net.HardwareAddr{0x90, 0x13, 10, 5, 0, 2},
			EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Id: uint16(100 + i), Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP,
			SrcIP: net.IP{10, 5, 0, 3}, DstIP: net.IP{10, 5, 0, 2}}
		tcp := &layers.TCP{SrcPort: 5201, DstPort: 40000, Seq: uint32(1000 * i), Ack: 7, ACK: true, Window: 500}
		tcp.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			eth, ip, tcp, gopacket.Payload(bytes.Repeat([]byte{byte(i)}, 1000))); err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.Clone(buf.Bytes()))
	}
	return out
}

// dialAgentWith dials the control address until it answers, and says h.
func dialAgentWith(t *testing.T, ctl vsock.Addr, h vsock.Hello) *fakeAgent {
	t.Helper()
	a, err := dialAgentSaying(ctl, h)
	if err != nil {
		t.Fatal(err)
	}
	a.t = t
	t.Cleanup(func() { a.ctl.Close() })
	return a
}

// wireFrame is one frame as it travelled on the data connection.
type wireFrame struct {
	flagged bool
	body    []byte // header and frame when flagged, else the frame
}

func readWire(t *testing.T, c net.Conn) wireFrame {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(guard))
	var p [4]byte
	if _, err := io.ReadFull(c, p[:]); err != nil {
		t.Fatal(err)
	}
	n := binary.BigEndian.Uint32(p[:])
	f := wireFrame{flagged: n&link.HeaderFlag != 0}
	f.body = make([]byte, n&^link.HeaderFlag)
	if _, err := io.ReadFull(c, f.body); err != nil {
		t.Fatal(err)
	}
	return f
}

// bridgeUp opens a Box for cfg whose fake agent says hello and answers the
// first configure with answer, attaches the VPN, and dials the data
// connection as the agent. got yields the configure the agent received.
func bridgeUp(t *testing.T, cfg Config, hello vsock.Hello, answer func(vsock.Message) []vsock.Message) (b *Box, a *fakeAgent, l link.Link, dc net.Conn, got vsock.Configure) {
	t.Helper()
	ctl, _ := cfg.Bridge.Control()
	opened := make(chan *Box, 1)
	go func() {
		b, err := Open(context.Background(), cfg)
		if err != nil {
			t.Error(err)
		}
		opened <- b
	}()
	a = dialAgentWith(t, ctl, hello)
	b = <-opened
	if b == nil {
		t.FailNow()
	}
	t.Cleanup(func() { b.Close() })
	served := a.serveOne(answer)
	l, err := b.Attach(context.Background(), linkConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got = (<-served).(vsock.Configure)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if dc, err = vsock.Dial(ctx, cfg.Bridge); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.Close() })
	if err := b.data.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	return b, a, l, dc, got
}

// gluedSuperframe is segs glued into one superframe, virtio-net header
// first, as the agent's TAP would hand it over.
func gluedSuperframe(t *testing.T, segs [][]byte) []byte {
	t.Helper()
	var glued [][]byte
	for _, s := range segs {
		glued = append(glued, append(make([]byte, link.Headroom), s...))
	}
	gl := offload.NewLink(&captureLink{})
	if _, err := gl.Write(glued, link.Headroom); err != nil {
		t.Fatal(err)
	}
	return gl.Inner().(*captureLink).pkts[0]
}

// sendFlagged writes pkt (header and frame) on the data connection behind
// the header flag.
func sendFlagged(t *testing.T, dc net.Conn, pkt []byte) {
	t.Helper()
	wire := binary.BigEndian.AppendUint32(nil, uint32(len(pkt))|link.HeaderFlag)
	if _, err := dc.Write(append(wire, pkt...)); err != nil {
		t.Fatal(err)
	}
}

// readBufs is a batch of buffers for the attached link's Read.
func readBufs() ([][]byte, []int) {
	bufs, sizes := make([][]byte, 64), make([]int, 64)
	for i := range bufs {
		bufs[i] = make([]byte, link.BufSize)
	}
	return bufs, sizes
}

// TestBridgeSuperframes: the Box asks for superframes exactly when the
// agent offered them and it may use them, glues frames for the agent only
// while the current control session agreed (docs/bridge.md §2.4), falls
// back to plain frames when that session ends and agrees again with the
// next, and takes the agent's superframes, cut into the segments, whatever
// was agreed.
func TestBridgeSuperframes(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		offer, plain, confirm bool
		want                  bool
	}{
		{name: "agreed", offer: true, confirm: true, want: true},
		{name: "agent does not offer", offer: false},
		{name: "runtime does not ask", offer: true, plain: true},
		{name: "agent does not confirm", offer: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := testConfig(t, "")
			cfg.NoVNetHdr = tc.plain
			ctl, _ := cfg.Bridge.Control()
			hello := vsock.Hello{Version: vsock.ProtocolVersion, AgentID: "fake", VNetHdr: tc.offer}
			answer := func(m vsock.Message) []vsock.Message {
				c := m.(vsock.Configure)
				r := vsock.ConfiguredFor(c.ID, nil)
				r.VNetHdr = tc.confirm && c.VNetHdr
				return []vsock.Message{r}
			}
			b, a, l, dc, c := bridgeUp(t, cfg, hello, answer)
			if c.VNetHdr != (tc.offer && !tc.plain) {
				t.Fatalf("configure asked for superframes: %v, want %v", c.VNetHdr, tc.offer && !tc.plain)
			}

			// Toward the agent: one superframe, or the frames as they are.
			segs := tcpRun(t, 4)
			sendRun := func(superframe bool) {
				t.Helper()
				bufs := make([][]byte, len(segs))
				for i, s := range segs {
					bufs[i] = append(make([]byte, link.Headroom), s...)
				}
				if _, err := l.Write(bufs, link.Headroom); err != nil {
					t.Fatal(err)
				}
				if superframe {
					f := readWire(t, dc)
					h, _ := offload.DecodeVNetHdr(f.body)
					if !f.flagged || h.GSOType != offload.GSOTCPv4 || h.GSOSize != 1000 {
						t.Fatalf("want one flagged TCP superframe, got flagged=%v header %+v", f.flagged, h)
					}
					return
				}
				for i, s := range segs {
					if f := readWire(t, dc); f.flagged || !bytes.Equal(f.body, s) {
						t.Fatalf("frame %d: flagged=%v, same=%v; want the plain frame", i, f.flagged, bytes.Equal(f.body, s))
					}
				}
			}
			sendRun(tc.want)

			// From the agent: a superframe is taken and cut whatever was
			// agreed (a reader needs no state, §2.4).
			sendFlagged(t, dc, gluedSuperframe(t, segs))
			bufs, sizes := readBufs()
			for read := 0; read < len(segs); {
				n, err := l.Read(bufs, sizes, link.Headroom)
				if err != nil {
					t.Fatal(err)
				}
				for i := range n {
					if !bytes.Equal(bufs[i][link.Headroom:link.Headroom+sizes[i]], segs[read]) {
						t.Fatalf("segment %d cut from the agent's superframe differs", read)
					}
					read++
				}
			}
			if !tc.want {
				return
			}

			// The control session ends: plain frames until the next one
			// agrees again.
			a.ctl.Close()
			waitFor(t, func() bool { return !b.superframesOn() })
			sendRun(false)
			a2 := dialAgentWith(t, ctl, hello)
			if c := (<-a2.serveOne(answer)).(vsock.Configure); !c.VNetHdr {
				t.Fatal("the reconnected agent was not asked for superframes")
			}
			waitFor(t, b.superframesOn)
			sendRun(true)
		})
	}
}

// superframesOn reports whether the Box glues superframes for the agent.
func (b *Box) superframesOn() bool {
	b.ctl.mu.Lock()
	defer b.ctl.mu.Unlock()
	return b.ctl.superframes
}

// waitFor polls cond until it holds (a deadlock guard, not a timing check).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// captureLink keeps copies of the packets written to it.
type captureLink struct{ pkts [][]byte }

func (c *captureLink) Read([][]byte, []int, int) (int, error) { return 0, io.EOF }
func (c *captureLink) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		c.pkts = append(c.pkts, bytes.Clone(b[offset:]))
	}
	return len(bufs), nil
}
func (c *captureLink) BatchSize() int { return 1 }
func (c *captureLink) Close() error   { return nil }

// TestBridgeRefusesTinyGSOSize: a malicious agent's superframe asking to be
// cut into 1-byte segments (thousands of frames from one) is not cut: the
// runtime counts it and passes its bare frame on, which the runtime's
// filters drop as oversize.
func TestBridgeRefusesTinyGSOSize(t *testing.T) {
	cfg, _ := testConfig(t, "")
	hello := vsock.Hello{Version: vsock.ProtocolVersion, AgentID: "evil", VNetHdr: true}
	b, _, l, dc, _ := bridgeUp(t, cfg, hello, func(m vsock.Message) []vsock.Message {
		r := vsock.ConfiguredFor(m.(vsock.Configure).ID, nil)
		r.VNetHdr = true
		return []vsock.Message{r}
	})
	pkt := gluedSuperframe(t, tcpRun(t, 4))
	h, _ := offload.DecodeVNetHdr(pkt)
	h.GSOSize = 1
	h.Encode(pkt)
	sendFlagged(t, dc, pkt)
	bufs, sizes := readBufs()
	n, err := l.Read(bufs, sizes, link.Headroom)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || sizes[0] != len(pkt)-offload.VNetHdrLen {
		t.Fatalf("Read = %d frames (first %d bytes); want the one bare frame of %d bytes", n, sizes[0], len(pkt)-offload.VNetHdrLen)
	}
	if st := b.off.Stats(); st.SmallGSO != 1 || st.Malformed != 1 || st.SplitSuperframes != 0 {
		t.Fatalf("counters %+v; want it counted as a small gso_size, not split", st)
	}
}
