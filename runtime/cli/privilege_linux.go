package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/endpoint"
	"github.com/gvpn/gvpn/runtime/proc"
	"github.com/gvpn/gvpn/vsock"
)

// canSwitchUsers says whether payloads can run as a user other than the
// runtime's own. That takes CAP_SETUID and CAP_SETGID, and root: the
// sandbox's shim, which switches, is executed from a nosuid mount, so a
// non-root runtime's file capabilities never reach it.
func canSwitchUsers() bool {
	eff, err := proc.EffectiveCaps()
	return err == nil && os.Geteuid() == 0 && proc.HasCaps(eff, unix.CAP_SETUID, unix.CAP_SETGID)
}

// withFileCapabilities says whether the runtime holds capabilities its
// caller does not: a non-root user running a binary with file
// capabilities. Then every path the caller names is checked against what
// the caller itself may do (callerPaths), or the binary would lend its
// CAP_DAC_OVERRIDE and CAP_SYS_ADMIN to whoever runs it.
func withFileCapabilities() bool {
	eff, err := proc.EffectiveCaps()
	return os.Getuid() != 0 && (err != nil || eff != 0)
}

// pathUse is one path from the command line and what the runtime does with
// it, in the access(2) modes the caller itself must have.
type pathUse struct {
	flag string
	path string
	mode uint32 // unix.R_OK, W_OK, X_OK
	what string // for the error
}

// callerPaths lists every path a command line makes the runtime read,
// write or create, with the access the caller needs for it. Paths the
// runtime only hands to a program it executes (--vm-qemu, --agent-command,
// --vm-kernel and --vm-initrd, which QEMU opens) are not here: a non-root
// runtime's children start without capabilities, so the kernel checks
// those as the caller. The workdir's ownership is checked apart
// (checkCallerPaths).
func callerPaths(o *Options) []pathUse {
	var uses []pathUse
	if o.Workdir != "" {
		uses = append(uses, pathUse{"workdir", o.Workdir, unix.R_OK | unix.W_OK | unix.X_OK, "read, write and enter"})
	}
	for _, p := range o.TaskPackages {
		uses = append(uses, pathUse{"task-package", p, unix.R_OK, "read"})
	}
	// A unix socket the runtime connects to or listens at (it removes a
	// stale one first): the caller must be able to create and remove
	// entries in its directory.
	for flag, v := range map[string]string{"vpn-endpoint": o.VPNEndpoint, "inet-endpoint": o.INETEndpoint} {
		if u, err := endpoint.Parse(v); err == nil && u.Kind == endpoint.Unix {
			uses = append(uses, pathUse{flag, filepath.Dir(u.Addr), unix.W_OK | unix.X_OK, "create sockets in"})
		}
	}
	for flag, v := range map[string]string{"bridge": o.Bridge, "bridge-control": o.BridgeControl} {
		if a, err := vsock.ParseAddr(v); err == nil && a.Scheme == vsock.SchemeUnix {
			uses = append(uses, pathUse{flag, filepath.Dir(a.Path), unix.W_OK | unix.X_OK, "create sockets in"})
		}
	}
	return uses
}

// checkCallerPaths refuses, for a runtime with file capabilities, a
// workdir that is not the calling user's and any path the caller could not
// use itself. access(2) checks with the real uid and, for a non-root real
// uid, no capabilities: exactly the caller's own rights.
func checkCallerPaths(o *Options) error {
	uid := os.Getuid()
	for _, u := range callerPaths(o) {
		if err := unix.Access(u.path, u.mode); err != nil {
			return fmt.Errorf("--%s %s: the calling user (uid %d) cannot %s it (%v); with file capabilities gvpn-runtime uses only paths its caller may use itself",
				u.flag, u.path, uid, u.what, err)
		}
	}
	if o.Workdir == "" {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Lstat(o.Workdir, &st); err != nil {
		return fmt.Errorf("--workdir %s: %w", o.Workdir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("--workdir %s is not a directory (a symbolic link is not accepted with file capabilities)", o.Workdir)
	}
	if int(st.Uid) != uid {
		return fmt.Errorf("--workdir %s belongs to uid %d, not to the calling user (uid %d); with file capabilities gvpn-runtime works only in its caller's own directories",
			o.Workdir, st.Uid, uid)
	}
	return nil
}

// The runtime's own files in the workdir are opened without following a
// symbolic link in their last component: the workdir belongs to the
// ExeUnit's user, and a runtime with CAP_DAC_OVERRIDE must not write (or
// read) through a link planted there to a file that user cannot reach.

// writeFileNoFollow replaces the contents of path (created with perm).
func writeFileNoFollow(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readFileNoFollow reads path, refusing a symbolic link.
func readFileNoFollow(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

// realDir says whether path is a directory itself, not a link to one.
func realDir(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.IsDir()
}

// notALink says whether path is missing or a regular file.
func notALink(path string) bool {
	fi, err := os.Lstat(path)
	return errors.Is(err, os.ErrNotExist) || (err == nil && fi.Mode().IsRegular())
}
