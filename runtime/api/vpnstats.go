package api

// VPNStateName names the RuntimeStatus state event in which gvpn-runtime
// reports its VPN counters; the event's value is the JSON of VPNStats.
const VPNStateName = "gvpn.vpn"

// VPNStats is a snapshot of the VPN's counters as they go over the wire (the
// JSON value of the VPNStateName state event) and into the logs. It is the
// one type for these counters: the runtime fills it, the lab, the bench and
// the tests read it.
type VPNStats struct {
	Up bool `json:"up"`
	// Address and Network are the first network's (the one that gives
	// the interface its MAC); Networks lists every network of the
	// CreateNetwork as if_addr/prefix-length.
	Address  string   `json:"address,omitempty"`
	Network  string   `json:"network,omitempty"`
	Networks []string `json:"networks,omitempty"`
	// Egress is what the payload sent, Ingress what it received.
	Egress  VPNDirStats `json:"egress"`
	Ingress VPNDirStats `json:"ingress"`
	// KernelError says why the kernel's counters could not be read, if
	// they could not.
	KernelError string `json:"kernel_error,omitempty"`
	// Superframes counts what the runtime's offload link did between the
	// payload's side (its TAP, or the bridge to an agent) and the pump;
	// nil where there is none.
	Superframes *VPNSuperframes `json:"superframes,omitempty"`
}

// VPNSuperframes counts superframes (docs/bridge.md §2.4): those read from
// the payload's side and cut into frames, those written to it glued from
// frames, and those whose header could not be honoured (passed on bare for
// the filters to judge), of which SmallGSO asked for segments below the
// smallest size gvpn cuts (a forged header).
type VPNSuperframes struct {
	Split     uint64 `json:"split"`
	Coalesced uint64 `json:"coalesced"`
	Malformed uint64 `json:"malformed"`
	SmallGSO  uint64 `json:"small_gso"`
}

// VPNDirStats counts one direction: frames and bytes delivered, and frames
// dropped by reason (the pump's drop reasons, plus "foreign_source" for
// datagrams from an address other than the ExeUnit's).
type VPNDirStats struct {
	Frames uint64            `json:"frames"`
	Bytes  uint64            `json:"bytes"`
	Drops  map[string]uint64 `json:"drops,omitempty"`
	// KernelDrops are the kernel's drops by reason on the links gvpn
	// joins (the TAP's queue toward gvpn, the endpoint socket's receive
	// buffer): frames lost before gvpn saw them or after it handed them
	// on, which the payload sees as retransmits.
	KernelDrops map[string]uint64 `json:"kernel_drops,omitempty"`
}
