package vsock

// ProtocolVersion is the control protocol version an agent announces in
// Hello. A change that old peers cannot ignore bumps it.
const ProtocolVersion = 1

// Message types: the "type" member of every control message.
const (
	TypeHello        = "hello"         // agent → runtime, first message
	TypeConfigure    = "configure"     // runtime → agent
	TypeConfigured   = "configured"    // agent → runtime, reply to configure
	TypeRun          = "run"           // runtime → agent
	TypeStarted      = "started"       // agent → runtime, reply to run
	TypeFailed       = "failed"        // agent → runtime, reply to run
	TypeOutput       = "output"        // agent → runtime, any time a process writes
	TypeExited       = "exited"        // agent → runtime, once per started process
	TypeKill         = "kill"          // runtime → agent
	TypeKilled       = "killed"        // agent → runtime, reply to kill
	TypeShutdown     = "shutdown"      // runtime → agent
	TypeShutdownDone = "shutdown_done" // agent → runtime, reply to shutdown
	TypeCounters     = "counters"      // agent → runtime, when configure asked for them
)

// Message is one control message: a value of one of the types in this
// file. Receive returns values, never pointers; Send takes either.
//
// Requests carry an id chosen by the sender; the reply echoes it. Ids are
// only compared, never interpreted.
type Message interface {
	// Type is the message's "type" member on the wire.
	Type() string
	isMessage()
}

// Hello is the agent's first message on a new control connection.
type Hello struct {
	Version int    `json:"version"`  // ProtocolVersion of the agent
	AgentID string `json:"agent_id"` // free-form, for the runtime's logs
	// VNetHdr: the agent can carry superframes with virtio-net headers
	// on the data connection (docs/bridge.md §2.4) if configure asks.
	VNetHdr bool `json:"vnet_hdr,omitempty"`
}

// Configure asks the agent to configure its VPN interface. The field names
// follow the ExeUnit's CreateNetwork, so that a Configured.Field can be
// passed back to the ExeUnit unchanged.
type Configure struct {
	ID      uint64            `json:"id"`
	Name    string            `json:"name"`            // interface name, e.g. "vpn0"
	IfAddr  string            `json:"if_addr"`         // the node's IPv4 address, e.g. "10.0.0.2"
	Mask    string            `json:"mask"`            // dotted IPv4 mask, e.g. "255.255.255.0"
	Gateway string            `json:"gateway"`         // IPv4 gateway; "" means none
	MTU     int               `json:"mtu"`             // IP MTU of the interface, e.g. 1220
	Hosts   map[string]string `json:"hosts,omitempty"` // hostname → IP, for /etc/hosts
	// VNetHdr asks the agent to send superframes with virtio-net headers
	// on the data connection (docs/bridge.md §2.4), and says that the
	// runtime takes them. Only sent to an agent whose hello offered it.
	VNetHdr bool `json:"vnet_hdr,omitempty"`
	// CountersMS asks the agent to send a Counters message every so many
	// milliseconds while this control connection lasts, and one before
	// shutdown_done (docs/bridge.md §3.4); 0 asks for none. An agent
	// older than Counters ignores it and sends none.
	CountersMS int `json:"counters_ms,omitempty"`
}

// Configured is the agent's reply to Configure. On failure Field names the
// input at fault ("if_addr", "mask", "gateway", "mtu", "name", "hosts") when
// there is one.
type Configured struct {
	ID    uint64 `json:"id"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Field string `json:"field,omitempty"`
	// VNetHdr confirms a configure that asked for superframes: from now
	// on, until this control connection ends, the agent sends them and
	// takes them (docs/bridge.md §2.4). Never set on a refusal.
	VNetHdr bool `json:"vnet_hdr,omitempty"`
}

// Run asks the agent to start a payload process.
type Run struct {
	ID   uint64   `json:"id"`
	Bin  string   `json:"bin"`           // path of the executable
	Args []string `json:"args"`          // full argv, argv[0] included
	Dir  string   `json:"dir,omitempty"` // working directory; "" = the agent's
	Env  []string `json:"env,omitempty"` // "KEY=value" entries; empty = the agent's environment
	// User is who the process runs as, the image's User setting ("name",
	// "uid", "uid:gid", "name:group"), resolved by the agent against its
	// root's /etc/passwd and /etc/group; "" = the agent's own user. An
	// agent older than this field ignores it and runs the process as
	// itself.
	User string `json:"user,omitempty"`
}

// Started is the reply to a Run whose process was started.
type Started struct {
	ID  uint64 `json:"id"`
	PID int    `json:"pid"`
}

// Failed is the reply to a Run whose process could not be started.
type Failed struct {
	ID    uint64 `json:"id"`
	Error string `json:"error"`
	// Reason classifies the failure, so the runtime can answer the
	// ExeUnit with the same error code as for a local process:
	// FailedNotFound, FailedNotExecutable, or empty (anything else).
	Reason string `json:"reason,omitempty"`
}

// Failed.Reason values.
const (
	// FailedNotFound: the executable does not exist or is not in PATH (a
	// shell would exit 127).
	FailedNotFound = "not_found"
	// FailedNotExecutable: the executable exists but the kernel refused
	// to run it (a shell would exit 126).
	FailedNotExecutable = "not_executable"
)

// Output carries bytes a process wrote. On the wire the bytes are base64
// strings (encoding/json's []byte). A sender splits large output so that
// each message stays under MaxControlMessage.
type Output struct {
	PID    int    `json:"pid"`
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
}

// Exited reports the end of a started process, after its last Output.
type Exited struct {
	PID        int `json:"pid"`
	ReturnCode int `json:"return_code"`
}

// Kill asks the agent to send a signal to a process it started.
type Kill struct {
	ID     uint64 `json:"id"`
	PID    int    `json:"pid"`
	Signal int    `json:"signal"` // Linux signal number, e.g. 15
}

// Killed is the reply to Kill.
type Killed struct {
	ID    uint64 `json:"id"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Counters carries the agent's cumulative counters (docs/bridge.md §3.4):
// what its pump passed and dropped, and what its links (the TAP and the
// bridge) counted, each by the payload's direction. Egress is what the
// payload sent, ingress what it receives. They only grow while the agent
// runs; a new agent starts again from zero.
type Counters struct {
	// Instance is chosen by each agent process at random: a report with
	// another instance than the last comes from a new agent, which counts
	// from zero again.
	Instance string     `json:"instance,omitempty"`
	Egress   CounterDir `json:"egress"`
	Ingress  CounterDir `json:"ingress"`
	// Events are counts that are not losses (bridge reconnections,
	// superframes cut or glued at the agent's TAP).
	Events map[string]uint64 `json:"events,omitempty"`
	// KernelError says why the TAP's kernel counters could not be read.
	KernelError string `json:"kernel_error,omitempty"`
}

// CounterDir is one direction of Counters.
type CounterDir struct {
	Frames uint64 `json:"frames"` // frames the agent's pump passed
	Bytes  uint64 `json:"bytes"`
	// Drops are the frames the agent dropped, by reason: its filter's
	// (the pump's reasons) and its links' own (bridge_dropped,
	// unconfigured).
	Drops map[string]uint64 `json:"drops,omitempty"`
	// KernelDrops are the guest kernel's drops at the agent's TAP.
	KernelDrops map[string]uint64 `json:"kernel_drops,omitempty"`
}

// Shutdown asks the agent to stop its processes and tear down its
// interface; the agent replies ShutdownDone when it has finished.
type Shutdown struct {
	ID uint64 `json:"id"`
}

// ShutdownDone is the reply to Shutdown.
type ShutdownDone struct {
	ID uint64 `json:"id"`
}

func (Hello) Type() string        { return TypeHello }
func (Configure) Type() string    { return TypeConfigure }
func (Configured) Type() string   { return TypeConfigured }
func (Run) Type() string          { return TypeRun }
func (Started) Type() string      { return TypeStarted }
func (Failed) Type() string       { return TypeFailed }
func (Output) Type() string       { return TypeOutput }
func (Exited) Type() string       { return TypeExited }
func (Kill) Type() string         { return TypeKill }
func (Killed) Type() string       { return TypeKilled }
func (Shutdown) Type() string     { return TypeShutdown }
func (ShutdownDone) Type() string { return TypeShutdownDone }
func (Counters) Type() string     { return TypeCounters }

func (Hello) isMessage()        {}
func (Configure) isMessage()    {}
func (Configured) isMessage()   {}
func (Run) isMessage()          {}
func (Started) isMessage()      {}
func (Failed) isMessage()       {}
func (Output) isMessage()       {}
func (Exited) isMessage()       {}
func (Kill) isMessage()         {}
func (Killed) isMessage()       {}
func (Shutdown) isMessage()     {}
func (ShutdownDone) isMessage() {}
func (Counters) isMessage()     {}

// decoders maps a wire type to a decoder returning the message value.
var decoders = map[string]func([]byte) (Message, error){
	TypeHello:        decodeAs[Hello],
	TypeConfigure:    decodeAs[Configure],
	TypeConfigured:   decodeAs[Configured],
	TypeRun:          decodeAs[Run],
	TypeStarted:      decodeAs[Started],
	TypeFailed:       decodeAs[Failed],
	TypeOutput:       decodeAs[Output],
	TypeExited:       decodeAs[Exited],
	TypeKill:         decodeAs[Kill],
	TypeKilled:       decodeAs[Killed],
	TypeShutdown:     decodeAs[Shutdown],
	TypeShutdownDone: decodeAs[ShutdownDone],
	TypeCounters:     decodeAs[Counters],
}
