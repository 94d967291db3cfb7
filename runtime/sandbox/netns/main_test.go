//go:build linux

package netns

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/runtime/sandbox"
)

// crashHelperEnv makes the test binary act as a runtime that opens a
// sandbox, starts processes in it and then waits to be SIGKILLed.
const crashHelperEnv = "GVT_SB_CRASH_HELPER_WORKDIR"

// crashImageEnv, when set, gives the crash helper's sandbox that squashfs
// file as its root.
const crashImageEnv = "GVT_SB_CRASH_HELPER_IMAGE"

// shimEnv names the static shim (see staticShim) to a crash helper.
const shimEnv = "GVT_SB_SHIM"

func TestMain(m *testing.M) {
	MaybeRunShim()
	if dir := os.Getenv(crashHelperEnv); dir != "" {
		os.Exit(crashHelper(dir))
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if shimDir != "" {
			os.RemoveAll(shimDir)
		}
		os.Exit(code)
	}))
}

var shimDir string

// staticShim builds testdata/shim without cgo, once, and makes sandboxes
// with an image start it (this test binary may be linked dynamically,
// which an image's root cannot run). It returns its path, or skips.
var staticShim = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "gvt-sb-shim-")
	if err != nil {
		return "", err
	}
	shimDir = dir
	bin := filepath.Join(dir, "shim")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "./testdata/shim")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the static shim: %v\n%s", err, out)
	}
	// Payload users in their user namespaces must be able to run it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	return bin, UseShimBinary(bin)
})

func useStaticShim(t *testing.T) string {
	t.Helper()
	bin, err := staticShim()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// crashHelper prints "DAEMON_PID CHILD_PID\n" on stdout once a daemon
// (setsid, own session, output to /dev/null) and a direct child are
// running in a sandbox for workdir, then blocks until killed.
func crashHelper(workdir string) int {
	cfg := Config{Workdir: workdir, NamePrefix: testPrefix}
	if bin := os.Getenv(shimEnv); bin != "" {
		if err := UseShimBinary(bin); err != nil {
			fmt.Fprintln(os.Stderr, "crash helper:", err)
			return 1
		}
	}
	if img := os.Getenv(crashImageEnv); img != "" {
		cfg.RootFS = &RootFS{Image: img}
	}
	s, err := Open(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		return 1
	}
	p, err := s.Start(sh(`setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!`))
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		return 1
	}
	c := newCollector()
	p.Stream(c.sink)
	<-c.exited
	child, err := s.Start(sandbox.ProcessSpec{Bin: "sleep", Args: []string{"sleep", "1000"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		return 1
	}
	var daemon int
	if _, err := fmt.Sscan(string(c.stdout()), &daemon); err != nil {
		fmt.Fprintln(os.Stderr, "crash helper: daemon pid:", err)
		return 1
	}
	host, err := hostPID(s.nsID, daemon)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		return 1
	}
	fmt.Printf("%d %d\n", host, child.Pid())
	select {}
}

// hostPID returns the host pid of the process that is nsPid in a sandbox's
// PID namespace (what $! says inside) and in network namespace id.
func hostPID(id nsID, nsPid int) (int, error) {
	pids, err := pidsIn(id)
	if err != nil {
		return 0, err
	}
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(strings.TrimPrefix(line, "NSpid:"))
			if strings.HasPrefix(line, "NSpid:") && len(f) == 2 && f[1] == strconv.Itoa(nsPid) {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no process %d in the sandbox", nsPid)
}
