package vsock

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Scheme is the transport of a bridge address.
type Scheme string

const (
	// SchemeVsock is an AF_VSOCK stream socket: vsock://CID:PORT.
	SchemeVsock Scheme = "vsock"
	// SchemeUnix is a unix stream socket at a filesystem path: unix:///path.
	SchemeUnix Scheme = "unix"
)

// Well-known vsock context IDs.
const (
	// CIDLocal reaches the same machine; it needs the vsock_loopback
	// transport.
	CIDLocal uint32 = 1
	// CIDHost is the host, as seen from inside a VM.
	CIDHost uint32 = 2
	// CIDAny (VMADDR_CID_ANY) listens on every CID of this machine. It can
	// only be listened on, not dialled.
	CIDAny uint32 = 0xFFFFFFFF
)

// portAny is VMADDR_PORT_ANY: the kernel picks a port. A bridge needs a port
// both sides know in advance, so it is never a valid bridge port.
const portAny uint32 = 0xFFFFFFFF

// MaxUnixPath is the longest socket path accepted: sun_path holds 108 bytes
// and C peers (QEMU among them) need room for the terminating NUL.
const MaxUnixPath = 107

// controlSuffix is appended to a unix data path to name its control socket.
const controlSuffix = ".ctl"

// ErrInvalidAddr is wrapped by every error about a malformed or unusable
// bridge address.
var ErrInvalidAddr = errors.New("invalid bridge address")

// AddrError says what is wrong with a bridge address. It matches
// ErrInvalidAddr with errors.Is.
type AddrError struct {
	Addr   string // the address as given (or as printed, for an Addr value)
	Reason string // what is wrong, for a human
}

func (e *AddrError) Error() string {
	return fmt.Sprintf("vsock: invalid bridge address %q: %s", e.Addr, e.Reason)
}

// Unwrap returns ErrInvalidAddr.
func (e *AddrError) Unwrap() error { return ErrInvalidAddr }

// Addr is a bridge address. For SchemeVsock, CID and Port are used; for
// SchemeUnix, Path. The zero Addr is invalid.
type Addr struct {
	Scheme Scheme
	CID    uint32 // vsock: context ID; CIDAny only for listening
	Port   uint32 // vsock: 1 … 0xFFFFFFFE
	Path   string // unix: absolute path, at most MaxUnixPath bytes
}

// ParseAddr parses a bridge address:
//
//	vsock://CID:PORT   CID: decimal uint32, or "any" (listen on every CID),
//	                   "host" (2) or "local" (1); PORT: decimal 1 … 4294967294
//	unix:///abs/path   an absolute path; relative paths are rejected, because
//	                   the runtime and the agent seldom share a working
//	                   directory (unix://rel/path is an error, not a path)
//
// Schemes and CID words are lowercase. Errors are *AddrError.
func ParseAddr(s string) (Addr, error) {
	bad := func(format string, args ...any) (Addr, error) {
		return Addr{}, &AddrError{Addr: s, Reason: fmt.Sprintf(format, args...)}
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return bad("want vsock://CID:PORT or unix:///absolute/path")
	}
	switch Scheme(scheme) {
	case SchemeVsock:
		cidStr, portStr, ok := strings.Cut(rest, ":")
		if !ok {
			return bad("missing :PORT after the CID")
		}
		cid, err := parseCID(cidStr)
		if err != nil {
			return bad("%v", err)
		}
		port, err := strconv.ParseUint(portStr, 10, 32)
		if err != nil || portStr == "" || portStr[0] == '+' {
			return bad("port %q is not a decimal number in 1…%d", portStr, portAny-1)
		}
		a := Addr{Scheme: SchemeVsock, CID: cid, Port: uint32(port)}
		if err := a.check(); err != nil {
			return bad("%s", err.(*AddrError).Reason)
		}
		return a, nil
	case SchemeUnix:
		a := Addr{Scheme: SchemeUnix, Path: rest}
		if err := a.check(); err != nil {
			return bad("%s", err.(*AddrError).Reason)
		}
		return a, nil
	default:
		return bad("unknown scheme %q (want vsock or unix)", scheme)
	}
}

func parseCID(s string) (uint32, error) {
	switch s {
	case "any":
		return CIDAny, nil
	case "host":
		return CIDHost, nil
	case "local":
		return CIDLocal, nil
	}
	if s == "" {
		return 0, errors.New("missing CID")
	}
	if s[0] == '+' {
		return 0, fmt.Errorf("CID %q is not a decimal number or any, host, local", s)
	}
	cid, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("CID %q is not a decimal uint32 or any, host, local", s)
	}
	return uint32(cid), nil
}

// Validate reports whether a is a usable bridge address, as an *AddrError.
func (a Addr) Validate() error { return a.check() }

func (a Addr) check() error {
	bad := func(format string, args ...any) error {
		return &AddrError{Addr: a.String(), Reason: fmt.Sprintf(format, args...)}
	}
	switch a.Scheme {
	case SchemeVsock:
		if a.Path != "" {
			return bad("a vsock address has no path")
		}
		if a.Port == 0 || a.Port == portAny {
			return bad("port %d out of range 1…%d", a.Port, portAny-1)
		}
		return nil
	case SchemeUnix:
		if a.CID != 0 || a.Port != 0 {
			return bad("a unix address has no CID or port")
		}
		switch {
		case a.Path == "":
			return bad("empty path")
		case a.Path[0] != '/':
			return bad("path %q is not absolute (write unix:///absolute/path)", a.Path)
		case strings.IndexByte(a.Path, 0) >= 0:
			return bad("path contains a NUL byte")
		case len(a.Path) > MaxUnixPath:
			return bad("path is %d bytes, longer than the %d a unix socket allows", len(a.Path), MaxUnixPath)
		}
		return nil
	case "":
		return bad("empty address")
	default:
		return bad("unknown scheme %q (want vsock or unix)", string(a.Scheme))
	}
}

// String returns the canonical form of a: vsock://CID:PORT with CIDs 1, 2
// and 0xFFFFFFFF written as local, host and any, or unix://PATH. For every
// valid a, ParseAddr(a.String()) returns a.
func (a Addr) String() string {
	switch a.Scheme {
	case SchemeVsock:
		var cid string
		switch a.CID {
		case CIDAny:
			cid = "any"
		case CIDHost:
			cid = "host"
		case CIDLocal:
			cid = "local"
		default:
			cid = strconv.FormatUint(uint64(a.CID), 10)
		}
		return "vsock://" + cid + ":" + strconv.FormatUint(uint64(a.Port), 10)
	case SchemeUnix:
		return "unix://" + a.Path
	}
	return fmt.Sprintf("%s://?", string(a.Scheme))
}

// Control returns the address of the control connection that goes with the
// data connection at a: for unix, the path with ".ctl" appended
// (/run/gvpn/bridge.sock → /run/gvpn/bridge.sock.ctl); for vsock, the same
// CID and the next port (PORT+1). It fails with an *AddrError when a is
// invalid or the derived address would be (port 4294967294, a path already
// at the length limit).
func (a Addr) Control() (Addr, error) {
	if err := a.check(); err != nil {
		return Addr{}, err
	}
	c := a
	switch a.Scheme {
	case SchemeVsock:
		c.Port = a.Port + 1
	case SchemeUnix:
		c.Path = a.Path + controlSuffix
	}
	if err := c.check(); err != nil {
		return Addr{}, &AddrError{Addr: a.String(), Reason: "no room for the control address: " + err.(*AddrError).Reason}
	}
	return c, nil
}
