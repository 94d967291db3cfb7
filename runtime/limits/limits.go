// Package limits holds an activity's payload to what the agreement granted:
// CPU cores, memory, processes and disk. A Group is the payload's cgroup
// (cgroup v1 or v2, whichever the host's controllers are on), a Disk the
// size-limited file system its writable directories live on. Every sandbox
// kind uses them: the netns sandbox puts each payload process in its Group
// before the payload binary runs and its volumes and /tmp on its Disk; the
// agent and VM sandboxes put their launcher (the agent command, QEMU) in
// theirs. The runtime itself stays outside the group, so an out-of-memory
// kill happens among the payload's processes, never to the runtime.
//
// Where the host cannot enforce a limit (no controller, no permission, no
// loop device), New and OpenDisk say which in Unenforced; the caller decides
// whether that is fatal. Sweep removes what a runtime that died left.
package limits

import (
	"cmp"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Limits is what one activity's payload may use. A zero field means no
// limit of that kind.
type Limits struct {
	// CPUCores is the CPU time per wall-clock second, in cores (1.5 = one
	// and a half CPUs' worth), enforced as a CFS quota.
	CPUCores float64
	// MemBytes bounds the payload's memory (RSS, page cache, tmpfs): past
	// it the kernel reclaims, then kills a payload process.
	MemBytes int64
	// Pids bounds the payload's processes and threads together.
	Pids int64
	// StorageBytes is the size of the file system the payload writes to.
	StorageBytes int64
}

// DefaultPids is the pids limit when the operator sets none: plenty for a
// build or a server, a wall for a fork bomb.
const DefaultPids = 4096

// GiB is 2^30 bytes: the agreement's --mem-gib and --storage-gib unit.
const GiB = 1 << 30

// Parse builds Limits from the ExeUnit's flags (empty = no limit): cores a
// non-negative number, memGiB and storageGiB non-negative numbers of GiB.
// Errors name the flag.
func Parse(cores, memGiB, storageGiB string, pids int64) (Limits, error) {
	var l Limits
	num := func(flag, v string) (float64, error) {
		if v == "" {
			return 0, nil
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			// ParseFloat takes NaN and Inf, which are no amount.
			return 0, fmt.Errorf("--%s: %q is not a finite non-negative number", flag, v)
		}
		return f, nil
	}
	var err1, err2, err3 error
	l.CPUCores, err1 = num("cpu-cores", cores)
	mem, err2 := num("mem-gib", memGiB)
	st, err3 := num("storage-gib", storageGiB)
	// The first bad flag only: a command-line error is one line.
	if err := cmp.Or(err1, err2, err3); err != nil {
		return Limits{}, err
	}
	if mem*GiB > math.MaxInt64/2 || st*GiB > math.MaxInt64/2 {
		return Limits{}, fmt.Errorf("--mem-gib %s or --storage-gib %s is too large", memGiB, storageGiB)
	}
	if pids < 0 {
		return Limits{}, fmt.Errorf("pids limit %d is negative", pids)
	}
	l.MemBytes, l.StorageBytes, l.Pids = int64(mem*GiB), int64(st*GiB), pids
	return l, nil
}

// cpuPeriod is the CFS period, in µs (the kernel's default).
const cpuPeriod = 100000

// minQuota is the smallest CFS quota the kernel accepts, in µs.
const minQuota = 1000

// cpuQuota is the CFS quota per cpuPeriod for cores, 0 for no limit.
func cpuQuota(cores float64) int64 {
	if cores <= 0 {
		return 0
	}
	return max(int64(math.Round(cores*cpuPeriod)), minQuota)
}

// Unenforced is a requested limit the host cannot enforce, and why.
type Unenforced struct {
	Limit  string // "cpu", "memory", "pids" or "storage"
	Reason string
}

func (u Unenforced) String() string { return u.Limit + ": " + u.Reason }

// Describe lists unenforced limits for a log line or an error.
func Describe(us []Unenforced) string {
	s := make([]string, len(us))
	for i, u := range us {
		s[i] = u.String()
	}
	return strings.Join(s, "; ")
}

// Usage is what the payload used, as the cgroup and the disk count it.
type Usage struct {
	CPUSeconds   float64 // CPU time of every payload process, user and system
	PeakMemBytes uint64  // the highest memory use seen (0 where the kernel keeps no peak)
	MemBytes     uint64  // memory use now
	OOMKills     uint64  // payload processes killed for memory
	Pids         uint64  // processes and threads now
	DiskBytes    uint64  // bytes in use on the activity's disk
}

// Fields is u with the granted limits l, for a structured log line: each
// measurement beside what the agreement granted.
func (u Usage) Fields(l Limits) map[string]any {
	f := map[string]any{
		"cpu_seconds":    math.Round(u.CPUSeconds*1000) / 1000,
		"mem_peak_bytes": u.PeakMemBytes,
		"oom_kills":      u.OOMKills,
		"disk_bytes":     u.DiskBytes,
	}
	if l.CPUCores > 0 {
		f["cpu_cores_granted"] = l.CPUCores
	}
	if l.MemBytes > 0 {
		f["mem_bytes_granted"] = l.MemBytes
	}
	if l.StorageBytes > 0 {
		f["disk_bytes_granted"] = l.StorageBytes
	}
	return f
}

// FromArgs finds the agreement's flags (--cpu-cores, --mem-gib,
// --storage-gib, as "--flag value" or "--flag=value") in a runtime's
// command line and parses them; what is missing or bad is no limit. For
// tools that show usage against what was granted.
func FromArgs(args []string) Limits {
	v := map[string]string{}
	for i, a := range args {
		name, val, eq := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			continue
		}
		if !eq && i+1 < len(args) {
			val = args[i+1]
		}
		v[name] = val
	}
	l, _ := Parse(v["cpu-cores"], v["mem-gib"], v["storage-gib"], 0)
	return l
}
