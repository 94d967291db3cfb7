package vm

import (
	"slices"
	"testing"

	"github.com/gvpn/gvpn/runtime/limits"
)

func TestSizeForLimits(t *testing.T) {
	cfg := Config{MemoryMiB: 512, CPUs: 4, Workdir: "/w",
		Volumes: []Volume{{Host: "/w/vol-a", Guest: "/golem/work"}, {Host: "/elsewhere", Guest: "/x"}},
		Limits:  limits.Limits{CPUCores: 1.5, MemBytes: 256 << 20, Pids: 64, StorageBytes: 1 << 30}}
	l, dirs := sizeForLimits(&cfg)
	if cfg.MemoryMiB != 256 || cfg.CPUs != 2 {
		t.Errorf("guest %d MiB, %d CPUs; want 256 MiB, 2 CPUs", cfg.MemoryMiB, cfg.CPUs)
	}
	if l.MemBytes != 256<<20+QEMUOverheadBytes || l.CPUCores != 1.5 || l.Pids != qemuPids {
		t.Errorf("QEMU's cgroup limits %+v", l)
	}
	if !slices.Equal(dirs, []string{"vol-a"}) {
		t.Errorf("disk dirs %v, want only the volume inside the workdir", dirs)
	}
	if got := accelArg(cfg, "tcg"); got != "tcg,tb-size=64" {
		t.Errorf("accel %q", got)
	}
	if got := accelArg(cfg, "kvm"); got != "kvm" {
		t.Errorf("accel %q", got)
	}

	// Without an agreement the operator's flags size the guest.
	cfg = Config{MemoryMiB: 512, CPUs: 1}
	if l, _ := sizeForLimits(&cfg); cfg.MemoryMiB != 512 || cfg.CPUs != 1 || l != (limits.Limits{}) || accelArg(cfg, "tcg") != "tcg" {
		t.Errorf("no limits: %+v %+v", cfg, l)
	}
	// A tiny agreement still boots a guest.
	cfg = Config{Limits: limits.Limits{MemBytes: 1 << 20}}
	if sizeForLimits(&cfg); cfg.MemoryMiB != 64 {
		t.Errorf("1 MiB agreement: guest %d MiB, want the 64 MiB minimum", cfg.MemoryMiB)
	}
}
