package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/runtime/volume"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// testPrefix names every sandbox namespace the integration tests create.
const testPrefix = "gvt-it-"

// logWriter collects a runtime's stderr and prints it when the test fails.
type logWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func exeunitConfig(t *testing.T, name string) (golemnet.ExeUnitConfig, *logWriter) {
	logs := &logWriter{}
	workdir := filepath.Join(t.TempDir(), name)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stderr of runtime %s:\n%s\nits log file:\n%s", name, logs.String(), golemnet.RuntimeLog(workdir))
		}
	})
	return golemnet.ExeUnitConfig{
		Runtime:     runtimeBin,
		Workdir:     workdir,
		RuntimeArgs: []string{"--sandbox-prefix", testPrefix, "--log-level", "debug"},
		Stderr:      logs,
	}, logs
}

func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(runtimeBin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func TestOfferTemplateAdvertisesVPN(t *testing.T) {
	out, _, code := runCLI(t, "offer-template")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var tmpl struct {
		Constraints string         `json:"constraints"`
		Properties  map[string]any `json:"properties"`
	}
	if err := json.Unmarshal([]byte(out), &tmpl); err != nil {
		t.Fatalf("offer-template stdout is not JSON: %v: %q", err, out)
	}
	caps, _ := tmpl.Properties["golem.runtime.capabilities"].([]any)
	found := false
	for _, c := range caps {
		found = found || c == "vpn"
	}
	if !found {
		t.Fatalf("golem.runtime.capabilities %v lacks \"vpn\": the ExeUnit would never enable VPN", caps)
	}
}

func TestDeployPrintsExactlyOneJSONObject(t *testing.T) {
	dir := t.TempDir()
	out, stderr, code := runCLI(t, "--workdir", dir, "--hostname", "node-a", "deploy", "--")
	if code != 0 {
		t.Fatalf("deploy exit %d: %s", code, stderr)
	}
	// The default volume, named as the ExeUnit maps container paths:
	// <workdir>/<name>, created for the payload user.
	vol := volume.NameFor(volume.DefaultPath)
	if out != `{"valid":{"Ok":""},"vols":[{"name":"`+vol+`","path":"/golem/work"}],"startMode":"blocking"}` {
		t.Fatalf("deploy stdout %q", out)
	}
	if fi, err := os.Stat(filepath.Join(dir, vol)); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o770 {
		t.Fatalf("volume directory: %v %v", fi, err)
	}
	for _, bad := range []string{`{"/etc/x":{"host":{}}}`, `["/usr/gvt-it-no-such-dir"]`, `{"/run/x":{"host":{}}}`} {
		out, _, code = runCLI(t, "--workdir", dir, "--volume-override", bad, "deploy", "--")
		if code == 0 || !strings.Contains(out, `{"valid":{"Err":"--volume-override`) {
			t.Fatalf("deploy with volumes %s: exit %d, stdout %q", bad, code, out)
		}
	}
	out, _, code = runCLI(t, "--workdir", filepath.Join(dir, "missing"), "deploy", "--")
	if code == 0 || !strings.HasPrefix(out, `{"valid":{"Err":"`) {
		t.Fatalf("deploy into a missing workdir: exit %d, stdout %q", code, out)
	}
}

func TestRootPayloadOnlyByTheExplicitFlag(t *testing.T) {
	privtest.RequireRoot(t)
	_, stderr, code := runCLI(t, "--sandbox-prefix", testPrefix, "--payload-root", "test")
	if code != 0 || !strings.Contains(stderr, "WARN payloads run as ROOT") || !strings.Contains(stderr, "--payload-root") {
		t.Fatalf("test with --payload-root: exit %d, stderr %q; want it to pass and say payloads run as root", code, stderr)
	}
	for _, user := range []string{"0", "root", "0:0", "1000:0", "gvt-it-no-such-user"} {
		_, stderr, code = runCLI(t, "--sandbox-prefix", testPrefix, "--payload-user", user, "test")
		if code == 0 || !strings.Contains(stderr, "--payload-user") {
			t.Errorf("--payload-user %s: exit %d, stderr %q; want a refusal naming the flag", user, code, stderr)
		}
	}
}

func TestRunModeIsRefusedClearly(t *testing.T) {
	_, stderr, code := runCLI(t, "--workdir", t.TempDir(), "run", "--entrypoint", "/bin/true", "--")
	if code == 0 || !strings.Contains(stderr, "not supported") {
		t.Fatalf("run: exit %d, stderr %q", code, stderr)
	}
}

func TestSelfTest(t *testing.T) {
	privtest.RequireRoot(t)
	_, stderr, code := runCLI(t, "--sandbox-prefix", testPrefix, "test")
	if code != 0 {
		t.Fatalf("test failed on a host that can run VPN: %s", stderr)
	}
	if !strings.Contains(stderr, "all 6 checks passed") || !strings.Contains(stderr, "ok   payloads run as uid 65534") ||
		!strings.Contains(stderr, "ok   no host user or subordinate id range in the payloads' host ids") {
		t.Fatalf("stderr %q", stderr)
	}
}

// sandboxGone checks that nothing of an activity's sandbox is left.
func sandboxGone(t *testing.T, workdir string) {
	t.Helper()
	name := netns.NameFor(testPrefix, workdir)
	if _, err := os.Stat(filepath.Join("/run/netns", name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns %s still exists after teardown", name)
	}
	if _, err := os.Stat(filepath.Join("/run/gvpn", name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sandbox dir /run/gvpn/%s still exists after teardown", name)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mounts, []byte(name)) {
		t.Errorf("a mount of %s is left in the host's mount namespace", name)
	}
	if bytes.Contains(mounts, []byte(" "+workdir+"/")) {
		t.Errorf("a mount under %s (the activity's disk) is left", workdir)
	}
	if limits.Exists(name) {
		t.Errorf("the cgroup of %s is left after teardown", name)
	}
}

// TestServiceModeAsTheExeUnitDrivesIt: what the netns sandbox does beyond
// the contract every kind keeps (test/contract): the payload's own
// namespace, pipelined requests, an unknown command, a CreateNetwork the
// runtime cannot serve.
func TestServiceModeAsTheExeUnitDrivesIt(t *testing.T) {
	privtest.RequireRoot(t)
	cfg, _ := exeunitConfig(t, "svc")
	ctx := privtest.Context(t, 60*time.Second)
	if _, err := golemnet.Deploy(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	eu, err := golemnet.Start(ctx, cfg) // says Hello with id 2
	if err != nil {
		t.Fatal(err)
	}
	defer eu.Kill()

	// The payload runs inside its own network namespace with its own hosts file.
	res, err := eu.Run(ctx, "/bin/sh", "-c", "readlink /proc/self/ns/net; ip -o link | wc -l")
	if err != nil {
		t.Fatal(err)
	}
	own, _ := os.Readlink("/proc/self/ns/net")
	if lines := strings.Fields(string(res.Stdout)); len(lines) != 2 || lines[0] == own || lines[1] != "1" {
		t.Fatalf("payload not in a fresh namespace with only lo: %q (host ns %s)", res.Stdout, own)
	}

	// Pipelined requests: two Runs and a Hello sent back to back, each
	// answered with its own id and kind.
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i, argv := range [][]string{{"/bin/sh", "-c", "sleep 0.2; echo slow"}, {"/bin/echo", "fast"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := eu.Run(ctx, argv[0], argv[1:]...)
			want := []string{"slow\n", "fast\n"}[i]
			if err == nil && string(r.Stdout) != want {
				err = errors.New("pipelined run got " + string(r.Stdout))
			}
			errs <- err
		}()
	}
	wg.Add(1)
	go func() { defer wg.Done(); _, err := eu.Hello(ctx, "0.1.0"); errs <- err }()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	// An unknown command is an error reply, not a crash.
	resp, err := eu.Call(ctx, &api.Request{})
	if err == nil || resp.GetError() == nil {
		t.Fatalf("empty command: resp %v err %v", resp, err)
	}
	// A CreateNetwork without --vpn-endpoint is refused, not a crash.
	if _, err := eu.CreateNetwork(ctx, golemnet.VPNNetwork{Addr: "192.168.0.0", Mask: "255.255.255.0", IfAddr: "192.168.0.2"}, nil); err == nil {
		t.Fatal("CreateNetwork without a VPN endpoint succeeded")
	}
	if err := eu.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := eu.ProtocolError(); err != nil {
		t.Fatal(err)
	}
	sandboxGone(t, cfg.Workdir)
}

func TestStdinEOFTearsDownAndExitsZero(t *testing.T) {
	privtest.RequireRoot(t)
	cfg, _ := exeunitConfig(t, "eof")
	ctx := privtest.Context(t, 30*time.Second)
	golemnet.Deploy(ctx, cfg)
	eu, err := golemnet.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer eu.Kill()
	if _, err := eu.Spawn(ctx, "/bin/sleep", "1000"); err != nil {
		t.Fatal(err)
	}
	eu.CloseStdin()
	if err := eu.Wait(ctx); err != nil {
		t.Fatalf("exit after stdin EOF: %v, want 0", err)
	}
	sandboxGone(t, cfg.Workdir)
}

func TestBrokenStreamExitsNonZeroWithoutPanic(t *testing.T) {
	privtest.RequireRoot(t)
	for name, garbage := range map[string][]byte{
		"bad varint":   bytes.Repeat([]byte{0xff}, 11),
		"bad protobuf": {0x03, 0xff, 0xff, 0xff},
		"huge length":  {0xff, 0xff, 0xff, 0xff, 0x7f},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, logs := exeunitConfig(t, "broken")
			os.MkdirAll(cfg.Workdir, 0o755)
			cmd := exec.Command(runtimeBin, "--workdir", cfg.Workdir, "--sandbox-prefix", testPrefix, "start")
			cmd.Stdin = bytes.NewReader(garbage)
			cmd.Stderr = logs
			var out bytes.Buffer
			cmd.Stdout = &out
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("exit: %v, want non-zero", err)
			}
			if strings.Contains(logs.String(), "panic") {
				t.Fatalf("runtime panicked:\n%s", logs)
			}
			// The log file (stderr is /dev/null under a real provider).
			if file := golemnet.RuntimeLog(cfg.Workdir); !strings.Contains(file, "broken request stream") {
				t.Fatalf("no clear message in the log file:\n%s", file)
			}
			if out.Len() != 0 {
				t.Fatalf("stdout got %q on a broken stream", out.Bytes())
			}
			sandboxGone(t, cfg.Workdir)
			_ = io.EOF
		})
	}
}
