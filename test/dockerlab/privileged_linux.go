package dockerlab

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// capNames are the Linux capabilities by number, as docker's --cap-drop
// names them.
var capNames = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
	"IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
	"LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

// PrivilegedArgs returns the docker run flags for a privileged container
// on this host, and a note when they are not --privileged itself.
//
// --privileged asks the runtime for every capability; where this host's
// own bounding set lacks one (a host that is itself a container, without
// CAP_SYS_RESOURCE say), runc fails with "unable to apply caps". Then the
// container gets every capability the host has, no seccomp or AppArmor
// profile, unmasked /proc and /sys, and /dev/net/tun: what the nodes use
// of --privileged.
func PrivilegedArgs() (args []string, note string) {
	missing := missingCaps()
	if len(missing) == 0 {
		return []string{"--privileged"}, ""
	}
	args = []string{"--cap-add", "ALL"}
	for _, c := range missing {
		args = append(args, "--cap-drop", c)
	}
	args = append(args, "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
		"--security-opt", "systempaths=unconfined", "--device", "/dev/net/tun")
	return args, fmt.Sprintf("this host lacks %s, so --privileged cannot work here: node containers get every capability it has instead",
		strings.Join(missing, ", "))
}

// missingCaps lists the capabilities this process's bounding set lacks.
func missingCaps() []string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil
	}
	for _, l := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(l, "CapBnd:")
		if !ok {
			continue
		}
		set, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return nil
		}
		var missing []string
		for i, name := range capNames {
			if set&(1<<i) == 0 {
				missing = append(missing, name)
			}
		}
		return missing
	}
	return nil
}
