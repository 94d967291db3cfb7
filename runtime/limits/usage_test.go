//go:build linux

package limits

import (
	"testing"

	statsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	statsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
)

func TestUsageConversion(t *testing.T) {
	u1 := usage1(&statsv1.Metrics{
		CPU:              &statsv1.CPUStat{Usage: &statsv1.CPUUsage{Total: 2_500_000_000}},
		Memory:           &statsv1.MemoryStat{Usage: &statsv1.MemoryEntry{Usage: 10, Max: 20}},
		MemoryOomControl: &statsv1.MemoryOomControl{OomKill: 1},
		Pids:             &statsv1.PidsStat{Current: 3},
	})
	u2 := usage2(&statsv2.Metrics{
		CPU:          &statsv2.CPUStat{UsageUsec: 2_500_000},
		Memory:       &statsv2.MemoryStat{Usage: 10, MaxUsage: 20},
		MemoryEvents: &statsv2.MemoryEvents{OomKill: 1},
		Pids:         &statsv2.PidsStat{Current: 3},
	})
	want := Usage{CPUSeconds: 2.5, PeakMemBytes: 20, MemBytes: 10, OOMKills: 1, Pids: 3}
	if u1 != want || u2 != want {
		t.Fatalf("v1 %+v, v2 %+v, want %+v", u1, u2, want)
	}
	if (usage1(&statsv1.Metrics{}) != Usage{}) || (usage2(&statsv2.Metrics{}) != Usage{}) {
		t.Fatal("empty metrics")
	}
	f := want.Fields(Limits{CPUCores: 1, MemBytes: 5})
	if f["cpu_seconds"] != 2.5 || f["cpu_cores_granted"] != 1.0 || f["mem_bytes_granted"] != int64(5) {
		t.Fatalf("fields %v", f)
	}
	if _, ok := f["disk_bytes_granted"]; ok {
		t.Fatal("disk granted without a storage limit")
	}
}
