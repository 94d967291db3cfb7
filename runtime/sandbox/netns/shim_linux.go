//go:build linux

package netns

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/proc"
	"github.com/gvpn/gvpn/runtime/sandbox"
)

// The shim is the current executable started by Start with this argument
// vector:
//
//	[shimArgv0, shimMarker, mode, uid, gid, dir, bin, argv...]
//
// (mode shimRoot keeps the runtime's root and capabilities: the
// operator's explicit choice; shimHost switches to the host user uid:gid;
// shimUserns followed by the first host id of the activity's range runs
// the payload in a user namespace of its own, see runRelay), the write end of a report pipe as fd 3, and the
// sandbox's namespaces already joined (see starter). It writes shimMagic to
// the pipe first (so Start can tell a missing MaybeRunShim call from a
// successful exec), then either execs bin — the pipe is close-on-exec, so
// the parent reads EOF — or writes "KIND message" and exits.
const (
	shimMarker   = "__gvpn-sandbox-exec"
	shimArgv0    = "gvpn-sandbox-shim"
	shimReportFD = 3
	shimMagic    = "gvpn-sandbox-shim/1\n"
	shimRoot     = "root"
	shimHost     = "host"
	shimUserns   = "userns="
	// stageMarker starts the second stage of a shimUserns shim: the
	// same arguments, in the new user namespace.
	stageMarker = "__gvpn-sandbox-stage"

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
// returns at once unless the process was started by this package: as a
// sandbox's init (see holderMarker), or as the re-exec shim of Start, which
// drops privileges and replaces itself with the payload binary, or exits
// with 127 (not found) or 126 (any other failure) after describing the
// failure on stderr and to Start. In either role it never returns.
func MaybeRunShim() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case shimMarker:
		os.Exit(runShim(os.Args[2:], false))
	case stageMarker:
		os.Exit(runShim(os.Args[2:], true))
	case holderMarker:
		os.Exit(runHolder(os.Args[2:]))
	case usernsMarker:
		os.Exit(runUsernsKeeper())
	}
}

type shimSpec struct {
	root     bool
	userns   bool
	ids      uint32 // first host id of the range, with userns
	uid, gid int
	dir      string
	bin      string
	argv     []string
}

func parseShimArgs(args []string) (shimSpec, error) {
	if len(args) < 6 {
		return shimSpec{}, fmt.Errorf("want at least 6 shim arguments, got %d", len(args))
	}
	spec := shimSpec{dir: args[3], bin: args[4], argv: args[5:]}
	switch base, userns := strings.CutPrefix(args[0], shimUserns); {
	case args[0] == shimRoot:
		spec.root = true
		return spec, nil
	case userns:
		ids, err := strconv.ParseUint(base, 10, 32)
		if err != nil || ids == 0 || ids > 1<<32-IDRangeSize {
			return shimSpec{}, fmt.Errorf("bad shim mode %q", args[0])
		}
		spec.userns, spec.ids = true, uint32(ids)
	case args[0] != shimHost:
		return shimSpec{}, fmt.Errorf("bad shim mode %q", args[0])
	}
	var err1, err2 error
	spec.uid, err1 = strconv.Atoi(args[1])
	spec.gid, err2 = strconv.Atoi(args[2])
	if err := errors.Join(err1, err2); err != nil || spec.uid < 0 || spec.gid < 0 || spec.uid == 0 && !spec.userns {
		return shimSpec{}, fmt.Errorf("bad payload user %q:%q", args[1], args[2])
	}
	return spec, nil
}

// runShim is the shim (stage false) or, for a payload in a user
// namespace, its second stage (see runRelay).
func runShim(args []string, stage bool) int {
	// Bounding set and no_new_privs are per thread: set them on the
	// thread that execs.
	runtime.LockOSThread()
	// Only stdin, stdout, stderr and the report pipe may be open: a
	// descriptor the runtime inherited without close-on-exec must not
	// reach the payload. The report pipe is closed on exec, which is also
	// how Start learns that the exec happened.
	// Close-on-exec rather than closed now: the Go runtime of this very
	// process may already hold descriptors of its own (its epoll).
	_ = unix.CloseRange(shimReportFD+1, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	syscall.CloseOnExec(shimReportFD)
	if !stage { // the first stage has said it
		_, _ = unix.Write(shimReportFD, []byte(shimMagic))
	}
	fail := func(kind string, code int, format string, a ...any) int {
		msg := fmt.Sprintf(format, a...)
		fmt.Fprintf(os.Stderr, "gvpn-sandbox: %s\n", msg)
		_, _ = unix.Write(shimReportFD, []byte(kind+" "+msg))
		return code
	}

	// The cgroup first, while still privileged, and before anything of
	// the payload runs (see limits_linux.go).
	if err := joinCgroupFDs(); err != nil {
		return fail(kindSetup, exitNoExec, "join the activity's cgroup: %v", err)
	}
	spec, err := parseShimArgs(args)
	if err != nil {
		return fail(kindSetup, exitNoExec, "%v", err)
	}
	// Started by the runtime's thread, the shim has the runtime's low
	// oom_score_adj; the payload must be the OOM killer's first choice
	// (the relay's second stage inherits it).
	if err := proc.SetOOMScoreAdj(0, proc.OOMPayload); err != nil {
		return fail(kindSetup, exitNoExec, "%v", err)
	}
	if spec.userns && !stage {
		return runRelay(spec, args, fail)
	}
	if !spec.root {
		if err := dropPrivileges(spec.uid, spec.gid); err != nil {
			return fail(kindSetup, exitNoExec, "drop privileges: %v", err)
		}
	}
	if err := unix.Chdir(spec.dir); err != nil {
		return fail(kindSetup, exitNoExec, "working directory %s: %v", spec.dir, err)
	}
	path, err := proc.LookPath(spec.bin, proc.PathOf(os.Environ()), "")
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fail(kindNotFound, exitNotFound, "%s: command not found", spec.bin)
		}
		return fail(kindNoExec, exitNoExec, "%s: %v", spec.bin, err)
	}
	if !spec.root {
		// Last, so that nothing of the shim's own runs under it.
		if err := denyUserNamespaces(); err != nil {
			return fail(kindSetup, exitNoExec, "seccomp: %v", err)
		}
	}
	err = syscall.Exec(path, spec.argv, os.Environ())
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return fail(kindNotFound, exitNotFound, "%s: %v", path, err)
	}
	return fail(kindNoExec, exitNoExec, "%s: %v", path, err)
}

// dropPrivileges makes the process the payload user for good: no
// capability can come back (empty bounding set, and setuid from root
// clears the permitted, effective and ambient sets), no supplementary
// groups, and no_new_privs, so neither setuid binaries nor file
// capabilities raise it again.
//
// A shim started by a runtime that is not root (one holding file
// capabilities) has no capability at all: it is executed from the
// sandbox's nosuid root, where file capabilities do nothing. It cannot
// change its user, so it only checks that it is the payload user already
// and sets no_new_privs; with no permitted capability and no_new_privs, its
// full bounding set can never be used.
func dropPrivileges(uid, gid int) error {
	if uid == 0 {
		return keepNamespaceRoot(gid)
	}
	if !hasEffectiveCaps() {
		if os.Getuid() != uid || os.Getgid() != gid {
			return fmt.Errorf("a runtime that is not root runs payloads as its own user (uid %d, gid %d), not as uid %d gid %d: set --payload-user to %d:%d",
				os.Getuid(), os.Getgid(), uid, gid, os.Getuid(), os.Getgid())
		}
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
		return nil
	}
	if err := dropBounding(nil); err != nil {
		return err
	}
	// The syscall package applies these to every thread of the process.
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("setresgid %d: %w", gid, err)
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return fmt.Errorf("setresuid %d: %w", uid, err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	return nil
}

// hasEffectiveCaps says whether the process holds any effective
// capability (an error counts as yes, so the full drop is attempted).
func hasEffectiveCaps() bool {
	eff, err := proc.EffectiveCaps()
	return err != nil || eff != 0
}

// lastCap is the highest capability number the kernel knows.
func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if n, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil {
		return n
	}
	return 63
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

// rootCaps are what the root of the payload's own user namespace keeps
// (an image that expects root: package managers chown, switch users and
// write files whatever their mode). They act only in that namespace, on
// files whose owner and group are both the activity's ids (its image,
// its writable layer) and on its own processes; every other namespace of
// the sandbox belongs to the host's user namespace, where the payload
// has nothing.
var rootCaps = []uintptr{unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID,
	unix.CAP_KILL, unix.CAP_SETGID, unix.CAP_SETUID}

// keepNamespaceRoot stays the root of the process's user namespace with
// only rootCaps: the bounding set limits what the exec'd payload gets
// (root gets its bounding set on exec), no supplementary groups, gid gid,
// no_new_privs.
func keepNamespaceRoot(gid int) error {
	if err := dropBounding(rootCaps); err != nil {
		return err
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("setresgid %d: %w", gid, err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	return nil
}

// dropBounding removes every capability but keep from the calling
// thread's bounding set.
func dropBounding(keep []uintptr) error {
	for c := 0; c <= lastCap(); c++ {
		if slices.Contains(keep, uintptr(c)) {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	return nil
}
