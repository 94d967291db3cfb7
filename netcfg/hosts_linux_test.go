package netcfg

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func writeHosts(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func readHosts(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

const baseHosts = "# managed by test\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n\n"

func TestMergeHostsAppendSortedAndIdempotent(t *testing.T) {
	path := writeHosts(t, baseHosts)
	ino := inode(t, path)
	entries := map[string]string{"node-b": "192.168.0.3", "node-a": "192.168.0.2", "Node-C.vpn": "192.168.0.4"}
	if err := MergeHosts(path, entries); err != nil {
		t.Fatal(err)
	}
	want := baseHosts + "192.168.0.4\tNode-C.vpn\n192.168.0.2\tnode-a\n192.168.0.3\tnode-b\n"
	got := readHosts(t, path)
	if got != want {
		t.Fatalf("after merge:\n%s\nwant:\n%s", got, want)
	}
	if err := MergeHosts(path, entries); err != nil {
		t.Fatal(err)
	}
	if again := readHosts(t, path); again != got {
		t.Errorf("second merge changed the file:\n%s", again)
	}
	if inode(t, path) != ino {
		t.Error("file was replaced (new inode); a bind-mounted hosts file needs an in-place write")
	}
}

func TestMergeHostsReplace(t *testing.T) {
	path := writeHosts(t, "127.0.0.1 localhost\n192.168.0.9\tnode-a # old address\n10.0.0.1 shared node-b other\n")
	err := MergeHosts(path, map[string]string{"node-a": "192.168.0.2", "NODE-B": "192.168.0.3"})
	if err != nil {
		t.Fatal(err)
	}
	want := "127.0.0.1 localhost\n" +
		"192.168.0.2\tnode-a # old address\n" + // single-name line: new IP in place
		"10.0.0.1\tshared other\n" + // the name leaves a shared line
		"192.168.0.3\tNODE-B\n"
	if got := readHosts(t, path); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	// A line that loses its only name keeps its comment.
	path = writeHosts(t, "10.0.0.1 a b # c\n")
	if err := MergeHosts(path, map[string]string{"a": "10.0.0.2", "b": "10.0.0.3"}); err != nil {
		t.Fatal(err)
	}
	if got, want := readHosts(t, path), "10.0.0.3\tb # c\n10.0.0.2\ta\n"; got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestMergeHostsKeepsOtherLines(t *testing.T) {
	weird := "#comment\r\n  \n junk line without ip\n300.1.1.1 bad-ip\n10.0.0.1 keep # trailing\n"
	path := writeHosts(t, weird)
	if err := MergeHosts(path, map[string]string{"new": "10.0.0.9"}); err != nil {
		t.Fatal(err)
	}
	if got := readHosts(t, path); got != weird+"10.0.0.9\tnew\n" {
		t.Errorf("got %q", got)
	}
	// Already present (with the same IP, other case): nothing written.
	path = writeHosts(t, "10.0.0.9 NEW") // no final newline
	if err := MergeHosts(path, map[string]string{"new": "10.0.0.9"}); err != nil {
		t.Fatal(err)
	}
	if got := readHosts(t, path); got != "10.0.0.9 NEW" {
		t.Errorf("file changed: %q", got)
	}
	// No final newline and something to add.
	path = writeHosts(t, "10.0.0.1 a")
	if err := MergeHosts(path, map[string]string{"b": "10.0.0.2"}); err != nil {
		t.Fatal(err)
	}
	if got := readHosts(t, path); got != "10.0.0.1 a\n10.0.0.2\tb\n" {
		t.Errorf("got %q", got)
	}
}

func TestMergeHostsCreatesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	if err := MergeHosts(path, map[string]string{"a": "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if got := readHosts(t, path); got != "10.0.0.1\ta\n" {
		t.Errorf("got %q", got)
	}
	path2 := filepath.Join(t.TempDir(), "hosts")
	if err := MergeHosts(path2, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty merge created the file (err=%v)", err)
	}
}

func TestMergeHostsShrinks(t *testing.T) {
	// The new content is shorter than the old: the tail must go.
	path := writeHosts(t, "10.0.0.1 a b c d e f g h i j k l m n o p\n")
	if err := MergeHosts(path, map[string]string{"a": "10.0.0.2"}); err != nil {
		t.Fatal(err)
	}
	if got, want := readHosts(t, path), "10.0.0.1\tb c d e f g h i j k l m n o p\n10.0.0.2\ta\n"; got != want {
		t.Errorf("got %q want %q", got, want)
	}
	path = writeHosts(t, "10.0.0.1    a    # a long comment\n")
	if err := MergeHosts(path, map[string]string{"a": "1.1.1.1"}); err != nil {
		t.Fatal(err)
	}
	if got, want := readHosts(t, path), "1.1.1.1\ta # a long comment\n"; got != want {
		t.Errorf("got %q want %q", got, want)
	}
}

func TestMergeHostsBadInput(t *testing.T) {
	cases := []struct {
		entries map[string]string
		name    string
		reason  string
	}{
		{map[string]string{"ok": "10.0.0.1", "bad_name": "10.0.0.2"}, "bad_name", `hostname contains '_'`},
		{map[string]string{"-lead": "10.0.0.1"}, "-lead", "hostname label starts or ends with '-'"},
		{map[string]string{"a..b": "10.0.0.1"}, "a..b", "hostname label empty or longer than 63 characters"},
		{map[string]string{strings.Repeat("x", 64): "10.0.0.1"}, strings.Repeat("x", 64), "hostname label empty or longer than 63 characters"},
		{map[string]string{strings.Repeat("a.", 127) + "ab": "10.0.0.1"}, strings.Repeat("a.", 127) + "ab", "hostname longer than 253 characters"},
		{map[string]string{"": "10.0.0.1"}, "", "empty hostname"},
		{map[string]string{"10.0.0.1": "10.0.0.1"}, "10.0.0.1", "hostname is an IP address"},
		{map[string]string{"a b": "10.0.0.1"}, "a b", `hostname contains ' '`},
		{map[string]string{"node": "999.1.1.1"}, "node", "not an IP address"},
		{map[string]string{"node": ""}, "node", "not an IP address"},
		{map[string]string{"node": "fe80::1%eth0"}, "node", "IP address with a zone"},
		{map[string]string{"Node": "10.0.0.1", "node": "10.0.0.2"}, "node", `same name as "Node"`},
	}
	for _, tc := range cases {
		path := writeHosts(t, baseHosts)
		err := MergeHosts(path, tc.entries)
		var he *HostsEntryError
		if !errors.As(err, &he) || he.Hostname != tc.name || he.Reason != tc.reason {
			t.Errorf("MergeHosts(%v) = %v; want entry %q: %s", tc.entries, err, tc.name, tc.reason)
		}
		if got := readHosts(t, path); got != baseHosts {
			t.Errorf("file touched after a bad entry: %q", got)
		}
	}
	// IPv6 values are addresses too.
	path := writeHosts(t, "")
	if err := MergeHosts(path, map[string]string{"v6": "fd00::1"}); err != nil {
		t.Errorf("IPv6 value: %v", err)
	}
	// A directory is not a hosts file.
	if err := MergeHosts(t.TempDir(), map[string]string{"a": "10.0.0.1"}); err == nil {
		t.Error("MergeHosts on a directory succeeded")
	}
}

// resolve returns the IP the first line naming host maps it to, as a
// resolver reading the file top down would.
func resolve(data, host string) (string, bool) {
	for _, l := range parseHosts(data) {
		if l.ip.IsValid() && hasName(l.names, host) {
			return l.ip.String(), true
		}
	}
	return "", false
}

func FuzzMergeHosts(f *testing.F) {
	f.Add([]byte(baseHosts), "node", "10.0.0.1")
	f.Add([]byte("10.0.0.2 node other # c\n10.0.0.1 NODE\n"), "node", "10.0.0.1")
	f.Add([]byte("#x\r\n1.2.3.4 a\tb\n\n\n"), "b", "fd00::1")
	f.Add([]byte("10.0.0.1 a"), "a", "10.0.0.2")
	f.Fuzz(func(t *testing.T, data []byte, host, ip string) {
		es, err := checkHosts(map[string]string{host: ip, "fixed-name": "192.0.2.1"})
		if err != nil {
			return
		}
		out, changed := mergeHosts(string(data), es)
		if !changed && out != string(data) {
			t.Fatal("unchanged merge altered the data")
		}
		for _, e := range es {
			if got, ok := resolve(out, e.name); !ok || got != e.ip.String() {
				t.Fatalf("%s resolves to %q (%v), want %s\n%q", e.name, got, ok, e.ip, out)
			}
		}
		again, changed := mergeHosts(out, es)
		if changed || again != out {
			t.Fatalf("second merge not idempotent:\n%q\n%q", out, again)
		}
		// Lines that do not mention the merged names survive verbatim.
		outLines := strings.Split(out, "\n")
		i := 0
		for _, l := range parseHosts(string(data)) {
			if l.ip.IsValid() && (hasName(l.names, host) || hasName(l.names, "fixed-name")) {
				continue
			}
			for i < len(outLines) && outLines[i] != l.raw {
				i++
			}
			if i == len(outLines) {
				t.Fatalf("line %q lost or reordered:\n%q", l.raw, out)
			}
			i++
		}
	})
}
