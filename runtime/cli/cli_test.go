package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/cmdflag"
)

func run(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = Main(args, strings.NewReader(""), &o, &e)
	return code, o.String(), e.String()
}

func TestHelpOnStdout(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"start", "--help"}} {
		code, out, errOut := run(args...)
		if code != 0 || errOut != "" {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
		}
		for _, want := range []string{"Passed by the ExeUnit", "Operator settings", "Sandbox settings", "Debugging",
			"  --vpn-endpoint URL", "  --mtu MTU", "docs/protocol.md"} {
			if !strings.Contains(out, want) {
				t.Errorf("%q: help lacks %q", args, want)
			}
		}
		if strings.Contains(out, "\n  -mtu") || strings.Contains(out, "\n  -workdir") {
			t.Errorf("%q: a flag printed with one dash", args)
		}
	}
	fs, _ := newFlagSet()
	if rest := cmdflag.Ungrouped(fs.FlagSet, flagGroups); len(rest) > 0 {
		t.Errorf("flags in no help group: %v", rest)
	}
}

func TestVersion(t *testing.T) {
	code, out, errOut := run("--version")
	if code != 0 || out != "gvpn-runtime "+Version+"\n" || errOut != "" {
		t.Errorf("--version: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// oneLine checks a refused command line: exit 2, nothing on stdout, one
// line on stderr that contains want.
func oneLine(t *testing.T, want string, args ...string) {
	t.Helper()
	code, out, errOut := run(args...)
	if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, want) {
		t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", args, code, out, errOut, want)
	}
}

func TestBadCommandLines(t *testing.T) {
	oneLine(t, "unknown flag --nope; see gvpn-runtime --help", "--nope", "test")
	oneLine(t, "unknown flag --nope; see gvpn-runtime --help", "offer-template", "--nope")
	oneLine(t, "missing subcommand", "--mtu", "1400")
	oneLine(t, `unknown subcommand "stat"`, "stat")
	oneLine(t, `--mtu: invalid mtu "70000": outside 68…65521`, "--mtu", "70000", "offer-template")
	oneLine(t, `--mtu: invalid mtu "-5": outside 68…65521`, "offer-template", "--mtu=-5")
	oneLine(t, `--mtu: invalid mtu "67": outside 68…65521`, "-w", t.TempDir(), "start", "--mtu", "67")
	oneLine(t, "flag --mtu: not a number", "--mtu", "big", "test")
	oneLine(t, "--vpn-endpoint: udp://192.0.2.1:53 is not on loopback", "--vpn-endpoint", "udp://192.0.2.1:53", "offer-template")
	oneLine(t, "--vpn-endpoint: tcp-connect://198.51.100.1:9 is not on loopback", "--vpn-endpoint", "tcp-connect://198.51.100.1:9", "offer-template")
	oneLine(t, "--vpn-endpoint", "--vpn-endpoint", "tcp-connect://example.com:9", "offer-template")
	oneLine(t, "--tap-name", "--tap-name", "a/b", "offer-template")
	oneLine(t, "--log-level", "--log-level", "loud", "offer-template")
	oneLine(t, "--cpu-cores", "--cpu-cores", "two", "offer-template")
	oneLine(t, "--sandbox", "--sandbox", "docker", "offer-template")
	oneLine(t, "--vm-bridge", "--vm-bridge", "pigeon", "offer-template")
	oneLine(t, "--hostname", "offer-template", "--hostname", "bad host")
	oneLine(t, "--debug-local-endpoint", "--debug-local-endpoint", "10.1.1.1:5", "offer-template")
	for _, v := range []string{"NaN", "nan", "Inf", "+Inf", "-Inf", "infinity", "-1", "1e400"} {
		oneLine(t, `--mem-gib: "`+v+`" is not a finite non-negative number`, "--mem-gib", v, "offer-template")
	}
	oneLine(t, `--storage-gib: "NaN" is not a finite non-negative number`, "--storage-gib", "NaN", "offer-template")
	oneLine(t, "--vpn-endpoint: bad endpoint URL \"unix://relative.sock\": unix endpoint needs an absolute socket path", "--vpn-endpoint", "unix://relative.sock", "offer-template")
	if code, _, errOut := run("--vpn-endpoint", "udp://192.0.2.1:53", "--debug-allow-remote-endpoint", "offer-template"); code != 0 {
		t.Errorf("a remote endpoint with --debug-allow-remote-endpoint: exit %d, %s", code, errOut)
	}
	// What the ExeUnit formats must pass.
	if code, _, errOut := run("--cpu-cores", "4", "--mem-gib", "2.7939677238464355", "--storage-gib", "1", "offer-template"); code != 0 {
		t.Errorf("the ExeUnit's hardware flags: exit %d, %s", code, errOut)
	}
}

// TestDeployPrintsOnlyJSON: the ExeUnit forwards deploy's stdout and stderr
// to the requestor. stdout is the JSON, stderr is empty (not a terminal),
// and the log goes to the workdir's log file; flags after the subcommand
// take effect.
func TestDeployPrintsOnlyJSON(t *testing.T) {
	wd := t.TempDir()
	code, out, errOut := run("--workdir", wd, "deploy", "--hostname", "node-a", "--")
	if code != 0 || errOut != "" {
		t.Fatalf("deploy: exit %d, stderr %q", code, errOut)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil || res["startMode"] != "blocking" {
		t.Fatalf("deploy stdout %q: %v", out, err)
	}
	if b, _ := os.ReadFile(filepath.Join(wd, deploymentFile)); !strings.Contains(string(b), `"hostname":"node-a"`) {
		t.Errorf("--hostname after deploy was not taken: %s", b)
	}
	logs, err := os.ReadFile(api.LogPath(wd))
	if err != nil || !strings.Contains(string(logs), "deployed") {
		t.Errorf("log file: %v\n%s", err, logs)
	}

	missing := filepath.Join(wd, "no-such-dir")
	code, out, errOut = run("--workdir", missing, "deploy", "--")
	if code != 1 || errOut != "" || strings.Contains(out, missing) || strings.Contains(out, "/") {
		t.Errorf("deploy in a missing workdir: exit %d, stdout %q, stderr %q (no host path may reach the requestor)", code, out, errOut)
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Errorf("deploy failure stdout is not JSON: %q", out)
	}
}

// TestCallerPaths lists, for a runtime with file capabilities, every flag
// whose path the runtime opens or creates itself: each must be checked
// against the caller's own access.
func TestCallerPaths(t *testing.T) {
	fs, o := newFlagSet()
	args := []string{"--workdir", "/w", "--task-package", "/p1", "--task-package", "/p2",
		"--vpn-endpoint", "unix:///s/vpn.sock", "--inet-endpoint", "unix:///s/inet.sock",
		"--bridge", "unix:///b/data.sock", "--bridge-control", "unix:///b/ctl.sock", "test"}
	if _, err := cmdflag.ParseInterspersed(fs.FlagSet, args); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, u := range callerPaths(o) {
		got[u.flag] = append(got[u.flag], u.path)
	}
	want := map[string][]string{"workdir": {"/w"}, "task-package": {"/p1", "/p2"}, "vpn-endpoint": {"/s"},
		"inet-endpoint": {"/s"}, "bridge": {"/b"}, "bridge-control": {"/b"}}
	if len(got) != len(want) {
		t.Errorf("checked flags %v, want %v", got, want)
	}
	for flag, paths := range want {
		if strings.Join(got[flag], ",") != strings.Join(paths, ",") {
			t.Errorf("--%s: checked %v, want %v", flag, got[flag], paths)
		}
	}
	// Addresses that name no path add nothing.
	fs, o = newFlagSet()
	if _, err := cmdflag.ParseInterspersed(fs.FlagSet, []string{"--vpn-endpoint", "udp://127.0.0.1:7000", "--bridge", "vsock://any:5000", "test"}); err != nil {
		t.Fatal(err)
	}
	if uses := callerPaths(o); len(uses) != 0 {
		t.Errorf("paths checked for a UDP endpoint and a vsock bridge: %v", uses)
	}
}
