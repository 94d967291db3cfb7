package vm

import (
	"math"
	"path/filepath"

	"github.com/gvpn/gvpn/runtime/limits"
)

// QEMUOverheadBytes is what QEMU itself needs beside the guest's memory
// (device models, the TCG translation cache held to tcgCacheMiB): the VM's
// cgroup allows the guest's memory plus this, so that a guest using all of
// its memory is not killed from outside. The payload's memory is bounded
// by the guest's size; its OOM killer acts inside the guest.
const QEMUOverheadBytes = 256 << 20

// qemuPids is the least pids limit on QEMU's cgroup.
const qemuPids = 1024

// tcgCacheMiB bounds QEMU's translation cache under TCG when memory is
// limited (QEMU's default is 1 GiB, more than a small agreement).
const tcgCacheMiB = 64

// sizeForLimits sizes the guest from the agreement: its memory is the
// granted memory, its CPUs the granted cores rounded up (the CPU quota on
// QEMU's cgroup holds them to the fraction). It returns the limits for
// QEMU's cgroup and the workdir-relative volume directories to put on the
// activity's disk.
func sizeForLimits(cfg *Config) (limits.Limits, []string) {
	l := cfg.Limits
	if l.MemBytes > 0 {
		cfg.MemoryMiB = max(64, int(l.MemBytes>>20))
		l.MemBytes += QEMUOverheadBytes
	}
	if l.CPUCores > 0 {
		cfg.CPUs = max(1, int(math.Ceil(l.CPUCores)))
	}
	// The payload's processes are the guest's; QEMU's own threads (its
	// I/O pool alone may grow to 64) must not meet the payload's limit.
	if l.Pids > 0 {
		l.Pids = max(l.Pids, qemuPids)
	}
	var dirs []string
	for _, v := range cfg.Volumes {
		if rel, err := filepath.Rel(cfg.Workdir, v.Host); err == nil && filepath.IsLocal(rel) {
			dirs = append(dirs, rel)
		}
	}
	return l, dirs
}
