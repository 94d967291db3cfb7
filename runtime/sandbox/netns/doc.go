// Package netns is the default sandbox: it runs the payload's processes
// (RunProcess requests) in a per-activity network namespace, confined.
//
// A Sandbox owns one named network namespace (visible to `ip netns list`,
// bind-mounted under /run/netns) whose name is derived from the activity's
// workdir, and the directory /run/gvpn/NAME holding its owner record
// (package owner), hosts file and hostname file. Its first process, the
// init (see holderMarker), gets its own mount, PID, UTS and IPC namespaces
// and builds the payload's view of the file system there: without an
// image, the host's directories read-only and nosuid (without /root, /home
// and the directory of the workdirs); with one (Config.RootFS), the image
// and none of the host's files (see below). Either way a private /tmp (the
// workdir's gvpn-tmp), /dev, /dev/shm, /proc and /sys, the sandbox's
// /etc/hosts and /etc/hostname, and the activity's volumes (package
// volume) are mounted on it. Every payload process is forked into those
// namespaces and runs as the payload user (nobody by default) with
// no_new_privs, with only stdin, stdout and stderr open and only the
// request's environment, and cannot create user namespaces (a seccomp
// filter, see denyUserNamespaces). When the init dies — Close, or the
// runtime's death, through its parent-death signal — every process in the
// PID namespace dies with it. Sweep removes what runtimes that died left
// behind.
//
// It is not a virtual machine: the payload runs on the host's kernel and,
// without an image, can read the host's world-readable files outside the
// hidden directories. docs/provider.md says what it isolates and what it
// does not.
//
// # Identity: a user namespace per activity
//
// A runtime that can (CanMapIDRanges: root has CAP_SETUID, CAP_SETGID and
// CAP_SYS_ADMIN) gives each sandbox IDRangeSize host uids and gids of its
// own, allocated round robin and recorded beside the owner record
// (/run/gvpn/NAME/ids); every payload process runs in a user namespace
// that maps ids 0 to IDRangeSize-1 to that range. Config.User is an id
// inside: nobody (65534) by default, an image's root (0) by default with
// an image. So the host sees each activity as its own unprivileged user:
// one activity cannot enter another's volume directories (mode 2770,
// owned by the activity's uid, group the runtime's), whatever directory
// they are in. The payload's other namespaces (network, mount, PID, UTS,
// IPC) belong to the host's user namespace, where it has no capability;
// only the root of the payload's namespace keeps CHOWN, DAC_OVERRIDE,
// FOWNER, FSETID, KILL, SETUID and SETGID, which act on files whose owner
// and group are both the activity's (its image, its layer) and on its own
// processes. Close and Sweep give the volume directories back to the
// runtime's uid, so that a range handed out again cannot enter them. A
// runtime without those capabilities (file capabilities only) maps
// nothing: payloads run as a host user, its own, shared by its
// activities.
//
// The shim starts a second stage in the new user namespace (see
// runRelay) because a Go program cannot join a user namespace, only
// create one with a child, and the child's id maps must be written
// through a /proc whose pids are the parent's: the runtime's starter
// thread sees the payload's /proc but host pids, the shim sees both in
// the sandbox's PID namespace.
//
// # Images
//
// With Config.RootFS the init mounts the image itself, in its own mount
// namespace: a squashfs (a plain one, or a GVMI's front part up to
// RootFS.Size) through a read-only loop device with autoclear (package
// loopdev), which the kernel frees when the namespace ends; or a
// directory. The image is idmapped (MOUNT_ATTR_IDMAP) with the
// activity's mapping: its uid 0 is the range's first host id, and inside
// its files keep their owners (shifted, not the overflow id), so an image
// that expects root can change its own files. That works for squashfs and
// ext4 lower layers on Linux 6.18 (measured: an image file of uid 0 shows
// as the range's first id on the host, 0 inside). Over the read-only image
// lies an overlay whose upper and work directories are the workdir's
// LayerDirName, removed by Close and Sweep: the payload writes there, as
// its host ids. Mount points the image lacks (volumes, /etc/hosts) are
// made in that layer, resolved with RESOLVE_IN_ROOT, so that an image's
// symbolic links never lead the init (the host's root) to host paths.
// The payload's programs come from the image only; the shim is executed
// there too, so the executable must be linked statically (UseShimBinary).
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
