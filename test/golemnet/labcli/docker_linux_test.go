package labcli

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDockerFlagsCheck(t *testing.T) {
	cases := []struct {
		args  []string
		nodes int
		err   string // "" = valid
	}{
		{[]string{"--docker"}, 3, ""},
		{[]string{"--docker", "--docker-subnet", "10.211.0.0/16", "--agent-nodes", "3"}, 3, ""},
		{[]string{"--docker-subnet", "10.211.0.0/24"}, 3, "--docker-subnet needs --docker"},
		{[]string{"--agent-nodes", "1"}, 3, "--agent-nodes needs --docker"},
		{[]string{"--docker", "--docker-subnet", "10.211.0.0/25"}, 3, "--docker-subnet"},
		{[]string{"--docker", "--docker-subnet", "fd00::/64"}, 3, "--docker-subnet"},
		{[]string{"--docker", "--docker-subnet", "bogus"}, 3, "--docker-subnet"},
		{[]string{"--docker", "--agent-nodes", "4"}, 3, "--agent-nodes 4: want 0 to 3"},
		{[]string{"--docker", "--agent-nodes", "-1"}, 3, "--agent-nodes -1"},
		{[]string{"--docker", "--lab-id", "no/slash"}, 3, "--lab-id"},
		{[]string{"--docker"}, 250, "at most"},
	}
	for _, c := range cases {
		fs := newFlagSet("up", "", nil)
		var f dockerFlags
		f.add(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		_, err := f.check(fs, c.nodes)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%v: %v", c.args, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%v: error %v, want one with %q", c.args, err, c.err)
		}
	}
}

func TestVPNAddrs(t *testing.T) {
	got := vpnAddrs(mustPrefix(t, "10.7.0.77/24"), 3)
	want := []string{"10.7.0.2", "10.7.0.3", "10.7.0.4"}
	for i := range want {
		if got[i].String() != want[i] {
			t.Fatalf("vpnAddrs = %v, want %v", got, want)
		}
	}
	if a, b := dockerLabID("/run/gvpn-lab"), dockerLabID("/run/gvpn-lab/"); a != b || !validPrefix(a) {
		t.Errorf("lab ids %q %q", a, b)
	}
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseStates(t *testing.T) {
	got := parseStates("/lab-node-a running 172.31.211.10\n/lab-node-b exited \n/lab-hub paused 172.31.211.2\n\ngarbage\n")
	want := map[string]containerState{
		"lab-node-a": {"running", "172.31.211.10"},
		"lab-node-b": {"exited", ""},
		"lab-hub":    {"paused", "172.31.211.2"},
	}
	if len(got) != len(want) {
		t.Fatalf("parseStates = %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %+v, want %+v", k, got[k], v)
		}
	}
}

func FuzzParseStates(f *testing.F) {
	f.Add("/lab-node-a running 172.31.211.10\n/lab-node-b exited\n")
	f.Fuzz(func(t *testing.T, out string) {
		for name, st := range parseStates(out) {
			if name == "" || st.state == "" || strings.ContainsAny(name+st.state+st.addr, " \t\n") {
				t.Fatalf("parseStates(%q): %q → %+v", out, name, st)
			}
		}
	})
}

// The Docker section goes below what make bench keeps, and replaces
// itself on a rerun.
func TestReplaceSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := os.WriteFile(path, []byte("# gvpn benchmarks\n\nbench's own part\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"first\n", "second\n"} {
		if err := replaceSection(path, DockerBenchMarker+"\n"+body); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(path)
	want := "# gvpn benchmarks\n\nbench's own part\n\n" + benchKeptMarker + "\n\n" + DockerBenchMarker + "\nsecond\n"
	if string(b) != want {
		t.Errorf("file:\n%s\nwant:\n%s", b, want)
	}
}
