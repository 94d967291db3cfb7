//go:build linux

package golemnet

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

const (
	// BatchSize is the most datagrams a node's reader takes from its socket
	// in one recvmmsg, and the most the hub hands to one sendmmsg.
	BatchSize = 64

	// SocketBuffer is what the ExeUnit asks for as SO_RCVBUF and SO_SNDBUF
	// on its data socket (golem-protocol.md §3.2); the kernel caps it at
	// net.core.rmem_max / wmem_max, as it does for the ExeUnit.
	SocketBuffer = 2 << 20

	// DelayQueueLen is the most frames waiting in one node's delay queue
	// (Fault.Latency); more are dropped as DropQueueFull.
	DelayQueueLen = 4096

	// delayQueueBytes bounds the bytes waiting in one delay queue, so that
	// large frames cannot make a queue hold DelayQueueLen × 64 KiB.
	delayQueueBytes = 16 << 20

	// MaxLearnedPerNode bounds how many addresses the hub learns for one
	// node from its traffic; a runtime that forges source addresses cannot
	// grow the routing table without limit.
	MaxLearnedPerNode = 256

	// recvBufSize holds any UDP/IPv4 datagram.
	recvBufSize = 1 << 16
)

// Sentinel errors; returned errors wrap them.
var (
	// ErrClosed: the hub was closed.
	ErrClosed = errors.New("golemnet: hub closed")
	// ErrStarted: Start was called twice.
	ErrStarted = errors.New("golemnet: hub already started")
	// ErrDuplicate: a node name or VPN address is already taken.
	ErrDuplicate = errors.New("golemnet: duplicate node")
	// ErrBadAddr: an address the hub cannot use (not IPv4 unicast, port 0).
	ErrBadAddr = errors.New("golemnet: bad address")
)

// Fault describes network trouble on the path between a node's ExeUnit and
// the Golem Net. A node's fault applies to frames it sends and frames sent to
// it: Cut on either end drops the frame; the Loss probabilities of both ends
// combine (a frame survives both); the Latencies add up.
type Fault struct {
	// Latency delays delivery. Frames for one node leave the delay queue in
	// the order they entered it, so order per destination is kept.
	Latency time.Duration
	// Loss is the probability, 0..1, that a frame is dropped.
	Loss float64
	// Cut drops every frame (the node is unreachable). It also drops frames
	// already waiting in a delay queue when their time comes.
	Cut bool
}

func (f Fault) normalized() Fault {
	if f.Latency < 0 {
		f.Latency = 0
	}
	if !(f.Loss > 0) { // also NaN
		f.Loss = 0
	}
	f.Loss = math.Min(f.Loss, 1)
	return f
}

// NodeStats is a snapshot of one node's counters.
type NodeStats struct {
	Name string
	// IPs are the VPN addresses the node owns: the one it was added with
	// and those learnt from its traffic, sorted.
	IPs []netip.Addr
	// Endpoint is the node's ExeUnit socket; Runtime is its runtime's data
	// endpoint (zero until SetRuntimeEndpoint).
	Endpoint, Runtime netip.AddrPort
	// RxFrames/RxBytes count datagrams the hub received from the node's
	// runtime, dropped ones included.
	RxFrames, RxBytes uint64
	// TxFrames/TxBytes count datagrams the hub sent to the node's runtime.
	TxFrames, TxBytes uint64
	// Drops counts frame copies that the node's runtime sent and that were
	// not delivered, by reason — whatever the reason, a drop is charged to
	// the sender (a broadcast frame dropped at three destinations counts
	// three). DropEmpty is counted on top of DropShort.
	Drops [NumDropReasons]uint64
}

// DropMap returns the non-zero drop counters by reason name.
func (s NodeStats) DropMap() map[string]uint64 {
	m := make(map[string]uint64)
	for r, v := range s.Drops {
		if v != 0 {
			m[DropReason(r).String()] = v
		}
	}
	return m
}

// Hub plays the Golem Net and the ExeUnits' data sockets for a set of
// provider nodes on one machine. Each node gets a UDP socket on loopback,
// the one an ExeUnit would pass to its runtime as --vpn-endpoint; frames the
// runtime sends there are routed exactly as the ExeUnit routes them
// (golem-protocol.md §3.5) and sent, unchanged, from the destination node's
// socket to the destination runtime's endpoint.
//
// Frame order is kept per (source, destination) pair. On the no-fault path a
// node's reader goroutine reads a batch with recvmmsg, routes it, and sends
// each destination's share with one sendmmsg (runs of same-size frames as
// UDP GSO messages), with no allocation and no hand-off to another
// goroutine; frames under Latency go through the destination's delay queue
// goroutine.
//
// All methods are safe for concurrent use.
type Hub struct {
	log   *logrus.Entry
	epoch time.Time

	// table is the routing snapshot readers use; replaced under mu.
	table atomic.Pointer[table]

	mu      sync.Mutex
	byName  map[string]*Node
	all     []*Node // every node ever added, by index
	started bool
	closed  bool

	emptyWarned atomic.Bool
	noGSO       bool // tests: one datagram per message, sent and received
}

// NewHub returns an empty hub. Nodes are added with AddNode; no goroutine
// runs until Start.
func NewHub(log *logrus.Entry) *Hub {
	if log == nil {
		l := logrus.New()
		l.Out = discard{}
		log = logrus.NewEntry(l)
	}
	h := &Hub{log: log, epoch: time.Now(), byName: make(map[string]*Node)}
	h.table.Store(&table{owners: routes{}})
	return h
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// now is the hub's monotonic clock, in nanoseconds.
func (h *Hub) now() int64 { return int64(time.Since(h.epoch)) }

// table is an immutable routing snapshot: IPv4 address → node index, and
// node index → node (nil once the node left). The hub replaces it as a whole
// (copy on write), so readers use it without locks.
type table struct {
	owners routes
	nodes  []*Node
}

// owner returns the index of the node that owns ip.
func (t *table) owner(ip uint32) (int32, bool) { return t.owners.owner(ip) }

// Node is one provider node: its ExeUnit data socket, its runtime's
// endpoint, its fault settings and counters.
type Node struct {
	hub   *Hub
	name  string
	ip    netip.Addr
	index int32

	conn *net.UDPConn
	raw  syscall.RawConn
	addr netip.AddrPort
	gso  bool // the kernel takes UDP_SEGMENT on conn

	runtime atomic.Pointer[endpoint]
	fault   atomic.Pointer[Fault] // nil: no fault
	removed atomic.Bool
	queue   *delayQueue

	learned    int // under hub.mu
	learnFull  atomic.Bool
	sendWarned atomic.Bool

	rxFrames, rxBytes atomic.Uint64
	txFrames, txBytes atomic.Uint64
	txGSO             atomic.Uint64 // GSO messages built for this node
	rxGRO             atomic.Uint64 // messages from this node's runtime that GRO glued
	drops             [NumDropReasons]atomic.Uint64

	done     chan struct{} // closed when the node stops
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// AddNode creates the node's ExeUnit socket: UDP on 127.0.0.1:0 with
// SocketBuffer-sized buffers, as the ExeUnit makes it (AddNodeOn with a
// loopback address). ip is the node's VPN
// address, registered as its own (as if the Deploy `nodes` map had it); it
// must be IPv4 unicast and not owned yet, or the zero Addr for a node whose
// address is only learnt from its traffic. Nodes added after Start start at
// once.
func (h *Hub) AddNode(name string, ip netip.Addr) (*Node, error) {
	return h.AddNodeOn(name, ip, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0))
}

// AddNodeOn is AddNode with the node's socket bound to bind (IPv4; port 0
// picks a free one). A hub whose nodes' runtimes are on other hosts (the
// Docker lab: a node's ExeUnit relays to the hub over a Docker network)
// binds their sockets where those hosts can reach them.
func (h *Hub) AddNodeOn(name string, ip netip.Addr, bind netip.AddrPort) (*Node, error) {
	if !bind.Addr().Is4() {
		return nil, fmt.Errorf("node %q: socket address %v is not IPv4: %w", name, bind, ErrBadAddr)
	}
	var key uint32
	if ip.IsValid() {
		var ok bool
		key, ok = ip4(ip)
		if !ok || !learnable(key) || key>>24 == 0 {
			return nil, fmt.Errorf("node %q: VPN address %v is not IPv4 unicast: %w", name, ip, ErrBadAddr)
		}
		ip = ip.Unmap()
	}
	if name == "" {
		return nil, fmt.Errorf("node name is empty: %w", ErrBadAddr)
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if _, ok := h.byName[name]; ok {
		return nil, fmt.Errorf("node %q: name taken: %w", name, ErrDuplicate)
	}
	t := h.table.Load()
	if ip.IsValid() {
		if owner, ok := t.owner(key); ok {
			return nil, fmt.Errorf("node %q: %v belongs to node %q: %w", name, ip, t.nodes[owner].name, ErrDuplicate)
		}
	}

	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(bind))
	if err != nil {
		return nil, fmt.Errorf("node %q: ExeUnit socket: %w", name, err)
	}
	n := &Node{
		hub:   h,
		name:  name,
		ip:    ip,
		index: int32(len(h.all)),
		conn:  conn,
		addr:  conn.LocalAddr().(*net.UDPAddr).AddrPort(),
		done:  make(chan struct{}),
	}
	if err := errors.Join(conn.SetReadBuffer(SocketBuffer), conn.SetWriteBuffer(SocketBuffer)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("node %q: socket buffers: %w", name, err)
	}
	if n.raw, err = conn.SyscallConn(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("node %q: %w", name, err)
	}
	n.gso = probeGSO(n.raw) && !h.noGSO
	if !h.noGSO {
		enableGRO(n.raw)
	}
	n.queue = newDelayQueue(n)

	nt := t.clone()
	nt.nodes = append(nt.nodes, n)
	if ip.IsValid() {
		nt.owners[key] = n.index
	}
	h.all = append(h.all, n)
	h.byName[name] = n
	h.table.Store(nt)
	if h.started {
		n.start()
	}
	h.log.WithFields(logrus.Fields{"node": name, "ip": ip, "endpoint": n.EndpointURL()}).Debug("golemnet: node added")
	return n, nil
}

// Node returns the live node called name, or nil.
func (h *Hub) Node(name string) *Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byName[name]
}

// Start starts one reader and one delay-queue goroutine per node.
func (h *Hub) Start() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	if h.started {
		return ErrStarted
	}
	h.started = true
	for _, n := range h.byName {
		n.start()
	}
	return nil
}

// RemoveNode makes the node leave, as when it is killed: its addresses are
// unregistered (frames to them are dropped as DropNoRoute), its socket is
// closed, and its goroutines are gone when RemoveNode returns. Unknown names
// are ignored.
func (h *Hub) RemoveNode(name string) {
	h.mu.Lock()
	n := h.byName[name]
	if n == nil {
		h.mu.Unlock()
		return
	}
	delete(h.byName, name)
	n.removed.Store(true)
	nt := h.table.Load().clone()
	nt.nodes[n.index] = nil
	maps.DeleteFunc(nt.owners, func(_ uint32, i int32) bool { return i == n.index })
	h.table.Store(nt)
	h.mu.Unlock()

	n.stop()
	n.wg.Wait()
	h.log.WithField("node", name).Info("golemnet: node removed")
}

// Close stops every node, closes their sockets and waits for all goroutines.
// It is idempotent; later calls return nil.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	all := slices.Clone(h.all)
	h.mu.Unlock()

	var errs []error
	for _, n := range all {
		if err := n.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range all {
		n.wg.Wait()
	}
	return errors.Join(errs...)
}

// Stats returns a snapshot of the live nodes' counters, in the order they
// were added.
func (h *Hub) Stats() []NodeStats {
	t := h.table.Load()
	ips := make(map[int32][]netip.Addr)
	for ip, i := range t.owners {
		ips[i] = append(ips[i], addrOf(ip))
	}
	var out []NodeStats
	for _, n := range t.nodes {
		if n == nil {
			continue
		}
		s := NodeStats{
			Name:     n.name,
			IPs:      ips[n.index],
			Endpoint: n.addr,
			RxFrames: n.rxFrames.Load(),
			RxBytes:  n.rxBytes.Load(),
			TxFrames: n.txFrames.Load(),
			TxBytes:  n.txBytes.Load(),
		}
		slices.SortFunc(s.IPs, netip.Addr.Compare)
		if e := n.runtime.Load(); e != nil {
			s.Runtime = e.ap
		}
		for r := range s.Drops {
			s.Drops[r] = n.drops[r].Load()
		}
		out = append(out, s)
	}
	return out
}

// learn registers ip as an address of n unless some node owns it already
// (first owner wins; addresses given to AddNode never move).
func (h *Hub) learn(ip uint32, n *Node) {
	if n.learnFull.Load() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.table.Load()
	if _, ok := t.owner(ip); ok || n.removed.Load() {
		return
	}
	if n.learned >= MaxLearnedPerNode {
		n.learnFull.Store(true)
		h.log.WithField("node", n.name).Warnf("golemnet: node already has %d learnt addresses; not learning more (forged sources?)", MaxLearnedPerNode)
		return
	}
	nt := t.clone()
	nt.owners[ip] = n.index
	h.table.Store(nt)
	n.learned++
	h.log.WithFields(logrus.Fields{"node": n.name, "ip": addrOf(ip)}).Info("golemnet: learnt address from traffic")
}

func (t *table) clone() *table {
	return &table{owners: maps.Clone(t.owners), nodes: slices.Clone(t.nodes)}
}

// Name returns the node's name.
func (n *Node) Name() string { return n.name }

// IP returns the VPN address the node was added with (zero if none).
func (n *Node) IP() netip.Addr { return n.ip }

// Addr returns the address of the node's ExeUnit socket.
func (n *Node) Addr() netip.AddrPort { return n.addr }

// EndpointURL returns the ExeUnit socket as the runtime gets it:
// "udp://127.0.0.1:PORT", the value of --vpn-endpoint.
func (n *Node) EndpointURL() string { return "udp://" + n.addr.String() }

// SetRuntimeEndpoint sets where frames for this node go: the udp_datagram
// address from the runtime's CreateNetwork reply. Until it is set, frames for
// the node are dropped as DropNoEndpoint. It may be changed at any time; it
// must be an IPv4 address with a port (the socket is IPv4).
func (n *Node) SetRuntimeEndpoint(addr netip.AddrPort) error {
	e, ok := newEndpoint(addr)
	if !ok {
		return fmt.Errorf("node %q: runtime endpoint %v: %w", n.name, addr, ErrBadAddr)
	}
	n.runtime.Store(e)
	return nil
}

// Inject sends b to the node's runtime as one datagram from the node's
// ExeUnit socket, bypassing routing and faults: what a broken or hostile
// peer could make the ExeUnit deliver. Tests use it to feed garbage to a
// runtime. An empty b is sent too (the real ExeUnit never would).
func (n *Node) Inject(b []byte) error {
	e := n.runtime.Load()
	if e == nil {
		return fmt.Errorf("node %q: no runtime endpoint yet", n.name)
	}
	_, err := n.conn.WriteToUDPAddrPort(b, e.ap)
	return err
}

// RuntimeEndpoint returns the runtime's endpoint, if set.
func (n *Node) RuntimeEndpoint() (netip.AddrPort, bool) {
	if e := n.runtime.Load(); e != nil {
		return e.ap, true
	}
	return netip.AddrPort{}, false
}

// SetFault replaces the node's fault; the zero Fault clears it. Loss is
// clamped to 0..1 and negative latency taken as 0. It takes effect for the
// next batch of frames; frames already delayed keep their delivery time.
func (n *Node) SetFault(f Fault) {
	f = f.normalized()
	if f == (Fault{}) {
		n.fault.Store(nil)
		return
	}
	n.fault.Store(&f)
}

// Fault returns the node's current fault.
func (n *Node) Fault() Fault {
	if f := n.fault.Load(); f != nil {
		return *f
	}
	return Fault{}
}

func (n *Node) drop(r DropReason, count int) {
	n.drops[r].Add(uint64(count))
}

func (n *Node) start() {
	n.wg.Add(2)
	go n.readLoop()
	go n.queue.run()
}

func (n *Node) stop() error {
	var err error
	n.stopOnce.Do(func() {
		close(n.done)
		err = n.conn.Close()
	})
	return err
}

func (n *Node) stopped() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}
