package frame

import (
	"bytes"
	"testing"
)

// ethernet builds a frame: dst, src, EtherType, payload.
func ethernet(dst, src MAC, typ uint16, payload []byte) []byte {
	f := append(append(append([]byte{}, dst[:]...), src[:]...), byte(typ>>8), byte(typ))
	return append(f, payload...)
}

var (
	macA = MAC{0x90, 0x13, 10, 0, 0, 1}
	macB = MAC{0x90, 0x13, 10, 0, 0, 2}
)

func arpPayload(ptype uint16, plen byte) []byte {
	p := []byte{0, 1, byte(ptype >> 8), byte(ptype), 6, plen, 0, 1}
	p = append(p, macA[:]...)
	p = append(p, 10, 0, 0, 1)
	p = append(p, make([]byte, 6)...)
	return append(p, 10, 0, 0, 2)
}

func ipv4Header(total int) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	h[2], h[3] = byte(total>>8), byte(total)
	h[9] = 1 // ICMP
	copy(h[12:16], []byte{10, 0, 0, 1})
	copy(h[16:20], []byte{10, 0, 0, 2})
	return h
}

func TestEthernetFields(t *testing.T) {
	f := ethernet(macB, macA, TypeIPv4, nil)
	if Dst(f) != macB || Src(f) != macA || Type(f) != TypeIPv4 {
		t.Fatalf("Dst %v Src %v Type %#x", Dst(f), Src(f), Type(f))
	}
}

// TestShortFramesDoNotPanic: the package promises never to panic; a frame
// shorter than a header gives zero values and ok=false.
func TestShortFramesDoNotPanic(t *testing.T) {
	full := ethernet(macB, macA, TypeIPv4, ipv4Header(20))
	for n := 0; n < len(full); n++ {
		f := full[:n]
		if n < EthernetLen {
			if Dst(f) != (MAC{}) || Src(f) != (MAC{}) || Type(f) != 0 {
				t.Errorf("len %d: Dst %v Src %v Type %#x, want zero values", n, Dst(f), Src(f), Type(f))
			}
		}
		if _, ok := ParseIPv4(f); ok {
			t.Errorf("len %d: ParseIPv4 ok on a truncated header", n)
		}
		if _, ok := ParseARP(f); ok {
			t.Errorf("len %d: ParseARP ok on a truncated packet", n)
		}
	}
}

func TestParseARP(t *testing.T) {
	a, ok := ParseARP(ethernet(Broadcast, macA, TypeARP, arpPayload(TypeIPv4, 4)))
	if !ok || !a.ProtoIsIPv4 || a.Op != 1 || a.SenderMAC != macA || a.SenderIP != [4]byte{10, 0, 0, 1} || a.TargetIP != [4]byte{10, 0, 0, 2} {
		t.Fatalf("ParseARP = %+v, %v", a, ok)
	}
	if a, ok := ParseARP(ethernet(Broadcast, macA, TypeARP, arpPayload(TypeIPv6, 16))); !ok || a.ProtoIsIPv4 {
		t.Fatalf("ARP for another protocol: %+v, %v; want ok and not IPv4", a, ok)
	}
	bad := arpPayload(TypeIPv4, 4)
	bad[4] = 8 // not an Ethernet hardware address length
	if _, ok := ParseARP(ethernet(Broadcast, macA, TypeARP, bad)); ok {
		t.Fatal("ParseARP accepted a non-Ethernet hardware address")
	}
}

func TestParseIPv4(t *testing.T) {
	h, ok := ParseIPv4(ethernet(macB, macA, TypeIPv4, append(ipv4Header(24), 1, 2, 3, 4, 0, 0)))
	if !ok || h.HdrLen != 20 || h.TotalLen != 24 || h.Protocol != 1 || h.Src != [4]byte{10, 0, 0, 1} || h.Dst != [4]byte{10, 0, 0, 2} {
		t.Fatalf("ParseIPv4 = %+v, %v", h, ok)
	}
	// Identification and fragments (as offload needs them): more
	// fragments, or a non-zero offset, is a fragment; DF alone is not.
	for _, c := range []struct {
		flags    [2]byte
		fragment bool
	}{{[2]byte{0x40, 0}, false}, {[2]byte{0x20, 0}, true}, {[2]byte{0, 1}, true}, {[2]byte{0x1f, 0xff}, true}} {
		hdr := ipv4Header(20)
		hdr[4], hdr[5] = 0xbe, 0xef
		hdr[6], hdr[7] = c.flags[0], c.flags[1]
		f := ethernet(macB, macA, TypeIPv4, hdr)
		hl, tl, ok := IPv4Lens(f)
		if !ok || hl != 20 || tl != 20 || IPv4ID(f) != 0xbeef || IPv4Fragment(f) != c.fragment || IPv4Protocol(f) != 1 {
			t.Errorf("flags % x: lens %d %d %v, id %#x, fragment %v; want 20 20, id 0xbeef, fragment %v",
				c.flags, hl, tl, ok, IPv4ID(f), IPv4Fragment(f), c.fragment)
		}
	}
	for name, hdr := range map[string][]byte{
		"total beyond frame": ipv4Header(60),
		"total below header": ipv4Header(10),
		"version 6":          append([]byte{0x65}, ipv4Header(20)[1:]...),
		"header length 4":    append([]byte{0x41}, ipv4Header(20)[1:]...),
	} {
		if _, ok := ParseIPv4(ethernet(macB, macA, TypeIPv4, hdr)); ok {
			t.Errorf("%s: ParseIPv4 ok", name)
		}
	}
}

// FuzzAccessors feeds arbitrary bytes to every accessor: none may panic,
// and what the parsers accept must lie inside the frame.
func FuzzAccessors(f *testing.F) {
	f.Add([]byte{})
	f.Add(ethernet(macB, macA, TypeIPv4, ipv4Header(20)))
	f.Add(ethernet(Broadcast, macA, TypeARP, arpPayload(TypeIPv4, 4)))
	f.Add(ethernet(macB, macA, TypeIPv6, bytes.Repeat([]byte{0x60}, 40)))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = Dst(b), Src(b), Type(b)
		_, _, _ = IPv4ID(b), IPv4Fragment(b), IPv4Protocol(b)
		if hl, tl, ok := IPv4Lens(b); ok != (EthernetLen+IPv4MinLen <= len(b) && b[EthernetLen]>>4 == 4 && hl >= IPv4MinLen && tl >= hl && EthernetLen+tl <= len(b)) {
			t.Fatalf("IPv4Lens = %d, %d, %v from %d bytes", hl, tl, ok, len(b))
		}
		if h, ok := ParseIPv4(b); ok {
			if EthernetLen+h.TotalLen > len(b) || h.HdrLen < IPv4MinLen || h.TotalLen < h.HdrLen {
				t.Fatalf("ParseIPv4 accepted %+v from %d bytes", h, len(b))
			}
		}
		if _, ok := ParseARP(b); ok && len(b) < EthernetLen+ARPLen {
			t.Fatalf("ParseARP accepted %d bytes", len(b))
		}
	})
}
