package passwd

import (
	"strings"
	"testing"
	"testing/fstest"
)

// FuzzResolve: any passwd, group and spec give ids or an error, never a
// panic; a user given by name resolves to the uid of its entry.
func FuzzResolve(f *testing.F) {
	f.Add("root:x:0:0::/root:/bin/sh\ngolem:x:1000:1001::/:/bin/sh\n", "golem:x:1001:\nwheel:x:10:golem\n", "golem:wheel")
	f.Add("a:b\n::::\n", "::\n", "1:2")
	f.Add("x:x:99999999999:0\n", "", "x")
	f.Fuzz(func(t *testing.T, pw, gr, spec string) {
		root := fstest.MapFS{"etc/passwd": {Data: []byte(pw)}, "etc/group": {Data: []byte(gr)}}
		u, err := Resolve(root, spec)
		if err != nil {
			return
		}
		name, _, _ := strings.Cut(spec, ":")
		if _, nerr := parseID(name); nerr != nil && name != "" {
			users, _ := readDB(root, "etc/passwd")
			e, ferr := find(users, nil, "/etc/passwd", "user", name)
			if id, perr := parseID(e[2]); ferr != nil || perr != nil || id != u.UID {
				t.Fatalf("%q resolved to uid %d, its entry is %v (%v)", spec, u.UID, e, ferr)
			}
		}
	})
}
