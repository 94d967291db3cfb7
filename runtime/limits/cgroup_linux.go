//go:build linux

package limits

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	statsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	"github.com/containerd/cgroups/v3/cgroup2"
	statsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Where cgroups live. Variables so that a test can run the v2 code on the
// hybrid host's empty unified hierarchy; nothing else changes them.
var (
	cgroupRoot = "/sys/fs/cgroup"
	// v2Root is the unified hierarchy used when the host runs cgroup v2
	// only.
	v2Root = "/sys/fs/cgroup"
)

// Parent is the cgroup (under the hierarchy's root) that holds every
// activity's group: /gvpn/NAME. At the root, not under the runtime's own
// cgroup: with v2 a cgroup that has processes (the ExeUnit's service) may
// not have children with controllers.
const Parent = "gvpn"

// Version says which cgroup version New uses on this host: 1 on a legacy or
// hybrid host (controllers on v1 hierarchies), 2 on a unified one.
func Version() int {
	if cgroups.Mode() == cgroups.Unified {
		return 2
	}
	return 1
}

// v1Controllers are the v1 hierarchies a group lives in.
var v1Controllers = []cgroup1.Name{cgroup1.Cpu, cgroup1.Cpuacct, cgroup1.Memory, cgroup1.Pids}

// Group is one activity's cgroup. Its methods are safe for concurrent use;
// Remove is idempotent.
type Group struct {
	name   string // NAME in /gvpn/NAME
	limits Limits

	mu      sync.Mutex
	v1      cgroup1.Cgroup
	v2      *cgroup2.Manager
	procs   []string // every cgroup.procs file of the group
	removed bool
}

// New creates the group /gvpn/name with l's CPU, memory and pids limits (a
// group left by a runtime that died under that name is removed first) and
// lists the limits the host cannot enforce. With no controller usable at
// all it returns a nil Group, the list, and no error: the payload then runs
// without a group. An error is a failure to set up what the host offers.
func New(name string, l Limits) (*Group, []Unenforced, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, nil, fmt.Errorf("limits: bad group name %q", name)
	}
	if err := removeGroup(name); err != nil {
		if denied(err) {
			return nil, allDenied(l, err), nil
		}
		return nil, nil, fmt.Errorf("limits: remove stale group %s: %w", name, err)
	}
	g := &Group{name: name, limits: l}
	var un []Unenforced
	var err error
	if Version() == 2 {
		un, err = g.create2(v2Root)
	} else {
		un, err = g.create1()
	}
	if err != nil {
		return nil, nil, err
	}
	if g.v1 == nil && g.v2 == nil {
		return nil, un, nil
	}
	return g, un, nil
}

func groupPath(name string) string { return "/" + Parent + "/" + name }

// missingV1 lists the v1 controllers this host has not mounted.
func missingV1() map[cgroup1.Name]bool {
	miss := map[cgroup1.Name]bool{}
	for _, c := range v1Controllers {
		if _, err := os.Stat(filepath.Join(cgroupRoot, string(c), "cgroup.procs")); err != nil {
			miss[c] = true
		}
	}
	return miss
}

// sameHierarchy reports whether the v1 controllers a and b are mounted
// together (cpu and cpuacct usually are: /sys/fs/cgroup/cpu,cpuacct).
func sameHierarchy(a, b cgroup1.Name) bool {
	pa, errA := filepath.EvalSymlinks(filepath.Join(cgroupRoot, string(a)))
	pb, errB := filepath.EvalSymlinks(filepath.Join(cgroupRoot, string(b)))
	return errA == nil && errB == nil && pa == pb
}

// unenforced lists l's limits that missing reports unenforced, each
// with its controller and why.
func unenforced(l Limits, missing func(string) bool, why string) []Unenforced {
	var un []Unenforced
	if l.CPUCores > 0 && missing("cpu") {
		un = append(un, Unenforced{"cpu", "no cpu controller" + why})
	}
	if l.MemBytes > 0 && missing("memory") {
		un = append(un, Unenforced{"memory", "no memory controller" + why})
	}
	if l.Pids > 0 && missing("pids") {
		un = append(un, Unenforced{"pids", "no pids controller" + why})
	}
	return un
}

// v1Subsystems are the library's handles of the v1 controllers not in
// skip.
func v1Subsystems(skip map[cgroup1.Name]bool) []cgroup1.Subsystem {
	var subs []cgroup1.Subsystem
	for _, c := range v1Controllers {
		if skip[c] {
			continue
		}
		switch c {
		case cgroup1.Cpu:
			subs = append(subs, cgroup1.NewCpu(cgroupRoot))
		case cgroup1.Cpuacct:
			subs = append(subs, cgroup1.NewCpuacct(cgroupRoot))
		case cgroup1.Memory:
			subs = append(subs, cgroup1.NewMemory(cgroupRoot))
		case cgroup1.Pids:
			subs = append(subs, cgroup1.NewPids(cgroupRoot))
		}
	}
	return subs
}

func (g *Group) create1() ([]Unenforced, error) {
	miss := missingV1()
	un := unenforced(g.limits, func(c string) bool { return miss[cgroup1.Name(c)] }, " (cgroup v1)")
	skip := maps.Clone(miss)
	if g.limits.CPUCores == 0 {
		// A group in the cpu hierarchy is one scheduling entity: all the
		// payload's threads together weigh what one host thread does. That
		// is the point with a quota; without one it only slows the payload
		// (a quarter of the agent path's throughput, make bench). The cpu
		// controller then stays out, and so does cpuacct where it shares
		// cpu's hierarchy (cpu,cpuacct): the usage then has no CPU time.
		skip[cgroup1.Cpu] = true
		if sameHierarchy(cgroup1.Cpu, cgroup1.Cpuacct) {
			skip[cgroup1.Cpuacct] = true
		}
	}
	subs := v1Subsystems(skip)
	if len(subs) == 0 {
		return un, nil
	}
	cg, err := cgroup1.New(cgroup1.StaticPath(groupPath(g.name)), v1Resources(g.limits, swapAccounted()),
		cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) { return subs, nil }))
	if err != nil {
		if denied(err) {
			return append(un, allDenied(g.limits, err)...), nil
		}
		return nil, fmt.Errorf("limits: create cgroup %s: %w", groupPath(g.name), err)
	}
	g.v1 = cg
	for _, s := range cg.Subsystems() {
		if p, ok := s.(interface{ Path(string) string }); ok {
			g.procs = append(g.procs, filepath.Join(p.Path(groupPath(g.name)), "cgroup.procs"))
		}
	}
	return un, nil
}

func (g *Group) create2(root string) ([]Unenforced, error) {
	b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return allDenied(g.limits, err), nil
	}
	have := strings.Fields(string(b))
	un := unenforced(g.limits, func(c string) bool { return !slices.Contains(have, c) }, " (cgroup v2)")
	res := v2Resources(g.limits, have, swapAccounted())
	m, err := cgroup2.NewManager(root, groupPath(g.name), res)
	if err != nil {
		if denied(err) {
			return append(un, allDenied(g.limits, err)...), nil
		}
		return nil, fmt.Errorf("limits: create cgroup %s: %w", groupPath(g.name), err)
	}
	g.v2 = m
	g.procs = []string{filepath.Join(root, groupPath(g.name), "cgroup.procs")}
	return un, nil
}

// denied reports whether err means this process may not create cgroups
// (not root, a read-only cgroupfs in a container).
func denied(err error) bool {
	return errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS)
}

// allDenied says every requested limit is unenforced because of err.
func allDenied(l Limits, err error) []Unenforced {
	un := unenforced(l, func(string) bool { return true }, "")
	for i := range un {
		un[i].Reason = fmt.Sprintf("cannot create a cgroup (%v)", err)
	}
	return un
}

// swapAccounted reports whether the host has swap the memory limit must
// also cover; without swap a swap limit is pointless (and v1 without swap
// accounting has no file to write it to).
func swapAccounted() bool {
	b, err := os.ReadFile("/proc/swaps")
	if err != nil || len(strings.Split(strings.TrimSpace(string(b)), "\n")) < 2 {
		return false
	}
	if Version() == 1 {
		_, err := os.Stat(filepath.Join(cgroupRoot, "memory", "memory.memsw.limit_in_bytes"))
		return err == nil
	}
	return true
}

// v1Resources is l for cgroup v1. With swap, memory+swap is held to the
// memory limit: the payload may not swap its way past it.
func v1Resources(l Limits, swap bool) *specs.LinuxResources {
	r := &specs.LinuxResources{}
	if q := cpuQuota(l.CPUCores); q > 0 {
		period := uint64(cpuPeriod)
		r.CPU = &specs.LinuxCPU{Quota: &q, Period: &period}
	}
	if l.MemBytes > 0 {
		m := l.MemBytes
		r.Memory = &specs.LinuxMemory{Limit: &m}
		if swap {
			r.Memory.Swap = &m
		}
	}
	if l.Pids > 0 {
		p := l.Pids
		r.Pids = &specs.LinuxPids{Limit: &p}
	}
	return r
}

// v2Resources is l for cgroup v2, with only the controllers the host has
// (have, from cgroup.controllers): asking for another fails the group.
// With swap, memory.swap.max is 0: the payload may not swap.
func v2Resources(l Limits, have []string, swap bool) *cgroup2.Resources {
	r := &cgroup2.Resources{}
	if q := cpuQuota(l.CPUCores); q > 0 && slices.Contains(have, "cpu") {
		period := uint64(cpuPeriod)
		r.CPU = &cgroup2.CPU{Max: cgroup2.NewCPUMax(&q, &period)}
	}
	if l.MemBytes > 0 && slices.Contains(have, "memory") {
		m := l.MemBytes
		r.Memory = &cgroup2.Memory{Max: &m}
		if swap {
			zero := int64(0)
			r.Memory.Swap = &zero
		}
	}
	if l.Pids > 0 && slices.Contains(have, "pids") {
		r.Pids = &cgroup2.Pids{Max: l.Pids}
	}
	return r
}

// Name is the group's name, NAME in /gvpn/NAME.
func (g *Group) Name() string { return g.name }

// Limits are the limits the group was made with.
func (g *Group) Limits() Limits { return g.limits }

// ProcsFiles opens every cgroup.procs file of the group for writing,
// close-on-exec. A process that writes "0" to each joins the group: the
// netns sandbox's shim does that before it execs the payload binary, so
// the payload and whatever it forks are in the group from their first
// instruction, on v1 and v2 alike. The caller closes the files.
func (g *Group) ProcsFiles() ([]*os.File, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.removed {
		return nil, errors.New("limits: group removed")
	}
	var fs []*os.File
	for _, p := range g.procs {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			for _, f := range fs {
				f.Close()
			}
			return nil, fmt.Errorf("limits: %w", err)
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// JoinSelf moves the calling process into the groups whose cgroup.procs
// files fs are (as ProcsFiles opened them), by writing "0" to each.
func JoinSelf(fs []*os.File) error {
	for _, f := range fs {
		if _, err := f.Write([]byte("0")); err != nil {
			return fmt.Errorf("join cgroup (%s): %w", f.Name(), err)
		}
	}
	return nil
}

// Add moves the process pid into the group. Use it only for a process
// that has not forked yet: children forked before stay where they were.
func (g *Group) Add(pid int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.procs {
		if err := os.WriteFile(p, []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("limits: add pid %d to %s: %w", pid, p, err)
		}
	}
	return nil
}

// Usage reads what the group's processes used so far.
func (g *Group) Usage() (Usage, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.removed {
		return Usage{}, errors.New("limits: group removed")
	}
	if g.v2 != nil {
		m, err := g.v2.Stat()
		if err != nil {
			return Usage{}, fmt.Errorf("limits: %w", err)
		}
		return usage2(m), nil
	}
	m, err := g.v1.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return Usage{}, fmt.Errorf("limits: %w", err)
	}
	return usage1(m), nil
}

func usage1(m *statsv1.Metrics) Usage {
	var u Usage
	if m.CPU != nil && m.CPU.Usage != nil {
		u.CPUSeconds = float64(m.CPU.Usage.Total) / 1e9
	}
	if m.Memory != nil && m.Memory.Usage != nil {
		u.PeakMemBytes, u.MemBytes = m.Memory.Usage.Max, m.Memory.Usage.Usage
	}
	if m.MemoryOomControl != nil {
		u.OOMKills = m.MemoryOomControl.OomKill
	}
	if m.Pids != nil {
		u.Pids = m.Pids.Current
	}
	return u
}

func usage2(m *statsv2.Metrics) Usage {
	var u Usage
	if m.CPU != nil {
		u.CPUSeconds = float64(m.CPU.UsageUsec) / 1e6
	}
	if m.Memory != nil {
		u.PeakMemBytes, u.MemBytes = m.Memory.MaxUsage, m.Memory.Usage
	}
	if m.MemoryEvents != nil {
		u.OOMKills = m.MemoryEvents.OomKill
	}
	if m.Pids != nil {
		u.Pids = m.Pids.Current
	}
	return u
}

// Remove kills every process left in the group and removes it. Call it
// once the payload was stopped; it is idempotent.
func (g *Group) Remove() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.removed {
		return nil
	}
	g.removed = true
	return removeGroup(g.name)
}

// removeTimeout bounds how long removing a group waits for its killed
// processes to leave it.
const removeTimeout = 5 * time.Second

// removeGroup kills what is in /gvpn/name in every hierarchy and removes
// the directories; a group that does not exist is no error. It reads
// cgroupfs by path rather than through the library's Load, which would
// refuse a group that exists in some hierarchies only (half created).
func removeGroup(name string) error {
	var dirs []string
	if Version() == 2 {
		dirs = []string{filepath.Join(v2Root, Parent, name)}
	} else {
		for _, c := range v1Controllers {
			dirs = append(dirs, filepath.Join(cgroupRoot, string(c), Parent, name))
		}
	}
	// The parent, /gvpn, stays: removing it once empty raced with another
	// runtime creating its group in it (ENOENT from its mkdir).
	var errs []error
	for _, d := range dirs {
		if err := killAndRmdir(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func killAndRmdir(dir string) error {
	deadline := time.Now().Add(removeTimeout)
	for {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("limits: remove cgroup %s: %w", dir, err)
		}
		// Processes are in it (or are still leaving it): kill them.
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Exists reports whether any directory of the group /gvpn/name is left, in
// any hierarchy: for tests and leak checks.
func Exists(name string) bool {
	dirs := []string{filepath.Join(v2Root, Parent, name)}
	for _, c := range v1Controllers {
		dirs = append(dirs, filepath.Join(cgroupRoot, string(c), Parent, name))
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			return true
		}
	}
	return false
}

// Check tells which of l's limits this host cannot enforce, by creating
// and removing a probe group (and a probe disk when l has storage), for
// `gvpn-runtime test`.
func Check(l Limits) []Unenforced {
	name := fmt.Sprintf(".probe-%d", os.Getpid())
	g, un, err := New(name, l)
	if err != nil {
		return allDenied(l, err)
	}
	if g != nil {
		if err := g.Remove(); err != nil {
			un = append(un, Unenforced{"cpu", err.Error()})
		}
	}
	if l.StorageBytes > 0 {
		if why := diskUnsupported(); why != "" {
			un = append(un, Unenforced{"storage", why})
		}
	}
	return un
}

// UsageOf reads the usage of the existing group /gvpn/name, made by
// another process (a runtime): for tests and the lab.
func UsageOf(name string) (Usage, error) {
	if Version() == 2 {
		m, err := cgroup2.Load(groupPath(name), cgroup2.WithMountpoint(v2Root))
		if err != nil {
			return Usage{}, fmt.Errorf("limits: %w", err)
		}
		st, err := m.Stat()
		if err != nil {
			return Usage{}, fmt.Errorf("limits: %w", err)
		}
		return usage2(st), nil
	}
	// The group's hierarchies: those it was made in (see create1).
	skip := missingV1()
	for _, c := range v1Controllers {
		if _, err := os.Stat(filepath.Join(cgroupRoot, string(c), Parent, name)); err != nil {
			skip[c] = true
		}
	}
	subs := v1Subsystems(skip)
	cg, err := cgroup1.Load(cgroup1.StaticPath(groupPath(name)),
		cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) { return subs, nil }))
	if err != nil {
		return Usage{}, fmt.Errorf("limits: %w", err)
	}
	st, err := cg.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return Usage{}, fmt.Errorf("limits: %w", err)
	}
	return usage1(st), nil
}

// CPURate is how many CPUs the group /gvpn/name used over the next d: its
// CPU time over the wall time, as the kernel counts it.
func CPURate(name string, d time.Duration) (float64, error) {
	u0, err := UsageOf(name)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	time.Sleep(d)
	u1, err := UsageOf(name)
	if err != nil {
		return 0, err
	}
	return (u1.CPUSeconds - u0.CPUSeconds) / time.Since(t0).Seconds(), nil
}
