//go:build linux

package agent

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/proc"
)

// The agreement's limits in the agent sandbox: the command (the agent
// command's shell, or QEMU) joins the activity's cgroup before it runs, so
// the payload and everything the command starts are in it; the runtime is
// not. With a storage limit the directories of Launch.DiskDirs (the host
// volumes a VM shares) live on the activity's disk.

// openLimits makes the cgroup and the disk when Launch.LimitsName is set.
func (l *launcher) openLimits() error {
	if l.cfg.LimitsName == "" {
		return nil
	}
	set, err := limits.Open(l.cfg.LimitsName, l.cfg.Workdir, l.cfg.Limits, l.cfg.DiskDirs)
	if err != nil {
		return err
	}
	l.limits = set
	if l.cfg.Limits.StorageBytes > 0 && len(l.cfg.DiskDirs) == 0 {
		set.Unenforced = append(set.Unenforced, limits.Unenforced{Limit: "storage",
			Reason: "the payload writes where " + l.cfg.Name + " puts it, outside the activity's workdir"})
	}
	if l.cfg.RequireLimits && len(set.Unenforced) > 0 {
		err := fmt.Errorf("%w: %s", ErrUnenforced, limits.Describe(set.Unenforced))
		if _, _, cerr := set.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return err
	}
	return nil
}

// ErrUnenforced: Launch.RequireLimits and a limit cannot be enforced.
var ErrUnenforced = errors.New("agent sandbox: the agreement's limits cannot be enforced here")

// Unenforced lists the limits of Launch.Limits this host (or this kind of
// payload) could not enforce.
func (b *Box) Unenforced() []limits.Unenforced { return b.launch.limits.Unenforced }

// Limits are what the agreement granted (Launch.Granted, else
// Launch.Limits): what the usage is measured against.
func (b *Box) Limits() limits.Limits { return b.launch.granted() }

// Usage is what the command and everything it started used so far (for a
// VM: QEMU, whose memory and CPU are the guest's), and the bytes on the
// activity's disk.
func (b *Box) Usage() (limits.Usage, error) { return b.launch.limits.Usage() }

func (l *launcher) granted() limits.Limits {
	if l.cfg.Granted != (limits.Limits{}) {
		return l.cfg.Granted
	}
	return l.cfg.Limits
}

// closeLimits logs the usage and removes the group (killing what the
// command left in it) and the disk; after the command was stopped.
func (l *launcher) closeLimits() error {
	u, ok, err := l.limits.Close()
	if ok {
		l.log.WithFields(u.Fields(l.granted())).Info("payload usage")
	}
	if err != nil {
		return fmt.Errorf("agent sandbox: %w", err)
	}
	return nil
}

// limitArgv wraps the command's argv so that it joins the group first: a
// shell writes "0" to each cgroup.procs descriptor (fds 3, 4, … from
// ExtraFiles), closes them and then runs the command in its place. It
// returns argv unchanged and no files without a group.
func (l *launcher) limitArgv(argv []string) ([]string, []*os.File, error) {
	if l.limits.Group == nil {
		return argv, nil, nil
	}
	fs, err := l.limits.Group.ProcsFiles()
	if err != nil {
		return nil, nil, err
	}
	var join, closeFDs []string
	for i := range fs {
		fd := strconv.Itoa(3 + i)
		join = append(join, "echo 0 >&"+fd)
		closeFDs = append(closeFDs, fd+">&-")
	}
	// The command is the OOM killer's first choice (proc.OOMPayload, as
	// the runtime also sets once it runs): the runtime's own protection
	// must not reach the payload.
	script := fmt.Sprintf(`{ %s; } || { echo "gvpn: cannot join the activity's cgroup" >&2; exit 125; }; exec %s; echo %d >/proc/self/oom_score_adj 2>/dev/null; exec "$@"`,
		strings.Join(join, " && "), strings.Join(closeFDs, " "), proc.OOMPayload)
	return append([]string{"/bin/sh", "-c", script, "gvpn-limits"}, argv...), fs, nil
}

// The agreement's limits as the command's environment (set when the
// agreement has them): a command whose payload is not its child — a
// container a daemon starts (docker run) — escapes the command's cgroup
// and must pass them on itself (docker run --cpus, --memory,
// --pids-limit, a storage option).
const (
	EnvCPUCores     = "GVPN_CPU_CORES"
	EnvMemoryBytes  = "GVPN_MEMORY_BYTES"
	EnvPidsLimit    = "GVPN_PIDS_LIMIT"
	EnvStorageBytes = "GVPN_STORAGE_BYTES"
)

func limitEnv(l limits.Limits) []string {
	var env []string
	if l.CPUCores > 0 {
		env = append(env, EnvCPUCores+"="+strconv.FormatFloat(l.CPUCores, 'f', -1, 64))
	}
	if l.MemBytes > 0 {
		env = append(env, EnvMemoryBytes+"="+strconv.FormatInt(l.MemBytes, 10))
	}
	if l.Pids > 0 {
		env = append(env, EnvPidsLimit+"="+strconv.FormatInt(l.Pids, 10))
	}
	if l.StorageBytes > 0 {
		env = append(env, EnvStorageBytes+"="+strconv.FormatInt(l.StorageBytes, 10))
	}
	return env
}
