//go:build linux

package netns

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/proc"
	"github.com/gvpn/gvpn/runtime/sandbox"
)

// The shim is the current executable started by Start with this argument
// vector:
//
//	[shimArgv0, shimMarker, hostsPath, hostname, bin, argv...]
//
// and the write end of a report pipe as fd 3. It writes shimMagic to the
// pipe first (so Start can tell a missing MaybeRunShim call from a
// successful exec), then either execs bin — the pipe is close-on-exec, so
// the parent reads EOF — or writes "KIND message" and exits.
const (
	shimMarker   = "__gvpn-sandbox-exec"
	shimArgv0    = "gvpn-sandbox-shim"
	shimReportFD = 3
	shimMagic    = "gvpn-sandbox-shim/1\n"

	// maxReport bounds what Start reads from the report pipe.
	maxReport = 64 << 10
)

// Report kinds, one per sentinel error.
const (
	kindNotFound = "notfound"
	kindNoExec   = "noexec"
	kindSetup    = "setup"
)

// Exit codes of a failed shim, as a shell would use them. Start reports the
// failure as an error, so they only matter when the shim is run by hand.
const (
	exitNoExec   = 126
	exitNotFound = 127
)

// MaybeRunShim must be the first call in main() of every binary that uses
// this package, and in TestMain of tests that start sandboxed processes. It
// returns at once unless the process was started by Sandbox.Start as the
// re-exec shim; then it prepares the process (private mount namespace,
// hosts file bind-mounted over /etc/hosts, hostname) and replaces itself with
// the payload binary, or exits with 127 (not found) or 126 (any other
// failure) after describing the failure on stderr and to Start. In shim mode
// it never returns.
func MaybeRunShim() {
	if len(os.Args) < 2 || os.Args[1] != shimMarker {
		return
	}
	os.Exit(runShim(os.Args[2:]))
}

type shimSpec struct {
	hostsPath string
	hostname  string
	bin       string
	argv      []string
}

func parseShimArgs(args []string) (shimSpec, error) {
	if len(args) < 4 {
		return shimSpec{}, fmt.Errorf("want at least 4 shim arguments, got %d", len(args))
	}
	return shimSpec{hostsPath: args[0], hostname: args[1], bin: args[2], argv: args[3:]}, nil
}

func runShim(args []string) int {
	// The report pipe must not leak into the payload; closing it on exec is
	// also how Start learns that the exec happened.
	syscall.CloseOnExec(shimReportFD)
	_, _ = unix.Write(shimReportFD, []byte(shimMagic))
	fail := func(kind string, code int, format string, a ...any) int {
		msg := fmt.Sprintf(format, a...)
		fmt.Fprintf(os.Stderr, "gvpn-sandbox: %s\n", msg)
		_, _ = unix.Write(shimReportFD, []byte(kind+" "+msg))
		return code
	}

	spec, err := parseShimArgs(args)
	if err != nil {
		return fail(kindSetup, exitNoExec, "%v", err)
	}
	// os/exec already made the new mount namespace private when it
	// unshared it; repeat it so that the bind mount below can never
	// propagate to the host, whatever the caller's SysProcAttr said.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail(kindSetup, exitNoExec, "make mounts private: %v", err)
	}
	if err := unix.Mount(spec.hostsPath, "/etc/hosts", "", unix.MS_BIND, ""); err != nil {
		return fail(kindSetup, exitNoExec, "bind-mount %s on /etc/hosts: %v", spec.hostsPath, err)
	}
	if spec.hostname != "" {
		if err := unix.Sethostname([]byte(spec.hostname)); err != nil {
			return fail(kindSetup, exitNoExec, "set hostname %q: %v", spec.hostname, err)
		}
	}
	path, err := proc.LookPath(spec.bin, proc.PathOf(os.Environ()), "")
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fail(kindNotFound, exitNotFound, "%s: command not found", spec.bin)
		}
		return fail(kindNoExec, exitNoExec, "%s: %v", spec.bin, err)
	}
	err = syscall.Exec(path, spec.argv, os.Environ())
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return fail(kindNotFound, exitNotFound, "%s: %v", path, err)
	}
	return fail(kindNoExec, exitNoExec, "%s: %v", path, err)
}

// readShimReport reads the report pipe until EOF (the shim exec'd or
// exited) and decodes it.
func readShimReport(r io.Reader) error {
	b, err := io.ReadAll(io.LimitReader(r, maxReport))
	if err != nil {
		return fmt.Errorf("%w: read shim report: %v", sandbox.ErrSetup, err)
	}
	return parseShimReport(b)
}

// parseShimReport decodes what the shim wrote: shimMagic alone means the
// payload binary was exec'd; shimMagic followed by "KIND message" is a
// failure; anything else means the executable is not running the shim.
func parseShimReport(b []byte) error {
	rest, ok := bytes.CutPrefix(b, []byte(shimMagic))
	if !ok {
		if len(b) == 0 {
			return fmt.Errorf("%w: the re-executed binary did not run the sandbox shim (call sandbox.MaybeRunShim first in main)", sandbox.ErrSetup)
		}
		return fmt.Errorf("%w: unexpected shim report %q", sandbox.ErrSetup, truncate(b, 200))
	}
	if len(rest) == 0 {
		return nil
	}
	kind, msg, _ := bytes.Cut(rest, []byte(" "))
	text := string(truncate(msg, 4096))
	switch string(kind) {
	case kindNotFound:
		return fmt.Errorf("%w: %s", sandbox.ErrNotFound, text)
	case kindNoExec:
		return fmt.Errorf("%w: %s", sandbox.ErrNotExecutable, text)
	default:
		return fmt.Errorf("%w: %s", sandbox.ErrSetup, text)
	}
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
