// Package sandbox runs the payload's processes (RunProcess requests) inside a
// per-activity network namespace, with the sandbox's own /etc/hosts.
//
// A Sandbox owns one named network namespace (visible to `ip netns list`,
// bind-mounted under /run/netns) whose name is derived from the activity's
// workdir, and one hosts file under /run/gvpn/NAME. Every process started
// with Start runs in that namespace, in a private mount namespace where the
// sandbox's hosts file is bind-mounted over /etc/hosts, the way
// `ip netns exec` uses /etc/netns/NAME/hosts. The host's /etc/hosts is never
// written and the bind mount is invisible outside the process's mount
// namespace.
//
// The sandbox is a convenience for local use and tests, not an isolation
// boundary: processes run as the runtime's user (root), see the host's file
// system and may leave the namespace again. Do not run untrusted code in it.
//
// # The re-exec shim
//
// Go cannot run code between fork and exec, but a process must have its
// hosts file mounted and its hostname set before the payload binary starts.
// So Start runs the current executable (/proc/self/exe) with a hidden
// marker argument; MaybeRunShim recognises the marker, does the setup and
// execs the payload binary in place. Every binary that uses this package
// (and every test binary of a package that starts sandboxed processes) must
// call MaybeRunShim first thing in main (or TestMain).
//
// The shim reports on an extra pipe whether the exec happened, so Start
// returns only once the payload binary runs (or with sandbox.ErrNotFound,
// sandbox.ErrNotExecutable or sandbox.ErrSetup when it could not).
package netns
