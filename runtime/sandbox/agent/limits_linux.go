//go:build linux

package agent

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/gvpn/gvpn/runtime/limits"
)

// The agreement's limits in the agent sandbox: the command (the agent
// command's shell, or QEMU) joins the activity's cgroup before it runs, so
// the payload and everything the command starts are in it; the runtime is
// not. With a storage limit the directories of Config.DiskDirs (the host
// volumes a VM shares) live on the activity's disk.

// openLimits makes the cgroup and the disk when Config.LimitsName is set.
func (b *Box) openLimits() error {
	name, l := b.cfg.LimitsName, b.cfg.Limits
	if name == "" {
		return nil
	}
	if l.StorageBytes > 0 {
		switch {
		case len(b.cfg.DiskDirs) == 0:
			b.unenforced = append(b.unenforced, limits.Unenforced{Limit: "storage",
				Reason: "the payload writes where " + b.cfg.Launcher + " puts it, outside the activity's workdir"})
		default:
			d, err := limits.OpenDisk(name, b.cfg.Workdir, l.StorageBytes)
			if errors.Is(err, limits.ErrNoDisk) {
				b.unenforced = append(b.unenforced, limits.Unenforced{Limit: "storage", Reason: err.Error()})
				break
			}
			if err != nil {
				return err
			}
			b.disk = d
			for _, rel := range b.cfg.DiskDirs {
				if err := d.Bind(rel); err != nil {
					return err
				}
			}
		}
	}
	g, un, err := limits.New(name, l)
	if err != nil {
		return err
	}
	b.group = g
	b.unenforced = append(b.unenforced, un...)
	if b.cfg.RequireLimits && len(b.unenforced) > 0 {
		return fmt.Errorf("%w: %s", ErrUnenforced, limits.Describe(b.unenforced))
	}
	return nil
}

// ErrUnenforced: Config.RequireLimits and a limit cannot be enforced.
var ErrUnenforced = errors.New("agent sandbox: the agreement's limits cannot be enforced here")

// Unenforced lists the limits of Config.Limits this host (or this kind of
// payload) could not enforce.
func (b *Box) Unenforced() []limits.Unenforced { return b.unenforced }

// Limits are the limits the Box was opened with.
func (b *Box) Limits() limits.Limits { return b.cfg.Limits }

// Usage is what the command and everything it started used so far (for a
// VM: QEMU, whose memory and CPU are the guest's), and the bytes on the
// activity's disk.
func (b *Box) Usage() (limits.Usage, error) {
	var u limits.Usage
	var errs []error
	if b.group != nil {
		var err error
		u, err = b.group.Usage()
		errs = append(errs, err)
	}
	if b.disk != nil {
		n, err := b.disk.Used()
		u.DiskBytes = n
		errs = append(errs, err)
	}
	return u, errors.Join(errs...)
}

// closeLimits logs the usage and removes the group (killing what the
// command left in it) and the disk; after the command was stopped.
func (b *Box) closeLimits() error {
	if b.group == nil && b.disk == nil {
		return nil
	}
	if u, err := b.Usage(); err == nil {
		b.log.WithFields(u.Fields(b.cfg.Limits)).Info("payload usage")
	}
	var errs []error
	if b.group != nil {
		errs = append(errs, b.group.Remove())
	}
	if b.disk != nil {
		errs = append(errs, b.disk.Close())
	}
	return errors.Join(errs...)
}

// limitArgv wraps the command's argv so that it joins the group first: a
// shell writes "0" to each cgroup.procs descriptor (fds 3, 4, … from
// ExtraFiles), closes them and then runs the command in its place. It
// returns argv unchanged and no files without a group.
func (b *Box) limitArgv(argv []string) ([]string, []*os.File, error) {
	if b.group == nil {
		return argv, nil, nil
	}
	fs, err := b.group.ProcsFiles()
	if err != nil {
		return nil, nil, err
	}
	var join, closeFDs []string
	for i := range fs {
		fd := strconv.Itoa(3 + i)
		join = append(join, "echo 0 >&"+fd)
		closeFDs = append(closeFDs, fd+">&-")
	}
	script := fmt.Sprintf(`{ %s; } || { echo "gvpn: cannot join the activity's cgroup" >&2; exit 125; }; exec %s; exec "$@"`,
		strings.Join(join, " && "), strings.Join(closeFDs, " "))
	return append([]string{"/bin/sh", "-c", script, "gvpn-limits"}, argv...), fs, nil
}
