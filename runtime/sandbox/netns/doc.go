// Package netns is the default sandbox: it runs the payload's processes
// (RunProcess requests) in a per-activity network namespace, confined.
//
// A Sandbox owns one named network namespace (visible to `ip netns list`,
// bind-mounted under /run/netns) whose name is derived from the activity's
// workdir, and the directory /run/gvpn/NAME holding its owner record
// (package owner), hosts file and hostname file. Its first process, the
// init (see holderMarker), gets its own mount, PID, UTS and IPC namespaces
// and builds the payload's view of the file system there: the host's
// directories read-only and nosuid (without /root, /home and the directory
// of the workdirs), a private /tmp (the workdir's gvpn-tmp), /dev, /dev/shm,
// /proc and /sys, the sandbox's /etc/hosts and /etc/hostname, and the
// activity's volumes (package volume), the only other writable places.
// Every payload process is forked into those namespaces and runs as the
// payload user (nobody by default) with no capabilities and no_new_privs,
// with only stdin, stdout and stderr open and only the request's
// environment. When the init dies — Close, or the runtime's death, through
// its parent-death signal — every process in the PID namespace dies with
// it. Sweep removes what runtimes that died left behind.
//
// It is not a virtual machine: the payload runs on the host's kernel and
// can read the host's world-readable files outside the hidden directories.
// docs/provider.md says what it isolates and what it does not.
//
// # The re-exec shim
//
// Go cannot run code between fork and exec, but a process must drop its
// privileges and change to its directory before the payload binary starts,
// and the init must build its mounts before any payload exists. So Open and
// Start run the current executable (/proc/self/exe) with a hidden marker
// argument; MaybeRunShim recognises the marker, does the setup and execs the
// payload binary in place (or, for the init, stays). Every binary that uses
// this package (and every test binary of a package that starts sandboxed
// processes) must call MaybeRunShim first thing in main (or TestMain).
//
// The shim reports on an extra pipe whether the exec happened, so Start
// returns only once the payload binary runs (or with ErrNotFound,
// ErrNotExecutable or ErrSetup when it could not).
package netns
