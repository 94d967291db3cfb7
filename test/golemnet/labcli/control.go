package labcli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The control socket of `gvpn-lab up` speaks JSON lines. A client sends
// one request line; for exec it may then send "signal" lines (Ctrl-C), and
// closing its side kills the command. The server answers with reply lines:
// for exec any number of output lines, then one line with exit or error;
// for status and fault one line.

// ControlSocketName is the control socket's file name in the state dir.
const ControlSocketName = "control.sock"

// maxControlLine bounds one control line in either direction.
const maxControlLine = 1 << 20

// ctlRequest is one line from a client.
type ctlRequest struct {
	Op     string   `json:"op"` // exec, signal, status, fault
	Node   string   `json:"node,omitempty"`
	Argv   []string `json:"argv,omitempty"`
	Signal int      `json:"signal,omitempty"`
	// fault: the fields given are set, the others kept; Restore clears
	// every fault of the node and comes alone.
	Cut       *bool    `json:"cut,omitempty"`
	LatencyMs *float64 `json:"latency_ms,omitempty"`
	Loss      *float64 `json:"loss,omitempty"`
	Restore   bool     `json:"restore,omitempty"`
	// Docker is a fault on the node's container in a Docker lab
	// (partition, heal, pause, unpause, kill, restart); it comes alone.
	Docker string `json:"docker,omitempty"`
}

// ctlReply is one line from the server.
type ctlReply struct {
	Stdout []byte      `json:"stdout,omitempty"`
	Stderr []byte      `json:"stderr,omitempty"`
	Exit   *int32      `json:"exit,omitempty"`
	Error  string      `json:"error,omitempty"`
	Code   int         `json:"code,omitempty"` // the client's exit code with Error
	Status *StatusJSON `json:"status,omitempty"`
	Fault  *FaultJSON  `json:"fault,omitempty"`
	// Done says what a Docker fault did.
	Done string `json:"done,omitempty"`
}

// dockerFaults are the faults on a Docker lab node's container.
var dockerFaults = []string{"partition", "heal", "pause", "unpause", "kill", "restart"}

// maxLatencyMs bounds a fault's latency (one minute).
const maxLatencyMs = 60_000

// decodeRequest parses and checks one request line.
func decodeRequest(line []byte) (ctlRequest, error) {
	var r ctlRequest
	if err := json.Unmarshal(line, &r); err != nil {
		return r, fmt.Errorf("bad request: %w", err)
	}
	switch r.Op {
	case "status":
	case "exec":
		if r.Node == "" || len(r.Argv) == 0 || r.Argv[0] == "" {
			return r, errors.New("exec needs a node and a command")
		}
		for _, a := range r.Argv {
			if strings.IndexByte(a, 0) >= 0 {
				return r, errors.New("exec: an argument contains a NUL byte")
			}
		}
	case "signal":
		if r.Signal < 1 || r.Signal > 64 {
			return r, fmt.Errorf("signal %d out of range", r.Signal)
		}
	case "fault":
		if r.Node == "" {
			return r, errors.New("fault needs a node")
		}
		given := r.Cut != nil || r.LatencyMs != nil || r.Loss != nil
		if r.Docker != "" {
			if !slices.Contains(dockerFaults, r.Docker) {
				return r, fmt.Errorf("unknown container fault %q (want one of %s)", r.Docker, strings.Join(dockerFaults, ", "))
			}
			if given || r.Restore {
				return r, fmt.Errorf("fault --%s comes alone", r.Docker)
			}
			break
		}
		if r.Restore == given {
			return r, errors.New("fault needs --restore or at least one of --cut, --uncut, --latency, --loss (not both)")
		}
		if r.LatencyMs != nil && !(*r.LatencyMs >= 0 && *r.LatencyMs <= maxLatencyMs) {
			return r, fmt.Errorf("latency %vms: want 0 to %dms", *r.LatencyMs, maxLatencyMs)
		}
		if r.Loss != nil && !(*r.Loss >= 0 && *r.Loss <= 1) {
			return r, fmt.Errorf("loss %v: want a probability from 0 to 1", *r.Loss)
		}
	default:
		return r, fmt.Errorf("unknown op %q", r.Op)
	}
	return r, nil
}

// errNoLab: nothing answers on the control socket.
var errNoLab = errors.New("no lab is running (start one with `sudo gvpn-lab up`)")

func socketPath(stateDir string) string { return filepath.Join(stateDir, ControlSocketName) }

// dialLab connects to the control socket of the lab in stateDir.
func dialLab(stateDir string) (net.Conn, error) {
	c, err := net.DialTimeout("unix", socketPath(stateDir), 5*time.Second)
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return nil, errNoLab
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return nil, fmt.Errorf("must run as root to reach the lab (%s)", socketPath(stateDir))
	}
	return nil, err
}

// ctlConn is a client's connection to the lab.
type ctlConn struct {
	c   net.Conn
	sc  *bufio.Scanner
	enc *json.Encoder
}

func newCtlConn(c net.Conn) *ctlConn {
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), maxControlLine)
	return &ctlConn{c: c, sc: sc, enc: json.NewEncoder(c)}
}

func (cc *ctlConn) send(r ctlRequest) error { return cc.enc.Encode(r) }

// next reads one reply; io errors and a closed connection are errors.
func (cc *ctlConn) next() (ctlReply, error) {
	var r ctlReply
	if !cc.sc.Scan() {
		if err := cc.sc.Err(); err != nil {
			return r, err
		}
		return r, errors.New("the lab closed the connection (is it shutting down?)")
	}
	if err := json.Unmarshal(cc.sc.Bytes(), &r); err != nil {
		return r, fmt.Errorf("bad reply from the lab: %w", err)
	}
	return r, nil
}

// call sends a one-line request and returns the one-line reply; an Error
// reply is an error.
func call(stateDir string, req ctlRequest) (ctlReply, error) {
	c, err := dialLab(stateDir)
	if err != nil {
		return ctlReply{}, err
	}
	defer c.Close()
	cc := newCtlConn(c)
	if err := cc.send(req); err != nil {
		return ctlReply{}, err
	}
	r, err := cc.next()
	if err != nil {
		return r, err
	}
	if r.Error != "" {
		return r, errors.New(r.Error)
	}
	return r, nil
}

// exitCode maps a process's return code to this process's exit code.
func exitCode(rc int32) int {
	if rc < 0 || rc > 255 {
		return 1
	}
	return int(rc)
}
