package passwd

import (
	"strings"
	"testing"
	"testing/fstest"
)

var image = fstest.MapFS{
	"etc/passwd": {Data: []byte("root:x:0:0:root:/root:/bin/sh\n# comment\ngolem:x:1000:1001::/home/golem:/bin/sh\nbroken\n")},
	"etc/group":  {Data: []byte("root:x:0:\nusers:x:100:golem\ngolem:x:1001:\nwheel:x:10:golem,other\n")},
}

func TestResolve(t *testing.T) {
	for spec, want := range map[string]User{
		"":            {UID: 0, GID: 0},
		"root":        {UID: 0, GID: 0},
		"golem":       {UID: 1000, GID: 1001, Groups: []uint32{100, 10}},
		"1000":        {UID: 1000, GID: 1001, Groups: []uint32{100, 10}},
		"1000:5":      {UID: 1000, GID: 5, Groups: []uint32{100, 10}},
		"golem:users": {UID: 1000, GID: 100, Groups: []uint32{10}},
		"4242":        {UID: 4242, GID: 0},
		"4242:wheel":  {UID: 4242, GID: 10},
	} {
		got, err := Resolve(image, spec)
		if err != nil {
			t.Errorf("%q: %v", spec, err)
			continue
		}
		if got.UID != want.UID || got.GID != want.GID || len(got.Groups) != len(want.Groups) {
			t.Errorf("%q: %+v, want %+v", spec, got, want)
		}
	}
}

func TestResolveErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"nobody":      `no user "nobody" in the image's /etc/passwd`,
		"golem:staff": `no group "staff" in the image's /etc/group`,
		":1":          "want name, uid",
		"1:":          "want name, uid",
		"99999999999": `no user "99999999999"`,
		"a\nb":        "want name",
	} {
		_, err := Resolve(image, spec)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", spec, err, want)
		}
	}
	if _, err := Resolve(fstest.MapFS{}, "golem"); err == nil || !strings.Contains(err.Error(), "/etc/passwd") {
		t.Errorf("no passwd: %v", err)
	}
	if u, err := Resolve(fstest.MapFS{}, "7:8"); err != nil || u.UID != 7 || u.GID != 8 {
		t.Errorf("numeric without passwd: %+v %v", u, err)
	}
}
