package sandbox

import "errors"

// Sentinel errors. Functions wrap them with %w and add detail; test with
// errors.Is.
var (
	// ErrBadConfig reports an unusable Config (empty workdir, bad prefix or
	// hostname).
	ErrBadConfig = errors.New("sandbox: bad config")
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
	// (working directory, hosts bind mount, hostname, pipes).
	ErrSetup = errors.New("sandbox: process setup failed")
)
