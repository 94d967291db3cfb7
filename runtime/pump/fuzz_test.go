package pump

import (
	"testing"

	"github.com/gvpn/gvpn/runtime/frame"
)

// FuzzFilters feeds arbitrary bytes to both filters: they must never panic,
// and a frame the payload filter passes must really be a well-formed IPv4 or
// ARP frame sent as this node.
func FuzzFilters(f *testing.F) {
	f.Add(udpFrame(f, ownMAC, peerMAC, ownIP, peerIP, []byte("seed")))
	f.Add(arpFrame(f, ownMAC, ownIP, peerIP))
	f.Add(ipv6Frame(f))
	f.Add([]byte{})
	f.Add(make([]byte, 14))
	payload := &EgressFilter{MAC: ownMAC, IP: ownIP, MaxFrame: maxFrame}
	network := &IngressFilter{MaxFrame: maxFrame}
	own := ownIP.As4()
	f.Fuzz(func(t *testing.T, b []byte) {
		r := payload.Check(b)
		if r >= NumReasons {
			t.Fatalf("unknown reason %d", r)
		}
		nr := network.Check(b)
		if r == Pass && nr != Pass {
			t.Fatalf("payload filter passed what the network filter drops as %v", nr)
		}
		if r != Pass {
			return
		}
		if len(b) < frame.EthernetLen || len(b) > maxFrame || frame.Src(b) != ownMAC {
			t.Fatal("passed a frame that is short, oversize or not from our MAC")
		}
		switch frame.Type(b) {
		case frame.TypeIPv4:
			if h, ok := frame.ParseIPv4(b); !ok || h.Src != own {
				t.Fatal("passed an IPv4 frame that does not parse or is not from our IP")
			}
		case frame.TypeARP:
			if a, ok := frame.ParseARP(b); !ok || !a.ProtoIsIPv4 || a.SenderIP != own || a.SenderMAC != ownMAC {
				t.Fatal("passed an ARP frame that does not parse or speaks for another node")
			}
		default:
			t.Fatalf("passed EtherType %#04x", frame.Type(b))
		}
	})
}
