//go:build linux

package netns

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/runtime/volume"
)

// crashVolumes are the crash helper's: the default volume, on its disk.
var crashVolumes, _ = volume.Plan("")

// crashHelperEnv makes the test binary act as a runtime that opens a
// sandbox, starts processes in it and then waits to be SIGKILLed.
const crashHelperEnv = "GVT_SB_CRASH_HELPER_WORKDIR"

func TestMain(m *testing.M) {
	MaybeRunShim()
	if dir := os.Getenv(crashHelperEnv); dir != "" {
		os.Exit(crashHelper(dir))
	}
	goleak.VerifyTestMain(m)
}

// crashHelper prints "DAEMON_PID CHILD_PID\n" on stdout once a daemon
// (setsid, own session, output to /dev/null) and a direct child are
// running in a sandbox for workdir, then blocks until killed.
func crashHelper(workdir string) int {
	// With limits: the sweep must also remove the cgroup and the disk.
	s, err := Open(Config{Workdir: workdir, NamePrefix: testPrefix, Volumes: crashVolumes,
		Limits: limits.Limits{MemBytes: 256 << 20, Pids: 64, StorageBytes: 16 << 20}})
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
