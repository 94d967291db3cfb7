//go:build linux

package golemnet

import (
	"errors"
	"math/rand/v2"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// reader is the state of one node's reader goroutine: receive buffers, the
// per-destination lists of a batch and the send headers. Nothing in it is
// allocated per frame.
type reader struct {
	n    *Node
	sc   *syscaller
	bufs [][]byte
	rhs  []unix.Mmsghdr // recvmmsg headers, one per buffer, set up once
	riov []unix.Iovec
	rctl []byte         // a UDP_GRO control message per receive header
	fr   []frameRef     // the batch's frames: one per datagram, GRO messages cut apart
	shs  []unix.Mmsghdr // sendmmsg headers for one destination
	siov []unix.Iovec   // one per frame, in list order
	ctl  []byte         // a UDP_SEGMENT control message per header
	segs []int          // frames per header

	// perDest[j] lists, in arrival order, the batch's frames for node j;
	// touched lists the j with a non-empty list.
	perDest [][]int32
	touched []int32
}

// frameRef locates one frame of a batch in the receive buffers.
type frameRef struct {
	buf, off, size int32
}

// maxBatchFrames is the most frames one receive can bring: every message
// a GRO message of the most segments a sender may glue.
const maxBatchFrames = BatchSize * gsoMaxSegments

func newReader(n *Node) *reader {
	r := &reader{
		n:    n,
		sc:   newSyscaller(),
		bufs: make([][]byte, BatchSize),
		rhs:  make([]unix.Mmsghdr, BatchSize),
		riov: make([]unix.Iovec, BatchSize),
		rctl: make([]byte, BatchSize*groCmsgSpace),
		fr:   make([]frameRef, 0, maxBatchFrames),
		shs:  make([]unix.Mmsghdr, maxBatchFrames),
		siov: make([]unix.Iovec, maxBatchFrames),
		ctl:  make([]byte, maxBatchFrames*gsoCmsgSpace),
		segs: make([]int, maxBatchFrames),
	}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, recvBufSize)
		r.riov[i].Base = &r.bufs[i][0]
		r.riov[i].SetLen(recvBufSize)
		r.rhs[i].Hdr.Iov = &r.riov[i]
		r.rhs[i].Hdr.SetIovlen(1)
	}
	return r
}

func (n *Node) readLoop() {
	defer n.wg.Done()
	r := newReader(n)
	log := n.hub.log.WithField("node", n.name)
	for {
		for i := range r.rhs {
			r.rhs[i].Hdr.Control = &r.rctl[i*groCmsgSpace]
			r.rhs[i].Hdr.SetControllen(groCmsgSpace)
			r.rhs[i].Hdr.Flags = 0
		}
		count, err := r.sc.recv(n.raw, r.rhs)
		if err != nil {
			if n.stopped() || errors.Is(err, net.ErrClosed) {
				return
			}
			// The ExeUnit logs a receive error and goes on; so do we,
			// without spinning if the error sticks.
			log.WithError(err).Debug("golemnet: receive error")
			time.Sleep(time.Millisecond)
			continue
		}
		r.forward(count)
	}
}

// forward routes the frames of the first count received messages and
// delivers them.
func (r *reader) forward(count int) {
	n, h := r.n, r.n.hub
	t := h.table.Load()
	for len(r.perDest) < len(t.nodes) {
		r.perDest = append(r.perDest, nil)
	}
	// Cut the messages into frames first: a GRO message holds several
	// datagrams of one sender, each one frame.
	var rxBytes, truncated, glued uint64
	r.fr = r.fr[:0]
	for i := range count {
		size := int(r.rhs[i].Len)
		rxBytes += uint64(size)
		if r.rhs[i].Hdr.Flags&unix.MSG_TRUNC != 0 {
			n.drop(DropOversize, 1)
			truncated++
			continue
		}
		seg := groSize(&r.rhs[i], r.rctl[i*groCmsgSpace:(i+1)*groCmsgSpace])
		if seg <= 0 || seg >= size {
			seg = max(size, 1) // one frame (an empty datagram is one empty frame)
		} else {
			glued++
		}
		for off := 0; off < size || off == 0; off += seg {
			r.fr = append(r.fr, frameRef{buf: int32(i), off: int32(off), size: int32(min(seg, size-off))})
		}
	}
	for i := range r.fr {
		d := route(r.frame(int32(i)), n.index, t.owners)
		switch d.act {
		case actDrop:
			n.drop(d.reason, 1)
			if d.empty {
				n.drop(DropEmpty, 1)
				if h.emptyWarned.CompareAndSwap(false, true) {
					h.log.WithField("node", n.name).Warn("golemnet: runtime sent an empty datagram; the real ExeUnit's VPN stops for good on one (runtime bug)")
				}
			}
			continue
		case actUnicast:
			r.add(d.to, int32(i))
		case actBroadcast:
			for j, y := range t.nodes {
				if y != nil && int32(j) != n.index {
					r.add(int32(j), int32(i))
				}
			}
		}
		if d.learn {
			h.learn(d.src, n)
		}
	}
	for _, j := range r.touched {
		r.deliver(t.nodes[j], r.perDest[j])
		r.perDest[j] = r.perDest[j][:0]
	}
	r.touched = r.touched[:0]
	// Counted last, so that a reader of the counters who sees a frame
	// received also sees it routed, dropped or handed to a delay queue.
	n.rxFrames.Add(uint64(len(r.fr)) + truncated)
	if glued > 0 {
		n.rxGRO.Add(glued)
	}
	n.rxBytes.Add(rxBytes)
}

func (r *reader) add(dst, frame int32) {
	l := r.perDest[dst]
	if len(l) == 0 {
		if l == nil {
			l = make([]int32, 0, maxBatchFrames) // once per destination
		}
		r.touched = append(r.touched, dst)
	}
	r.perDest[dst] = append(l, frame)
}

func (r *reader) frame(i int32) []byte {
	f := r.fr[i]
	return r.bufs[f.buf][f.off : f.off+f.size]
}

// deliver sends the batch's frames in list (indices, in order) to node y,
// applying faults.
func (r *reader) deliver(y *Node, list []int32) {
	src := r.n
	srcF, dstF := src.fault.Load(), y.fault.Load()
	if (srcF != nil && srcF.Cut) || (dstF != nil && dstF.Cut) {
		src.drop(DropCut, len(list))
		return
	}
	ep := y.runtime.Load()
	if ep == nil {
		src.drop(DropNoEndpoint, len(list))
		return
	}
	if srcF == nil && dstF == nil && y.queue.pending.Load() == 0 {
		r.send(y, ep, list)
		return
	}

	var loss float64
	var latency time.Duration
	keep := 1.0
	for _, f := range [2]*Fault{srcF, dstF} {
		if f != nil {
			keep *= 1 - f.Loss
			latency += f.Latency
		}
	}
	loss = 1 - keep
	if loss > 0 {
		kept := list[:0]
		for _, i := range list {
			if rand.Float64() < loss {
				src.drop(DropLoss, 1)
				continue
			}
			kept = append(kept, i)
		}
		list = kept
	}
	if len(list) == 0 {
		return
	}
	// Frames still waiting in y's queue must leave before these, or order
	// per (source, destination) would break when a latency is lifted. The
	// queue counts a frame as pending until it is sent, so seeing zero means
	// every earlier frame of ours has left.
	if latency == 0 && y.queue.pending.Load() == 0 {
		r.send(y, ep, list)
		return
	}
	due := src.hub.now() + int64(latency)
	y.queue.enqueue(r, list, due)
}

// send hands the frames in list to y's runtime with one sendmmsg on y's
// socket. Where the kernel can, a run of same-size frames (the last may be
// shorter) goes as one UDP GSO message: the kernel cuts it back into one
// datagram per frame, at a fraction of the cost of sending each.
func (r *reader) send(y *Node, ep *endpoint, list []int32) {
	nh, gsoMsgs := 0, uint64(0)
	for p := 0; p < len(list); nh++ {
		size := int(r.fr[list[p]].size)
		q, total := p+1, size
		for y.gso && q < len(list) && q-p < gsoMaxSegments {
			next := int(r.fr[list[q]].size)
			if next > size || total+next > gsoMaxBytes {
				break
			}
			total += next
			q++
			if next < size { // only the last segment may be shorter
				break
			}
		}
		for k := p; k < q; k++ {
			f := r.frame(list[k])
			r.siov[k].Base = &f[0]
			r.siov[k].SetLen(len(f))
		}
		h := &r.shs[nh]
		setHeader(h, r.siov[p:q], ep)
		if q-p > 1 {
			setGSO(h, r.ctl[nh*gsoCmsgSpace:(nh+1)*gsoCmsgSpace], size)
			gsoMsgs++
		}
		r.segs[nh] = q - p
		p = q
	}
	if gsoMsgs > 0 {
		y.txGSO.Add(gsoMsgs)
	}
	sendBatch(r.sc, y, r.shs[:nh], r.segs[:nh], nil, r.n)
}

// sendBatch sends hs from y's socket, retrying after partial sends. Header k
// carries segs[k] frames (1 when segs is nil). A message the kernel refuses
// is dropped (charged to srcs[k], or to src when srcs is nil) and the rest
// still go.
func sendBatch(sc *syscaller, y *Node, hs []unix.Mmsghdr, segs []int, srcs []*Node, src *Node) {
	framesOf := func(k int) int {
		if segs == nil {
			return 1
		}
		return segs[k]
	}
	var frames, bytes uint64
	for off := 0; off < len(hs); {
		m, err := sc.send(y.raw, hs[off:])
		for k := off; k < off+m; k++ {
			bytes += uint64(hs[k].Len)
			frames += uint64(framesOf(k))
		}
		off += m
		if err == nil && m > 0 {
			continue
		}
		if errors.Is(err, net.ErrClosed) || y.stopped() {
			// y left (or the hub is closing): the rest has no route.
			for k := off; k < len(hs); k++ {
				chargeOf(srcs, src, k).drop(DropNoRoute, framesOf(k))
			}
			break
		}
		s := chargeOf(srcs, src, off)
		s.drop(DropSendError, framesOf(off))
		if s.sendWarned.CompareAndSwap(false, true) {
			y.hub.log.WithError(err).WithField("node", y.name).Warn("golemnet: cannot send to the runtime endpoint (warned once per source)")
		}
		off++
	}
	y.txFrames.Add(frames)
	y.txBytes.Add(bytes)
}

func chargeOf(srcs []*Node, src *Node, k int) *Node {
	if srcs != nil {
		return srcs[k]
	}
	return src
}
