// Package network turns the ExeUnit's CreateNetwork request into a working
// VPN interface for the payload: it validates the request, has the
// payload's side brought up (a TAP in the sandbox's namespace, or an agent
// inside a VM), opens the ExeUnit's data endpoint and joins the two with a
// frame pump.
package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/endpoint"
	"github.com/gvpn/gvpn/runtime/frame"
	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/offload"
	"github.com/gvpn/gvpn/runtime/pump"
)

// Attacher brings up the payload's VPN interface and returns the link that
// carries its frames. It validates the hosts entries (netcfg.CheckHosts)
// before it makes anything, and reports a bad one as a *netcfg.FieldError. Each sandbox provides one: the netns sandbox creates a
// TAP in its namespace, the agent sandbox configures the agent's TAP and
// hands over the bridge.
type Attacher interface {
	// Attach creates and configures the interface. On error nothing it
	// made is left behind. The returned link belongs to the caller.
	Attach(ctx context.Context, cfg netcfg.LinkConfig, hosts map[string]string) (link.Link, error)
}

func badRequest(field, format string, args ...any) *api.Error {
	return &api.Error{Code: api.Response_BAD_REQUEST, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Options configures a Manager.
type Options struct {
	// VPN is the ExeUnit's endpoint from --vpn-endpoint; nil when the
	// ExeUnit passed none (the offer lacked the vpn capability).
	VPN *endpoint.URL
	// Endpoint tunes how the runtime's side is opened (pinned address).
	Endpoint endpoint.Options
	// Attacher brings up the payload's interface.
	Attacher Attacher
	// Name is the interface name inside the payload; empty means
	// netcfg.DefaultName.
	Name string
	// MTU of the VPN interface; zero means netcfg.DefaultMTU (1220).
	MTU int
	// ConnectTimeout bounds the wait for the ExeUnit to connect to a stream
	// endpoint after the reply. Zero means 30 s.
	ConnectTimeout time.Duration
	// Log receives what the manager does; nil discards it.
	Log *logrus.Entry
}

// Manager owns the activity's VPN: at most one network, created once.
type Manager struct {
	opts Options
	log  *logrus.Entry

	mu      sync.Mutex
	closed  bool
	vpn     *attachment
	ctx     context.Context
	cancel  context.CancelFunc
	waiters sync.WaitGroup
}

// attachment is one live VPN interface and its pump.
type attachment struct {
	nets     []netcfg.Network // sorted by address; nets[0] gives the MAC
	iface    link.Link        // the payload's interface side, from the Attacher
	ep       *endpoint.Endpoint
	mu       sync.Mutex
	pump     *pump.Pump
	counters link.Counters // the endpoint link's own drop counts, if it keeps any
	uplink   link.Link     // the endpoint's link once the ExeUnit is there
}

// New returns a Manager.
func New(opts Options) *Manager {
	if opts.Name == "" {
		opts.Name = netcfg.DefaultName
	}
	if opts.MTU == 0 {
		opts.MTU = netcfg.DefaultMTU
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = 30 * time.Second
	}
	log := opts.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{opts: opts, log: log, ctx: ctx, cancel: cancel}
}

// Create handles one CreateNetwork request and returns the endpoint for the
// reply. The endpoint is bound (or listening) before Create returns, so the
// ExeUnit can use it as soon as it reads the reply. Errors are *api.Error.
func (m *Manager) Create(ctx context.Context, req *api.Request_CreateNetwork) (api.Endpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return api.Endpoint{}, &api.Error{Code: api.Response_INTERNAL, Message: "runtime is shutting down"}
	}
	if req.GetInterface() == api.NetworkInterface_INET {
		return api.Endpoint{}, badRequest("interface",
			"outbound internet (INET) is not supported by gvpn: it provides Golem VPN only; remove net.inet from the manifest")
	}
	if m.opts.VPN == nil {
		return api.Endpoint{}, badRequest("",
			"no VPN endpoint: the runtime was started without --vpn-endpoint (the ExeUnit passes it when the offer lists the vpn capability)")
	}
	if m.vpn != nil {
		return api.Endpoint{}, badRequest("", "the VPN is already created for this activity (%s)", strings.Join(networkStrings(m.vpn.nets), ", "))
	}
	cfg, err := m.parseNetworks(req)
	if err != nil {
		return api.Endpoint{}, err
	}
	parsed := cfg.Networks()
	log := m.log.WithFields(logrus.Fields{"if": cfg.Name, "networks": networkStrings(parsed),
		"mtu": cfg.MTU, "endpoint": m.opts.VPN.String()})

	ep, err := endpoint.Open(*m.opts.VPN, m.opts.Endpoint)
	if err != nil {
		return api.Endpoint{}, &api.Error{Code: api.Response_INTERNAL, Message: "open the data endpoint", Err: err}
	}
	iface, err := m.opts.Attacher.Attach(ctx, cfg, req.GetHosts())
	if err != nil {
		ep.Close()
		e := &api.Error{Code: api.Response_INTERNAL, Message: "bring up the VPN interface", Err: err}
		var fe *netcfg.FieldError
		if errors.As(err, &fe) {
			e.Code, e.Field = api.Response_BAD_REQUEST, fe.Field
		}
		return api.Endpoint{}, e
	}
	reply := ep.Reply()
	if !reply.IsValid() {
		iface.Close()
		ep.Close()
		return api.Endpoint{}, &api.Error{Code: api.Response_INTERNAL, Message: "data endpoint", Err: fmt.Errorf("no reply form for endpoint %s", m.opts.VPN)}
	}
	a := &attachment{nets: parsed, iface: iface, ep: ep}
	m.vpn = a
	m.waiters.Add(1)
	go m.connect(a, cfg, log)
	log.WithField("reply", reply.String()).Info("VPN interface up; data endpoint ready")
	return reply, nil
}

// connect waits for the ExeUnit on the endpoint (at once for UDP) and
// starts the pump.
func (m *Manager) connect(a *attachment, cfg netcfg.LinkConfig, log *logrus.Entry) {
	defer m.waiters.Done()
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.ConnectTimeout)
	defer cancel()
	uplink, err := a.ep.Link(ctx)
	if err != nil {
		if m.ctx.Err() == nil {
			log.WithError(err).Error("the ExeUnit never connected to the data endpoint; VPN frames cannot flow")
		}
		return
	}
	if o, ok := uplink.(offloader); ok {
		o.OnOffloadFailure(func(err error) {
			log.WithError(err).Warn("the kernel refused UDP segmentation toward the ExeUnit; sending one datagram per frame from now on")
		})
		log.WithField("offloads", o.Offloads()).Debug("data endpoint link ready")
	}
	maxFrame := cfg.MTU + frame.EthernetLen
	p := pump.Start(pump.Config{
		Iface:   a.iface,
		Uplink:  uplink,
		Egress:  &pump.EgressFilter{MAC: frame.MAC(netcfg.MAC(cfg.Net.IfAddr)), IP: cfg.Net.IfAddr, More: ownAddrs(cfg.More), MaxFrame: maxFrame},
		Ingress: &pump.IngressFilter{MaxFrame: maxFrame},
		Log:     log,
	})
	a.mu.Lock()
	a.pump = p
	a.counters, _ = uplink.(link.Counters)
	a.uplink = uplink
	a.mu.Unlock()
	log.Debug("frame pump started")
	select {
	case <-p.Done():
		if err := p.Err(); err != nil {
			log.WithError(err).Error("VPN frame pump stopped")
		}
	case <-m.ctx.Done():
	}
}

// offloader is implemented by endpoint links that use kernel offloads (the
// UDP endpoint: GSO and GRO), so that the log says what they use and when
// the kernel stops them.
type offloader interface {
	Offloads() string
	OnOffloadFailure(func(error))
}

// parseNetworks validates the request with netcfg's one validator and
// returns the interface's configuration. The ExeUnit sends one network per
// network of the requestor's Deploy, in no particular order; they are
// sorted by address so that the interface's MAC (from the first) does not
// depend on that order. A gateway that gives no route is logged, not
// refused: v0.17.6 ExeUnits send the network's first host, which may be
// this node's own address.
func (m *Manager) parseNetworks(req *api.Request_CreateNetwork) (netcfg.LinkConfig, error) {
	fail := func(msg string, err error) (netcfg.LinkConfig, error) {
		e := &api.Error{Code: api.Response_BAD_REQUEST, Message: msg, Err: err}
		var fe *netcfg.FieldError
		if errors.As(err, &fe) {
			e.Field = fe.Field
		}
		return netcfg.LinkConfig{}, e
	}
	nets := req.GetNetworks()
	if len(nets) == 0 {
		return netcfg.LinkConfig{}, badRequest("networks", "the request has no network")
	}
	// The hosts entries are checked by the attacher, which writes them (by
	// the same netcfg rule): inside a VM it is the agent, and its refusal
	// is what the ExeUnit should see.
	var cfg netcfg.LinkConfig
	all := make([]netcfg.Network, 0, len(nets))
	for i, n := range nets {
		lc, _, err := netcfg.Request{
			Name: m.opts.Name, Addr: n.GetAddr(), Mask: n.GetMask(), Gateway: n.GetGateway(), IfAddr: n.GetIfAddr(),
			MTU: m.opts.MTU,
		}.Parse()
		if err != nil {
			return fail(fmt.Sprintf("invalid network %d of %d", i+1, len(nets)), err)
		}
		if lc.Net.GatewayIgnored != "" {
			m.log.WithFields(logrus.Fields{"network": lc.Net.Prefix, "if_addr": lc.Net.IfAddr, "gateway": n.GetGateway()}).
				Infof("gateway %s: no gateway route for this network (the connected route covers it)", lc.Net.GatewayIgnored)
		}
		cfg = lc
		all = append(all, lc.Net)
	}
	slices.SortFunc(all, func(a, b netcfg.Network) int { return a.IfAddr.Compare(b.IfAddr) })
	if err := netcfg.CheckNetworks(all); err != nil {
		return fail("conflicting networks", err)
	}
	cfg.Net, cfg.More = all[0], all[1:]
	return cfg, nil
}

func networkStrings(nets []netcfg.Network) []string {
	out := make([]string, len(nets))
	for i, n := range nets {
		out[i] = n.String()
	}
	return out
}

func ownAddrs(nets []netcfg.Network) []netip.Addr {
	var out []netip.Addr
	for _, n := range nets {
		out = append(out, n.IfAddr)
	}
	return out
}

// Stats returns the counters of the VPN, if any.
func (m *Manager) Stats() api.VPNStats {
	m.mu.Lock()
	a := m.vpn
	m.mu.Unlock()
	if a == nil {
		return api.VPNStats{}
	}
	a.mu.Lock()
	p, own, up := a.pump, a.counters, a.uplink
	a.mu.Unlock()
	first := a.nets[0]
	s := api.VPNStats{Address: first.IfAddr.String(), Network: first.Prefix.String()}
	for _, n := range a.nets {
		s.Networks = append(s.Networks, netip.PrefixFrom(n.IfAddr, n.Prefix.Bits()).String())
	}
	if p == nil {
		return s
	}
	ps := p.Stats()
	s.Up = p.Err() == nil
	s.Egress = api.VPNDirStats{Frames: ps.Egress.Frames, Bytes: ps.Egress.Bytes, Drops: ps.Egress.DropMap()}
	s.Ingress = api.VPNDirStats{Frames: ps.Ingress.Frames, Bytes: ps.Ingress.Bytes, Drops: ps.Ingress.DropMap()}
	if own != nil {
		for reason, n := range own.Counters() {
			s.Ingress.Drops[reason] = n
		}
	}
	var errs []error
	for _, l := range []link.Link{a.iface, up} {
		kd, ok := kernelDropper(l)
		if !ok {
			continue
		}
		eg, in, err := kd.KernelDrops()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.Egress.KernelDrops = mergeCounts(s.Egress.KernelDrops, eg)
		s.Ingress.KernelDrops = mergeCounts(s.Ingress.KernelDrops, in)
	}
	if err := errors.Join(errs...); err != nil {
		s.KernelError = err.Error()
	}
	if ol, ok := a.iface.(*offload.Link); ok {
		st := ol.Stats()
		s.Superframes = &api.VPNSuperframes{Split: st.SplitSuperframes, Coalesced: st.CoalescedSuperframes,
			Malformed: st.Malformed, SmallGSO: st.SmallGSO}
	}
	return s
}

// kernelDropper finds the link.KernelDropper in l or in the links it wraps
// (the offload link around a TAP says which link it wraps with Inner).
func kernelDropper(l link.Link) (link.KernelDropper, bool) {
	for l != nil {
		if kd, ok := l.(link.KernelDropper); ok {
			return kd, true
		}
		w, ok := l.(interface{ Inner() link.Link })
		if !ok {
			return nil, false
		}
		l = w.Inner()
	}
	return nil, false
}

func mergeCounts(into, from map[string]uint64) map[string]uint64 {
	for k, v := range from {
		if into == nil {
			into = make(map[string]uint64)
		}
		into[k] += v
	}
	return into
}

// Close tears the VPN down: stops the pump, closes the interface (a
// non-persistent TAP disappears with it) and the endpoint. Idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	a := m.vpn
	m.mu.Unlock()
	m.cancel()
	m.waiters.Wait()
	if a == nil {
		return nil
	}
	a.mu.Lock()
	p := a.pump
	a.mu.Unlock()
	if p != nil {
		p.Close()
	}
	a.iface.Close()
	a.ep.Close()
	return nil
}
