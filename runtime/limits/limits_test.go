package limits

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	l, err := Parse("1", "0.25", "0.1", 64)
	if err != nil {
		t.Fatal(err)
	}
	want := Limits{CPUCores: 1, MemBytes: GiB / 4, Pids: 64, StorageBytes: 107374182}
	if l != want {
		t.Fatalf("got %+v, want %+v", l, want)
	}
	if l, err := Parse("", "", "", 0); err != nil || l != (Limits{}) {
		t.Fatalf("empty flags: %+v %v", l, err)
	}
	for _, bad := range [][3]string{{"-1", "", ""}, {"", "x", ""}, {"", "", "NaN"}, {"", "Inf", ""}, {"", "", "1e300"}} {
		_, err := Parse(bad[0], bad[1], bad[2], 0)
		if err == nil {
			t.Errorf("Parse(%q) accepted", bad)
			continue
		}
		flag := map[bool]string{true: "cpu-cores", false: ""}[bad[0] != ""]
		if flag != "" && !strings.Contains(err.Error(), flag) {
			t.Errorf("Parse(%q): %v does not name --%s", bad, err, flag)
		}
	}
	if _, err := Parse("", "", "", -1); err == nil {
		t.Error("negative pids accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("1", "0.25", "0.1")
	f.Add("", "", "")
	f.Add("0.5", "1e3", "-0")
	f.Fuzz(func(t *testing.T, c, m, s string) {
		l, err := Parse(c, m, s, DefaultPids)
		if err != nil {
			return
		}
		if l.CPUCores < 0 || l.MemBytes < 0 || l.StorageBytes < 0 || cpuQuota(l.CPUCores) < 0 {
			t.Fatalf("negative limit from %q %q %q: %+v", c, m, s, l)
		}
	})
}

func TestCPUQuota(t *testing.T) {
	for cores, want := range map[float64]int64{0: 0, -1: 0, 1: 100000, 1.5: 150000, 0.001: minQuota, 16: 1600000} {
		if got := cpuQuota(cores); got != want {
			t.Errorf("cpuQuota(%v) = %d, want %d", cores, got, want)
		}
	}
}

func TestV1Resources(t *testing.T) {
	l := Limits{CPUCores: 2, MemBytes: 1 << 28, Pids: 64}
	r := v1Resources(l, false)
	if *r.CPU.Quota != 200000 || *r.CPU.Period != cpuPeriod {
		t.Errorf("cpu %d/%d", *r.CPU.Quota, *r.CPU.Period)
	}
	if *r.Memory.Limit != 1<<28 || r.Memory.Swap != nil {
		t.Errorf("memory %+v", r.Memory)
	}
	if *r.Pids.Limit != 64 {
		t.Errorf("pids %d", *r.Pids.Limit)
	}
	if r := v1Resources(l, true); *r.Memory.Swap != 1<<28 {
		t.Errorf("with swap: memsw %d, want the memory limit", *r.Memory.Swap)
	}
	if r := v1Resources(Limits{}, true); r.CPU != nil || r.Memory != nil || r.Pids != nil {
		t.Errorf("no limits gave %+v", r)
	}
}

// The v2 code path: this is all of it that runs without a v2-only host.
func TestV2Resources(t *testing.T) {
	l := Limits{CPUCores: 1, MemBytes: 1 << 28, Pids: 64}
	r := v2Resources(l, []string{"cpuset", "cpu", "io", "memory", "pids"}, true)
	if got := string(r.CPU.Max); got != "100000 100000" {
		t.Errorf("cpu.max %q", got)
	}
	if *r.Memory.Max != 1<<28 || *r.Memory.Swap != 0 {
		t.Errorf("memory %+v", r.Memory)
	}
	if r.Pids.Max != 64 {
		t.Errorf("pids %d", r.Pids.Max)
	}
	if got := strings.Join(r.EnabledControllers(), " "); got != "cpu memory pids" {
		t.Errorf("controllers %q", got)
	}
	// A controller the host lacks is not asked for (writing its file
	// would fail the group); New reports it as unenforced instead.
	r = v2Resources(l, []string{"memory"}, false)
	if r.CPU != nil || r.Pids != nil || r.Memory.Swap != nil {
		t.Errorf("got %+v", r)
	}
	un := unenforced(l, func(c string) bool { return c != "memory" }, " (test)")
	if Describe(un) != "cpu: no cpu controller (test); pids: no pids controller (test)" {
		t.Errorf("unenforced: %s", Describe(un))
	}
}

func TestFromArgs(t *testing.T) {
	l := FromArgs([]string{"--log-level", "debug", "--cpu-cores", "2", "--mem-gib=0.5", "-storage-gib", "1"})
	if l != (Limits{CPUCores: 2, MemBytes: GiB / 2, StorageBytes: GiB}) {
		t.Fatalf("got %+v", l)
	}
	if FromArgs([]string{"--cpu-cores"}) != (Limits{}) || FromArgs([]string{"--mem-gib", "x"}) != (Limits{}) {
		t.Fatal("a flag without a good value is no limit")
	}
}
