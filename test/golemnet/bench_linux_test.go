//go:build linux

package golemnet

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkHubForward measures frames per second through the hub from one
// runtime to another: 1234-byte frames (MTU 1220 + Ethernet header), the
// sender using sendmmsg and the receiver recvmmsg like a fast runtime would,
// all on this machine's cores together with the hub. The sender keeps a
// bounded window in flight so that no socket overflows; frames that still
// get lost are reported as lost/op.
//
// Sub-benchmarks: "gso" is the hub as it runs (runs of same-size frames to
// one runtime leave as UDP GSO messages), "sendmmsg" forces one datagram per
// message.
func BenchmarkHubForward(b *testing.B) {
	b.Run("gso", func(b *testing.B) { benchForward(b, false) })
	b.Run("sendmmsg", func(b *testing.B) { benchForward(b, true) })
}

func benchForward(b *testing.B, noGSO bool) {
	const frameSize, window, batch = 1234, 512, 32
	h := NewHub(nil)
	h.noGSO = noGSO
	defer h.Close()
	na, _ := h.AddNode("a", ipA)
	nb, _ := h.AddNode("b", ipB)
	src, dst := plainSocket(b), plainSocket(b)
	if err := nb.SetRuntimeEndpoint(dst.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		b.Fatal(err)
	}
	if err := h.Start(); err != nil {
		b.Fatal(err)
	}

	var received atomic.Int64
	progress := make(chan struct{}, 1)
	rraw, _ := dst.SyscallConn()
	var wg sync.WaitGroup
	wg.Go(func() {
		sc := newSyscaller()
		bufs := make([][]byte, batch)
		hs := make([]unix.Mmsghdr, batch)
		iov := make([]unix.Iovec, batch)
		for i := range hs {
			bufs[i] = make([]byte, 2048)
			iov[i].Base = &bufs[i][0]
			iov[i].SetLen(len(bufs[i]))
			hs[i].Hdr.Iov = &iov[i]
			hs[i].Hdr.SetIovlen(1)
		}
		for {
			n, err := sc.recv(rraw, hs)
			if err != nil {
				return
			}
			received.Add(int64(n))
			select {
			case progress <- struct{}{}:
			default:
			}
		}
	})
	defer func() {
		dst.Close()
		wg.Wait()
	}()

	frame := udpFrame(b, payloadMAC(ipB), ipA, ipB, 1, frameSize)
	ep, _ := newEndpoint(na.Addr())
	sraw, _ := src.SyscallConn()
	sc := newSyscaller()
	hs := make([]unix.Mmsghdr, batch)
	iov := make([]unix.Iovec, batch)
	for i := range hs {
		setSendTo(&hs[i], &iov[i], frame, ep)
	}
	var lost int64
	stall := time.NewTimer(time.Hour)
	defer stall.Stop()
	// waitBelow waits until at most limit frames are in flight; a window
	// that stops draining for long means frames were lost in a socket.
	waitBelow := func(sent int64, limit int64) {
		for sent-received.Load()-lost > limit {
			stall.Reset(200 * time.Millisecond)
			select {
			case <-progress:
			case <-stall.C:
				lost = sent - received.Load()
			}
		}
	}

	b.SetBytes(frameSize)
	b.ReportAllocs()
	b.ResetTimer()
	var sent int64
	for sent < int64(b.N) {
		k := min(int64(batch), int64(b.N)-sent)
		waitBelow(sent, window-k)
		m, err := sc.send(sraw, hs[:k])
		if err != nil {
			b.Fatal(err)
		}
		sent += int64(m)
	}
	waitBelow(sent, 0)
	elapsed := b.Elapsed()
	b.StopTimer()
	fps := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(fps, "frames/s")
	b.ReportMetric(fps*frameSize*8/1e9, "Gbit/s")
	b.ReportMetric(float64(lost)/float64(b.N), "lost/op")
	if s := h.Stats(); s[0].DropMap()["no_route"] != 0 {
		b.Fatalf("drops %v", s[0].DropMap())
	}
}
