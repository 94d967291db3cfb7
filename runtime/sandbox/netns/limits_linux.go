//go:build linux

package netns

import (
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

// openLimits makes the cgroup and the disk; what the host cannot enforce
// is kept for Unenforced. Called by create after the volumes and /tmp
// exist and before the init starts (it must see the disk's binds).
func (s *Sandbox) openLimits(l limits.Limits) error {
	dirs := diskDirs(s.volumes)
	if s.rootfs != nil {
		dirs = append(dirs, LayerDirName)
	}
	set, err := limits.Open(s.name, s.workdir, l, dirs)
	if err != nil {
		return err
	}
	s.limits = set
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
func (s *Sandbox) Unenforced() []limits.Unenforced { return s.limits.Unenforced }

// Limits are the limits the sandbox was opened with.
func (s *Sandbox) Limits() limits.Limits { return s.limits.Limits }

// Usage is what the payload used so far: CPU, memory and processes from
// its cgroup (zero without one), bytes on its disk.
func (s *Sandbox) Usage() (limits.Usage, error) { return s.limits.Usage() }

// closeLimits logs what the payload used and removes the group and the
// disk; after every process is gone (teardown) or the init was killed.
func (s *Sandbox) closeLimits() error {
	u, ok, err := s.limits.Close()
	if ok {
		s.log.WithFields(u.Fields(s.limits.Limits)).Info("payload usage")
	}
	return err
}

// cgroupFiles are the cgroup.procs files a new process must join (none
// without a group) and the environment entry that names them, as the
// shim will see them after the report pipe (fd 3).
func (s *Sandbox) cgroupFiles() ([]*os.File, string, error) {
	if s.limits.Group == nil {
		return nil, "", nil
	}
	fs, err := s.limits.Group.ProcsFiles()
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
	// The OOM score is set right after (proc.OOMPayload in runShim).
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
