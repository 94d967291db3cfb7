//go:build linux

package limits

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRecord(t *testing.T) {
	rec, err := parseRecord([]byte(`{"workdir":"/w/a","binds":["gvpn-tmp","vol-1"]}`))
	if err != nil || rec.Workdir != "/w/a" || len(rec.Binds) != 2 {
		t.Fatalf("%+v %v", rec, err)
	}
	for _, bad := range []string{`{"workdir":"w"}`, `{"workdir":"/w/../x"}`, `{"workdir":"/w","binds":["../etc"]}`,
		`{"workdir":"/w","binds":["/etc"]}`, `{"workdir":"/w","binds":[""]}`, `[`, ``} {
		if _, err := parseRecord([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// FuzzParseRecord: whatever a record holds, what Sweep would unmount lies
// inside an absolute workdir.
func FuzzParseRecord(f *testing.F) {
	f.Add([]byte(`{"workdir":"/w/a","binds":["gvpn-tmp","vol-1"]}`))
	f.Add([]byte(`{"workdir":"/","binds":["a/b"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := parseRecord(b)
		if err != nil {
			return
		}
		if !filepath.IsAbs(rec.Workdir) {
			t.Fatalf("workdir %q", rec.Workdir)
		}
		for _, r := range rec.Binds {
			p := filepath.Join(rec.Workdir, r)
			if p == rec.Workdir || !strings.HasPrefix(p, strings.TrimSuffix(rec.Workdir, "/")+"/") {
				t.Fatalf("bind %q leaves the workdir %q", r, rec.Workdir)
			}
		}
	})
}

func FuzzFromArgs(f *testing.F) {
	f.Add("--cpu-cores 2 --mem-gib=0.5 -storage-gib 1")
	f.Add("--mem-gib")
	f.Fuzz(func(t *testing.T, s string) {
		l := FromArgs(strings.Fields(s))
		if l.CPUCores < 0 || l.MemBytes < 0 || l.StorageBytes < 0 || l.Pids != 0 {
			t.Fatalf("%q gave %+v", s, l)
		}
	})
}
