package labcli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gvpn/gvpn/runtime/api"
)

// NodeJSON is one node in `status --json` and in the demo's summary.
type NodeJSON struct {
	Name  string `json:"name"`
	IP    string `json:"ip"`
	Netns string `json:"netns"`
	VM    bool   `json:"vm,omitempty"`
	// ReadySeconds is the time from start to the CreateNetwork reply (a
	// VM's boot included).
	ReadySeconds    float64 `json:"ready_seconds"`
	RuntimePid      int     `json:"runtime_pid"`
	Alive           bool    `json:"alive"`
	ExeUnitEndpoint string  `json:"exeunit_endpoint"`
	RuntimeEndpoint string  `json:"runtime_endpoint"`
	// MTU and MAC of vpn0 as the payload sees them (demo only).
	MTU   int       `json:"mtu,omitempty"`
	MAC   string    `json:"mac,omitempty"`
	Fault FaultJSON `json:"fault"`
	// Hub counts what the Golem Net stand-in saw of the node.
	Hub HubJSON `json:"hub"`
	// Runtime is the runtime's last VPN report; null until it sent one.
	Runtime *api.VPNStats `json:"runtime"`
	// Payload is what the node's payload used (its cgroup and disk), with
	// what the agreement (the lab's runtime arguments) granted; null
	// without a cgroup.
	Payload *PayloadJSON `json:"payload,omitempty"`
	// Docker is the node's container in a Docker lab (up --docker).
	Docker *NodeDockerJSON `json:"docker,omitempty"`
}

// NodeDockerJSON is a Docker lab node's container.
type NodeDockerJSON struct {
	Container string `json:"container"`
	// Address is the container's address on the lab's Docker network;
	// empty while it is partitioned or not running.
	Address string `json:"address"`
	// State is Docker's (running, paused, exited, …) or "partitioned".
	State string `json:"state"`
	// Payload is the payload container of an agent node.
	Payload string `json:"payload,omitempty"`
	// Lost says when the lab saw the container die, if it did and has not
	// come back since.
	Lost string `json:"lost,omitempty"`
}

// LabDockerJSON is the Docker side of a Docker lab.
type LabDockerJSON struct {
	LabID   string `json:"lab_id"`
	Network string `json:"network"`
	Subnet  string `json:"subnet"`
	Image   string `json:"image"`
	Hub     string `json:"hub"`
	HubAddr string `json:"hub_address"`
}

// FaultJSON is a node's fault in the hub.
type FaultJSON struct {
	Cut       bool    `json:"cut"`
	LatencyMs float64 `json:"latency_ms"`
	Loss      float64 `json:"loss"`
}

func (f FaultJSON) String() string {
	var parts []string
	if f.Cut {
		parts = append(parts, "cut")
	}
	if f.LatencyMs > 0 {
		parts = append(parts, "latency "+(time.Duration(f.LatencyMs*float64(time.Millisecond))).String())
	}
	if f.Loss > 0 {
		parts = append(parts, fmt.Sprintf("loss %g%%", f.Loss*100))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// HubJSON is the hub's counters for a node: Rx is what its runtime sent,
// Tx what the hub delivered to it, Drops what it sent that was not
// delivered, by reason.
type HubJSON struct {
	RxFrames uint64            `json:"rx_frames"`
	RxBytes  uint64            `json:"rx_bytes"`
	TxFrames uint64            `json:"tx_frames"`
	TxBytes  uint64            `json:"tx_bytes"`
	Drops    map[string]uint64 `json:"drops"`
}

// StatusJSON is `gvpn-lab status --json`.
type StatusJSON struct {
	// Running is true: without a running lab, status --json prints only
	// {"running": false, "error": "why"}.
	Running       bool       `json:"running"`
	Pid           int        `json:"pid"`
	Network       string     `json:"network"`
	SandboxPrefix string     `json:"sandbox_prefix"`
	Started       time.Time  `json:"started"`
	Logs          string     `json:"logs"`
	Nodes         []NodeJSON `json:"nodes"`
	// Docker is set for a Docker lab.
	Docker *LabDockerJSON `json:"docker,omitempty"`
}

// PayloadJSON is a node's payload usage against its grant (0 granted: no
// limit).
type PayloadJSON struct {
	CPUSeconds   float64 `json:"cpu_seconds"`
	CPUCores     float64 `json:"cpu_cores_granted"`
	PeakMemBytes uint64  `json:"mem_peak_bytes"`
	MemBytes     int64   `json:"mem_bytes_granted"`
	OOMKills     uint64  `json:"oom_kills"`
	Pids         uint64  `json:"pids"`
	DiskBytes    uint64  `json:"disk_bytes"`
	StorageBytes int64   `json:"disk_bytes_granted"`
}

// writePayloads prints each node's payload usage against its grant.
func writePayloads(w io.Writer, nodes []NodeJSON) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PAYLOAD\tCPU SECONDS (cores)\tPEAK MEMORY (granted)\tOOM KILLS\tPROCESSES\tDISK (granted)")
	for _, n := range nodes {
		p := n.Payload
		if p == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\n", n.Name)
			continue
		}
		fmt.Fprintf(tw, "%s\t%.1f (%s)\t%s (%s)\t%d\t%d\t%s (%s)\n", n.Name,
			p.CPUSeconds, granted(p.CPUCores > 0, fmt.Sprintf("%g", p.CPUCores)),
			mib(p.PeakMemBytes), granted(p.MemBytes > 0, mib(uint64(p.MemBytes))), p.OOMKills, p.Pids,
			mib(p.DiskBytes), granted(p.StorageBytes > 0, mib(uint64(p.StorageBytes))))
	}
	tw.Flush()
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func granted(ok bool, s string) string {
	if !ok {
		return "no limit"
	}
	return s
}

func writeStatus(w io.Writer, st StatusJSON) {
	fmt.Fprintf(w, "lab of gvpn-lab up (pid %d): %d node%s on %s, up %s\nruntime logs: %s\n\n",
		st.Pid, len(st.Nodes), pluralS(len(st.Nodes)), st.Network, time.Since(st.Started).Round(time.Second), st.Logs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tIP\tNETNS\tRUNTIME\tEXEUNIT SOCKET\tRUNTIME ENDPOINT\tFAULT")
	for _, n := range st.Nodes {
		rt := fmt.Sprintf("pid %d", n.RuntimePid)
		if !n.Alive {
			rt = "exited"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.IP, orDash(n.Netns), rt, n.ExeUnitEndpoint, n.RuntimeEndpoint, n.Fault)
	}
	tw.Flush()
	fmt.Fprintln(w)
	if d := st.Docker; d != nil {
		fmt.Fprintf(w, "Docker lab %s: network %s (%s), image %s, hub %s at %s\n", d.LabID, d.Network, d.Subnet, d.Image, d.Hub, d.HubAddr)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tCONTAINER\tDOCKER ADDRESS\tSTATE\tPAYLOAD CONTAINER")
		for _, n := range st.Nodes {
			if c := n.Docker; c != nil {
				state := c.State
				if c.Lost != "" {
					state += " (lost at " + c.Lost + ")"
				}
				addr, payload := c.Address, c.Payload
				if addr == "" {
					addr = "-"
				}
				if payload == "" {
					payload = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Name, c.Container, addr, state, payload)
			}
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	writeCounters(w, st.Nodes)
	fmt.Fprintln(w)
	writePayloads(w, st.Nodes)
}

// writeCounters prints frames and drops per node, from the hub and from
// the runtimes' own reports.
func writeCounters(w io.Writer, nodes []NodeJSON) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FRAMES\tHUB RX (from runtime)\tHUB TX (to runtime)\tHUB DROPS\tRUNTIME EGRESS\tRUNTIME INGRESS\tRUNTIME DROPS\tKERNEL DROPS (TAP, socket)")
	for _, n := range nodes {
		egress, ingress, rdrops, kdrops := "-", "-", "-", "-"
		if r := n.Runtime; r != nil {
			egress = frames(r.Egress.Frames, r.Egress.Bytes)
			ingress = frames(r.Ingress.Frames, r.Ingress.Bytes)
			rdrops = bothWays(r.Egress.Drops, r.Ingress.Drops)
			kdrops = bothWays(r.Egress.KernelDrops, r.Ingress.KernelDrops)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name,
			frames(n.Hub.RxFrames, n.Hub.RxBytes), frames(n.Hub.TxFrames, n.Hub.TxBytes), dropList(n.Hub.Drops),
			egress, ingress, rdrops, kdrops)
	}
	tw.Flush()
}

// bothWays lists egress and ingress drops by reason, or "-".
func bothWays(egress, ingress map[string]uint64) string {
	var parts []string
	if d := dropList(egress); d != "-" {
		parts = append(parts, "egress "+d)
	}
	if d := dropList(ingress); d != "-" {
		parts = append(parts, "ingress "+d)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

func frames(n, bytes uint64) string {
	return fmt.Sprintf("%d (%s)", n, humanBytes(float64(bytes)))
}

func dropList(m map[string]uint64) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func humanBytes(b float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for b >= 1024 && i < len(units)-1 {
		b /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", b)
	}
	return fmt.Sprintf("%.1f %s", b, units[i])
}

func humanBits(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.1f Mbit/s", bps/1e6)
	default:
		return fmt.Sprintf("%.1f kbit/s", bps/1e3)
	}
}

func pluralS(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
