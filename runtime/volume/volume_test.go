package volume

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestPlanDefault(t *testing.T) {
	l, err := Plan("")
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 1 || l[0].Path != DefaultPath || l[0].Kind != Host || !strings.HasPrefix(l[0].Name, "vol-") {
		t.Fatalf("default plan = %+v", l)
	}
	b, _ := json.Marshal(l.Vols())
	if want := `[{"name":"` + NameFor(DefaultPath) + `","path":"/golem/work"}]`; string(b) != want {
		t.Fatalf("vols = %s, want %s", b, want)
	}
}

func TestPlanOverride(t *testing.T) {
	l, err := Plan(`{"/golem/input":{"host":{}},"/golem/output":{"host":{}},"/scratch":{"ram":{"size":"64MiB"}},"/data":{"storage":{"size":"1GiB","preallocate":"1GiB"}}}`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Volume{}
	for _, v := range l {
		got[v.Path] = v
	}
	if len(l) != 5 {
		t.Fatalf("plan = %+v", l)
	}
	if v := got["/scratch"]; v.Kind != RAM || v.Size != 64<<20 || v.Name != "" {
		t.Errorf("ram volume = %+v", v)
	}
	if v := got["/data"]; v.Kind != Storage || v.Size != 1<<30 || v.Name == "" {
		t.Errorf("storage volume = %+v", v)
	}
	for i := 1; i < len(l); i++ {
		if l[i-1].Path >= l[i].Path {
			t.Fatalf("not sorted by path: %+v", l)
		}
	}
	if n := len(l.Vols()); n != 3 {
		t.Errorf("vols has %d entries, want the 3 host volumes", n)
	}
}

func TestPlanSimpleListAndDefaultReplaced(t *testing.T) {
	l, err := Plan(`["/in","/out"]`)
	if err != nil || len(l) != 3 {
		t.Fatalf("plan = %+v, %v", l, err)
	}
	l, err = Plan(`{"/golem/work":{"ram":{"size":"1g"}}}`)
	if err != nil || len(l) != 1 || l[0].Kind != RAM || l[0].Size != 1e9 {
		t.Fatalf("plan = %+v, %v", l, err)
	}
}

func TestPlanRejectsBadInputNamingIt(t *testing.T) {
	for in, want := range map[string]string{
		`{"/":{"host":{}}}`:                      `"/"`,
		`["relative"]`:                           `"relative"`,
		`["/a/../b"]`:                            "not clean",
		`["/proc/x"]`:                            "/proc",
		`["/tmp"]`:                               "/tmp",
		`{"/x":{"nfs":{}}}`:                      `"nfs"`,
		`{"/x":{"ram":{"size":"lots"}}}`:         `"lots"`,
		`{"/x":{}}`:                              "exactly one",
		`{"/x":{"host":{},"ram":{}}}`:            "exactly one",
		`42`:                                     "not a list",
		`["/` + strings.Repeat("a", 2000) + `"]`: "too long",
	} {
		_, err := Plan(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--volume-override") {
			t.Errorf("Plan(%.40s) = %v, want an error naming --volume-override and %s", in, err, want)
		}
	}
}

func FuzzParseOverride(f *testing.F) {
	f.Add(`{"/golem/input":{"host":{}}}`)
	f.Add(`["/a","/b"]`)
	f.Add(`{"/r":{"ram":{"size":"1.5 GiB"}}}`)
	f.Add(`{"/s":{"storage":{"size":1024}}}`)
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseOverride(s)
		if err != nil {
			return
		}
		for _, v := range l {
			if checkPath(v.Path) != nil || v.Size < 0 {
				t.Fatalf("accepted bad volume %+v", v)
			}
			if (v.Kind == RAM) != (v.Name == "") {
				t.Fatalf("volume %+v: name and kind disagree", v)
			}
		}
	})
}

func TestCheckRAM(t *testing.T) {
	for _, c := range []struct {
		override string
		limit    int64
		bad      string // the volume the error names; "" = accepted
	}{
		{`{"/scratch":{"ram":{"size":"1TiB"}}}`, DefaultRAMLimit, "/scratch"},
		{`{"/scratch":{"ram":{"size":"1GiB"}}}`, DefaultRAMLimit, ""},
		{`{"/scratch":{"ram":{"size":"512MiB"}}}`, 256 << 20, "/scratch"},
		{`{"/a":{"ram":{"size":"600MiB"}},"/b":{"ram":{"size":"600MiB"}}}`, DefaultRAMLimit, "/b"},
		{`{"/a":{"ram":{}}}`, DefaultRAMSize, ""},
		{`{"/a":{"ram":{}},"/b":{"ram":{}}}`, DefaultRAMSize, "/b"},
		{`{"/s":{"storage":{"size":"1TiB"}}}`, 1, ""}, // not memory
	} {
		l, err := Plan(c.override)
		if err != nil {
			t.Fatal(err)
		}
		err = l.CheckRAM(c.limit, "test")
		switch {
		case c.bad == "" && err != nil:
			t.Errorf("%s within %d: %v", c.override, c.limit, err)
		case c.bad != "" && (err == nil || !strings.Contains(err.Error(), `volume "`+c.bad+`"`) || !strings.Contains(err.Error(), "(test)")):
			t.Errorf("%s within %d: %v; want an error naming %s and the limit's source", c.override, c.limit, err, c.bad)
		}
	}
}

func TestWithImage(t *testing.T) {
	l, err := Plan(`{"/data":{"ram":{}}}`)
	if err != nil {
		t.Fatal(err)
	}
	got, skipped, err := l.WithImage([]string{"/data", "/golem/input", "/tmp", "/golem/work"})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, v := range got {
		paths = append(paths, v.Path+":"+string(v.Kind))
	}
	if strings.Join(paths, " ") != "/data:ram /golem/input:host /golem/work:host" || strings.Join(skipped, " ") != "/tmp" {
		t.Fatalf("volumes %v, skipped %v", paths, skipped)
	}
	if _, _, err := l.WithImage([]string{"relative"}); err == nil || !strings.Contains(err.Error(), `the image's Volumes: volume path "relative" is not absolute`) {
		t.Fatalf("relative path: %v", err)
	}
}
