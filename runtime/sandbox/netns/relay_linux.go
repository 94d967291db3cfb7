//go:build linux

package netns

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// runRelay runs the payload in a user namespace of its own, mapped to the
// activity's id range: the shim, still the host's root, starts its second
// stage (this executable with stageMarker and the same arguments) in a new
// user namespace, as that namespace's root; the second stage switches to
// the payload user there and execs the payload; the shim waits and ends
// as the payload ended (its exit code, or killed by the same signal).
//
// Why two processes: a process enters a user namespace only by creating
// it (a Go program, being multithreaded, cannot join one), and whoever
// writes the new namespace's id maps names the process by its pid in the
// /proc it sees. The runtime's starter thread sees the payload's /proc
// (the sandbox's PID namespace) but gets host pids from clone; the shim
// lives in that PID namespace, so its pids and its /proc agree.
//
// The shim stays the host's root meanwhile, out of the payload's reach:
// another user in another user namespace cannot signal or trace it. It
// takes every signal it can (the payload's process group gets them too:
// Kill signals groups) so that only the payload decides when it ends.
func runRelay(spec shimSpec, args []string, fail func(kind string, code int, format string, a ...any) int) int {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs)
	go func() {
		for range sigs {
		}
	}()
	report := os.NewFile(shimReportFD, "report")
	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       append([]string{shimArgv0, stageMarker}, args...),
		Env:        os.Environ(),
		Stdin:      os.Stdin,
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		ExtraFiles: []*os.File{report}, // fd 3 again: it says when the payload runs
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:                 unix.CLONE_NEWUSER,
			UidMappings:                idMap(spec.ids),
			GidMappings:                idMap(spec.ids),
			GidMappingsEnableSetgroups: true,
			Credential:                 &syscall.Credential{Uid: 0, Gid: 0},
		},
	}
	if err := cmd.Start(); err != nil {
		return fail(kindSetup, exitNoExec, "user namespace: %v", err)
	}
	// The second stage has the report pipe; Start reads to EOF, which
	// must come when that stage execs the payload or exits.
	report.Close()
	dropAllCaps()
	err := cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return exitNoExec
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		sig := ws.Signal()
		signal.Reset(sig)
		_ = unix.Kill(os.Getpid(), sig)
		return 128 + int(sig) // a signal that does not kill
	}
	return ws.ExitStatus()
}

// dropAllCaps empties the relay's capability sets on every thread: what is
// left to do is waiting. Where the Go runtime cannot run a system call on
// all threads (a program linked with cgo, such as a race-enabled test)
// the relay keeps them; nothing it does uses them.
func dropAllCaps() {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	_, _, _ = syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
}
