//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/volume"
)

// The agreement's limits in the netns sandbox: every payload process joins
// the activity's cgroup (limits.Group, named like the sandbox) in the shim,
// before the payload binary runs, so neither it nor anything it forks is
// ever outside; the init is not in it (it runs no payload code, and a
// memory kill in the group must not take the whole sandbox down). The
// volumes' directories and /tmp live on the activity's disk (limits.Disk)
// when the agreement sizes storage.

// cgroupFDsEnv tells the shim which of its descriptors are cgroup.procs
// files to join ("4,5,6"). Start puts it first in the shim's environment
// and the shim removes it: the payload never sees it.
const cgroupFDsEnv = "__GVPN_CGROUP_FDS"

// openLimits makes the disk and the cgroup; what the host cannot enforce
// is kept for Unenforced. Called by create after the volumes and /tmp
// exist and before the init starts (it must see the disk's binds).
func (s *Sandbox) openLimits(l limits.Limits) error {
	s.limits = l
	if l.StorageBytes > 0 {
		d, err := limits.OpenDisk(s.name, s.workdir, l.StorageBytes)
		switch {
		case errors.Is(err, limits.ErrNoDisk):
			s.unenforced = append(s.unenforced, limits.Unenforced{Limit: "storage", Reason: err.Error()})
		case err != nil:
			return err
		default:
			s.disk = d
			for _, rel := range diskDirs(s.volumes) {
				if err := d.Bind(rel); err != nil {
					return err
				}
			}
		}
	}
	g, un, err := limits.New(s.name, l)
	if err != nil {
		return err
	}
	s.group = g
	s.unenforced = append(s.unenforced, un...)
	return nil
}

// diskDirs are the workdir directories the payload writes to: /tmp and
// every host and storage volume.
func diskDirs(vols volume.List) []string {
	dirs := []string{TmpDirName}
	for _, v := range vols {
		if v.Name != "" {
			dirs = append(dirs, v.Name)
		}
	}
	return dirs
}

// Unenforced lists the limits of Config.Limits this host could not
// enforce (no controller, no permission, no loop device).
func (s *Sandbox) Unenforced() []limits.Unenforced { return s.unenforced }

// Limits are the limits the sandbox was opened with.
func (s *Sandbox) Limits() limits.Limits { return s.limits }

// Usage is what the payload used so far: CPU, memory and processes from
// its cgroup (zero without one), bytes on its disk.
func (s *Sandbox) Usage() (limits.Usage, error) {
	var u limits.Usage
	var errs []error
	if s.group != nil {
		var err error
		u, err = s.group.Usage()
		errs = append(errs, err)
	}
	if s.disk != nil {
		n, err := s.disk.Used()
		u.DiskBytes = n
		errs = append(errs, err)
	}
	return u, errors.Join(errs...)
}

// closeLimits logs what the payload used and removes the group and the
// disk; after every process is gone (teardown) or the init was killed.
func (s *Sandbox) closeLimits() error {
	if s.group == nil && s.disk == nil {
		return nil
	}
	if u, err := s.Usage(); err == nil {
		s.log.WithFields(u.Fields(s.limits)).Info("payload usage")
	}
	var errs []error
	if s.group != nil {
		errs = append(errs, s.group.Remove())
	}
	if s.disk != nil {
		errs = append(errs, s.disk.Close())
	}
	return errors.Join(errs...)
}

// cgroupFiles are the cgroup.procs files a new process must join (none
// without a group) and the environment entry that names them, as the
// shim will see them after the report pipe (fd 3).
func (s *Sandbox) cgroupFiles() ([]*os.File, string, error) {
	if s.group == nil {
		return nil, "", nil
	}
	fs, err := s.group.ProcsFiles()
	if err != nil {
		return nil, "", err
	}
	fds := make([]string, len(fs))
	for i := range fs {
		fds[i] = strconv.Itoa(shimReportFD + 1 + i)
	}
	return fs, cgroupFDsEnv + "=" + strings.Join(fds, ","), nil
}

// joinCgroupFDs is the shim's first step: join the cgroups whose
// cgroup.procs descriptors the environment names, close them and remove
// the entry. No entry, nothing to do.
func joinCgroupFDs() error {
	v, ok := os.LookupEnv(cgroupFDsEnv)
	if !ok {
		return nil
	}
	os.Unsetenv(cgroupFDsEnv)
	var fs []*os.File
	for _, f := range strings.Split(v, ",") {
		fd, err := strconv.Atoi(f)
		if err != nil || fd <= shimReportFD {
			return fmt.Errorf("bad %s %q", cgroupFDsEnv, v)
		}
		fs = append(fs, os.NewFile(uintptr(fd), "cgroup.procs"))
	}
	defer func() {
		for _, f := range fs {
			f.Close()
		}
	}()
	return limits.JoinSelf(fs)
}

// withoutCgroupEnv drops a requestor's entry of the shim's variable.
func withoutCgroupEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, cgroupFDsEnv+"=") {
			out = append(out, kv)
		}
	}
	return out
}
