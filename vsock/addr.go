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
	// SchemeVirtioSerial is a named virtio-serial port of a QEMU guest:
	// virtio-serial://NAME. It is the guest's end only: the host's end is
	// the unix socket that QEMU's chardev connects to.
	SchemeVirtioSerial Scheme = "virtio-serial"
)

// MaxPortName is the longest virtio-serial port name accepted (a file name
// under /dev/virtio-ports).
const MaxPortName = 255

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
// SchemeUnix, Path; for SchemeVirtioSerial, Name. The zero Addr is invalid.
type Addr struct {
	Scheme Scheme
	CID    uint32 // vsock: context ID; CIDAny only for listening
	Port   uint32 // vsock: 1 … 0xFFFFFFFE
	Path   string // unix: absolute path, at most MaxUnixPath bytes
	Name   string // virtio-serial: the port's name (QEMU's virtserialport name=)
}

// ParseAddr parses a bridge address:
//
//	vsock://CID:PORT   CID: decimal uint32, or "any" (listen on every CID),
//	                   "host" (2) or "local" (1); PORT: decimal 1 … 4294967294
//	unix:///abs/path   an absolute path; relative paths are rejected, because
//	                   the runtime and the agent seldom share a working
//	                   directory (unix://rel/path is an error, not a path)
//	virtio-serial://NAME
//	                   a named virtio-serial port, seen from inside a QEMU
//	                   guest (dial only); NAME is 1 … 255 bytes of letters,
//	                   digits and "._-"
//
// Schemes and CID words are lowercase. Errors are *AddrError.
func ParseAddr(s string) (Addr, error) {
	bad := func(format string, args ...any) (Addr, error) {
		return Addr{}, &AddrError{Addr: s, Reason: fmt.Sprintf(format, args...)}
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return bad("want vsock://CID:PORT, unix:///absolute/path or virtio-serial://NAME")
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
	case SchemeUnix, SchemeVirtioSerial:
		a := Addr{Scheme: Scheme(scheme), Path: rest}
		if a.Scheme == SchemeVirtioSerial {
			a = Addr{Scheme: SchemeVirtioSerial, Name: rest}
		}
		if err := a.check(); err != nil {
			return bad("%s", err.(*AddrError).Reason)
		}
		return a, nil
	default:
		return bad("unknown scheme %q (want vsock, unix or virtio-serial)", scheme)
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
		if a.Path != "" || a.Name != "" {
			return bad("a vsock address has no path or name")
		}
		if a.Port == 0 || a.Port == portAny {
			return bad("port %d out of range 1…%d", a.Port, portAny-1)
		}
		return nil
	case SchemeVirtioSerial:
		if a.CID != 0 || a.Port != 0 || a.Path != "" {
			return bad("a virtio-serial address has only a port name")
		}
		return checkPortName(a.Name, bad)
	case SchemeUnix:
		if a.CID != 0 || a.Port != 0 || a.Name != "" {
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
		return bad("unknown scheme %q (want vsock, unix or virtio-serial)", string(a.Scheme))
	}
}

// checkPortName allows what QEMU and udev pass through unchanged as a file
// name under /dev/virtio-ports.
func checkPortName(name string, bad func(string, ...any) error) error {
	if name == "" {
		return bad("empty virtio-serial port name")
	}
	if len(name) > MaxPortName {
		return bad("port name is %d bytes, longer than %d", len(name), MaxPortName)
	}
	if name == "." || name == ".." {
		return bad("port name %q is not a file name", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return bad("port name %q has %q (allowed: letters, digits, \".\", \"_\", \"-\")", name, c)
		}
	}
	return nil
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
	case SchemeVirtioSerial:
		return "virtio-serial://" + a.Name
	}
	return fmt.Sprintf("%s://?", string(a.Scheme))
}

// Control returns the address of the control connection that goes with the
// data connection at a: for unix, the path with ".ctl" appended
// (/run/gvpn/bridge.sock → /run/gvpn/bridge.sock.ctl); for virtio-serial,
// the port name with ".ctl" appended (gvpn.bridge → gvpn.bridge.ctl); for
// vsock, the same CID and the next port (PORT+1). It fails with an *AddrError when a is
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
	case SchemeVirtioSerial:
		c.Name = a.Name + controlSuffix
	}
	if err := c.check(); err != nil {
		return Addr{}, &AddrError{Addr: a.String(), Reason: "no room for the control address: " + err.(*AddrError).Reason}
	}
	return c, nil
}
