//go:build linux

package golemnet

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// delayQueue holds frames for one destination node until their delivery
// time. It is a FIFO: a frame never leaves before one that entered earlier,
// even if its own delay is shorter, which keeps order per destination when
// latencies change.
//
// Producers (readers of other nodes) copy frames in under mu at the tail;
// the consumer goroutine sends from the head without holding mu and frees
// the slots afterwards, so producers never touch slots being sent.
type delayQueue struct {
	dst  *Node
	wake chan struct{} // a producer added frames

	mu    sync.Mutex
	slots []qslot // ring, allocated on first use
	head  int
	count int
	bytes int

	// pending is count, readable without mu. A frame stays pending until it
	// has been sent or dropped.
	pending atomic.Int32
}

type qslot struct {
	buf []byte
	due int64 // hub clock
	src *Node
}

// smallSlot is the buffer size a slot keeps between uses; larger frames get
// a buffer of their own that is released once sent.
const smallSlot = 2048

func newDelayQueue(dst *Node) *delayQueue {
	return &delayQueue{dst: dst, wake: make(chan struct{}, 1)}
}

// enqueue copies reader r's frames in list (in order) into the queue, due at
// due; those that do not fit are dropped as DropQueueFull.
func (q *delayQueue) enqueue(r *reader, list []int32, due int64) {
	src := r.n
	if q.dst.removed.Load() {
		src.drop(DropNoRoute, len(list))
		return
	}
	q.mu.Lock()
	if q.slots == nil {
		q.slots = make([]qslot, DelayQueueLen)
	}
	added := 0
	for k, i := range list {
		frame := r.frame(i)
		if q.count == len(q.slots) || q.bytes+len(frame) > delayQueueBytes {
			src.drop(DropQueueFull, len(list)-k)
			break
		}
		s := &q.slots[(q.head+q.count)%len(q.slots)]
		if cap(s.buf) < len(frame) {
			s.buf = make([]byte, max(len(frame), smallSlot))
		}
		s.buf = s.buf[:len(frame)]
		copy(s.buf, frame)
		s.due, s.src = due, src
		q.count++
		q.bytes += len(frame)
		added++
	}
	q.pending.Add(int32(added))
	q.mu.Unlock()
	if added > 0 {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// run is the consumer goroutine: it sends due frames in batches from the
// destination's socket until the node stops.
func (q *delayQueue) run() {
	y := q.dst
	defer y.wg.Done()
	sc := newSyscaller()
	hs := make([]unix.Mmsghdr, BatchSize)
	iov := make([]unix.Iovec, BatchSize)
	srcs := make([]*Node, BatchSize)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	for {
		q.mu.Lock()
		if q.count == 0 {
			q.mu.Unlock()
			select {
			case <-q.wake:
				continue
			case <-y.done:
				return
			}
		}
		now := y.hub.now()
		head, k := q.head, 0
		for k < q.count && k < BatchSize && q.slots[(head+k)%len(q.slots)].due <= now {
			k++
		}
		wait := time.Duration(q.slots[head].due - now)
		q.mu.Unlock()

		if k == 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-y.done:
				q.discard()
				return
			}
			continue
		}
		q.send(sc, hs, iov, srcs, head, k)
		if y.stopped() {
			q.discard()
			return
		}
	}
}

// send delivers the k slots from head, then frees them.
func (q *delayQueue) send(sc *syscaller, hs []unix.Mmsghdr, iov []unix.Iovec, srcs []*Node, head, k int) {
	y := q.dst
	ep := y.runtime.Load()
	dstF := y.fault.Load()
	n := 0
	for j := range k {
		s := &q.slots[(head+j)%len(q.slots)]
		// Cut also stops frames already on their way.
		if srcF := s.src.fault.Load(); (srcF != nil && srcF.Cut) || (dstF != nil && dstF.Cut) {
			s.src.drop(DropCut, 1)
			continue
		}
		if ep == nil { // cannot happen: frames are queued only with an endpoint
			s.src.drop(DropNoEndpoint, 1)
			continue
		}
		setSendTo(&hs[n], &iov[n], s.buf, ep)
		srcs[n] = s.src
		n++
	}
	if n > 0 {
		sendBatch(sc, y, hs[:n], nil, srcs[:n], nil)
	}
	clear(srcs[:n])
	q.free(head, k)
}

// free releases k slots from head; only the consumer calls it.
func (q *delayQueue) free(head, k int) {
	q.mu.Lock()
	for j := range k {
		s := &q.slots[(head+j)%len(q.slots)]
		q.bytes -= len(s.buf)
		if cap(s.buf) > smallSlot {
			s.buf = nil
		}
		s.src = nil
	}
	q.head = (head + k) % len(q.slots)
	q.count -= k
	q.mu.Unlock()
	q.pending.Add(int32(-k))
}

// discard drops what is left when the node stops.
func (q *delayQueue) discard() {
	q.mu.Lock()
	head, k := q.head, q.count
	for j := range k {
		q.slots[(head+j)%len(q.slots)].src.drop(DropNoRoute, 1)
	}
	q.mu.Unlock()
	if k > 0 {
		q.free(head, k)
	}
}
