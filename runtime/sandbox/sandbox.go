// Package sandbox is the contract between the service loop and whatever runs
// the payload's processes: start a process, kill it, stream its events,
// close. It holds only the contract; the implementations live beside it,
// one package each (netns: a network namespace on this host; agent: a VM or
// container with gvpn-agent inside, reached over the bridge), so a new kind
// of sandbox is added without touching the service.
//
// Bringing up the payload's side of the VPN is a separate job with its own
// contract (network.Attacher); a sandbox usually provides both.
package sandbox

import (
	"errors"
	"syscall"
)

// Sandbox runs the payload's processes. Its methods are safe for concurrent
// use.
type Sandbox interface {
	// Start starts spec and returns once the process runs, or with an error
	// wrapping ErrNotFound, ErrNotExecutable or ErrSetup when it could not
	// be started, or ErrClosed after Close. The process's output stays
	// queued until Process.Stream is called, so the caller can reply with
	// the pid before the first output event.
	Start(spec ProcessSpec) (Process, error)

	// Kill sends sig to a process Start returned. A pid this sandbox did
	// not start, or whose process has exited, gives an error wrapping
	// ErrNoProcess.
	Kill(pid uint64, sig syscall.Signal) error

	// Close kills every process, delivers their last events and releases
	// the sandbox. It is idempotent.
	Close() error
}

// Process is a started payload process.
type Process interface {
	// Pid identifies the process in RunProcess replies and Kill calls.
	Pid() uint64

	// Stream delivers the process's output and, last, exactly one Exited
	// event to sink, one event at a time and in order. A second call does
	// nothing.
	Stream(sink func(Event))
}

// ChunkSize is the most output bytes one Event carries.
const ChunkSize = 64 << 10

// ProcessSpec is what RunProcess asks for.
type ProcessSpec struct {
	// Bin is the program. A name without '/' is searched in the PATH of
	// Env (a default PATH when Env has none), like execvp; a relative path
	// is relative to Dir.
	Bin string
	// Args is the complete argument vector INCLUDING argv[0], as the
	// ExeUnit sends it. Empty means []string{Bin}.
	Args []string
	// Dir is the working directory inside the sandbox; empty means the
	// sandbox's default (the netns sandbox: the default volume's path).
	Dir string
	// Env is the whole environment ("KEY=value"), never the runtime's; a
	// default PATH is added when it has none.
	Env []string
}

// WithDefaults returns spec with an image's settings as its defaults: the
// entries of env whose key spec.Env does not set come first (the request
// wins on the same key), and dir is the working directory when spec gives
// none. Empty env and dir leave spec as it is.
func (spec ProcessSpec) WithDefaults(env []string, dir string) ProcessSpec {
	if spec.Dir == "" {
		spec.Dir = dir
	}
	if len(env) == 0 {
		return spec
	}
	set := make(map[string]bool, len(spec.Env))
	for _, kv := range spec.Env {
		set[envKey(kv)] = true
	}
	merged := make([]string, 0, len(env)+len(spec.Env))
	for _, kv := range env {
		if !set[envKey(kv)] {
			merged = append(merged, kv)
		}
	}
	spec.Env = append(merged, spec.Env...)
	return spec
}

func envKey(kv string) string {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i]
		}
	}
	return kv
}

// Event is one piece of a process's life, delivered by Process.Stream.
// Exactly one of Stdout, Stderr, Exited is set.
type Event struct {
	Pid    uint64
	Stdout []byte // a chunk of standard output, owned by the receiver
	Stderr []byte // a chunk of standard error, owned by the receiver
	// Exited is set on the last event of a process. ReturnCode is then
	// the exit status, or 128+N when signal N killed the process (the
	// shell convention: SIGKILL gives 137, SIGTERM 143), or -1 if the
	// status could not be collected.
	Exited     bool
	ReturnCode int32
}

// Sentinel errors every sandbox uses. Implementations wrap them with %w and
// add detail; test with errors.Is.
var (
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("sandbox: closed")
	// ErrNoProcess is returned by Kill for a pid that was not started by
	// this sandbox or whose process has already exited.
	ErrNoProcess = errors.New("sandbox: no such process")
	// ErrNotFound is returned by Start when the binary does not exist or is
	// not in PATH (a shell would exit 127).
	ErrNotFound = errors.New("sandbox: executable not found")
	// ErrNotExecutable is returned by Start when the binary exists but the
	// kernel refuses to execute it (a shell would exit 126).
	ErrNotExecutable = errors.New("sandbox: cannot execute")
	// ErrSetup is returned by Start when the process could not be prepared
	// (working directory, mounts, hostname, pipes).
	ErrSetup = errors.New("sandbox: process setup failed")
)
