//go:build linux

package netns

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// denyUserNamespaces installs, on the calling thread (the one that execs
// the payload), a seccomp filter that makes unshare(2) and clone(2) fail
// with EPERM when asked for a new user namespace, and clone3(2), whose
// flags a filter cannot read, fail with ENOSYS, so that C libraries fall
// back to clone. A user namespace would give the payload capabilities
// over namespaces of its own (network devices, nftables, mounts of
// memory file systems): kernel code it has no business reaching. A
// filter rather than user.max_user_namespaces=0 because it needs no
// capability in the payload's namespace (a shim switching to a user that
// is not root has none) and the payload cannot undo it; no_new_privs,
// set before, lets an unprivileged process install it. Other system
// calls are untouched. On an architecture it does not know it does
// nothing.
func denyUserNamespaces() error {
	prog := userNamespaceFilter()
	if prog == nil {
		return nil
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	return unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&fprog)), 0, 0)
}

// Offsets in struct seccomp_data.
const (
	seccompNr   = 0
	seccompArch = 4
	seccompArg0 = 16 // the low 32 bits on a little-endian machine
)

// Syscall numbers of a 32-bit x86 process (on amd64 it may run one).
var i386Calls = archCalls{unshare: 310, clone: 120, clone3: 435}

type archCalls struct{ unshare, clone, clone3 uint32 }

func userNamespaceFilter() []unix.SockFilter {
	native := archCalls{unix.SYS_UNSHARE, unix.SYS_CLONE, unix.SYS_CLONE3}
	var arch uint32
	switch runtime.GOARCH {
	case "amd64":
		arch = unix.AUDIT_ARCH_X86_64
	case "arm64":
		arch = unix.AUDIT_ARCH_AARCH64
	case "riscv64":
		arch = unix.AUDIT_ARCH_RISCV64
	default:
		return nil
	}
	nativeBlock := callBlock(native, runtime.GOARCH == "amd64")
	prog := []unix.SockFilter{stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, seccompArch)}
	if runtime.GOARCH == "amd64" {
		return append(append(append(prog,
			jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, arch, 2, 0),
			jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.AUDIT_ARCH_I386, uint8(len(nativeBlock)+1), 0),
			stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW)),
			nativeBlock...), callBlock(i386Calls, false)...)
	}
	return append(append(prog,
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, arch, 1, 0),
		stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW)),
		nativeBlock...)
}

// x32Bit marks the syscall numbers of x32 processes on amd64: the same
// calls, so the filter looks at the number without it.
const x32Bit = 0x40000000

// callBlock checks the syscall of one architecture.
func callBlock(c archCalls, x32 bool) []unix.SockFilter {
	b := []unix.SockFilter{stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, seccompNr)}
	if x32 {
		b = append(b, stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, ^uint32(x32Bit)))
	}
	return append(b,
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, c.unshare, 4, 0), // → check flags
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, c.clone, 3, 0),   // → check flags
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, c.clone3, 1, 0),  // → ENOSYS
		stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW),
		stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ERRNO|uint32(unix.ENOSYS)),
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, seccompArg0),
		jump(unix.BPF_JMP|unix.BPF_JSET|unix.BPF_K, unix.CLONE_NEWUSER, 1, 0),
		stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW),
		stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM)),
	)
}

func stmt(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }

func jump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}
