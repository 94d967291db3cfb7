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
	// Links are the links' counts that are not losses, by name:
	// reconnections of a bridge ("bridge_reconnects"), superframes cut
	// and glued ("superframes_split"), and an agent's own
	// ("agent_egress_frames", …).
	Links map[string]uint64 `json:"links,omitempty"`
	// KernelError says why the kernel's counters could not be read, if
	// they could not.
	KernelError string `json:"kernel_error,omitempty"`
}

// VPNDirStats counts one direction: frames and bytes delivered, and frames
// dropped by reason (the pump's drop reasons, plus the links' own:
// "foreign_source" for datagrams from an address other than the ExeUnit's,
// "bridge_dropped" for frames written while the bridge to an agent was
// down, and an agent's drops behind "agent_").
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
