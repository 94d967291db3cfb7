package api

// VPNStateName names the RuntimeStatus state event in which gvpn-runtime
// reports its VPN counters; the event's value is the JSON of VPNStats.
const VPNStateName = "gvpn.vpn"

// VPNStats is a snapshot of the VPN's counters as they go over the wire (the
// JSON value of the VPNStateName state event) and into the logs. It is the
// one type for these counters: the runtime fills it, the lab, the bench and
// the tests read it.
type VPNStats struct {
	Up      bool   `json:"up"`
	Address string `json:"address,omitempty"`
	Network string `json:"network,omitempty"`
	// Egress is what the payload sent, Ingress what it received.
	Egress  VPNDirStats `json:"egress"`
	Ingress VPNDirStats `json:"ingress"`
}

// VPNDirStats counts one direction: frames and bytes delivered, and frames
// dropped by reason (the pump's drop reasons, plus "foreign_source" for
// datagrams from an address other than the ExeUnit's).
type VPNDirStats struct {
	Frames uint64            `json:"frames"`
	Bytes  uint64            `json:"bytes"`
	Drops  map[string]uint64 `json:"drops,omitempty"`
}
