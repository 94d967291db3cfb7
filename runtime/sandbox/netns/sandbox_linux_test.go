//go:build linux

package netns

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/runtime/volume"
	"github.com/gvpn/gvpn/test/privtest"
)

const testPrefix = "gvt-sb-"

// guard is a deadlock guard for waits, not a performance bound.
const guard = 30 * time.Second

func sh(script string) sandbox.ProcessSpec {
	return sandbox.ProcessSpec{Bin: "/bin/sh", Args: []string{"sh", "-c", script}}
}

// openTest opens a sandbox with the test prefix (and a fresh workdir unless
// cfg has one) and checks at cleanup that Close removes everything.
func openTest(t *testing.T, cfg Config) *Sandbox {
	t.Helper()
	privtest.RequireRoot(t)
	if cfg.Workdir == "" {
		cfg.Workdir = t.TempDir()
	}
	cfg.NamePrefix = testPrefix
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		assertGone(t, s.Name())
	})
	return s
}

func assertGone(t *testing.T, name string) {
	t.Helper()
	for _, path := range []string{filepath.Join(netnsDir, name), filepath.Join(runDir, name)} {
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Close (err %v)", path, err)
		}
	}
	names, err := List(testPrefix)
	if err != nil {
		t.Errorf("List: %v", err)
	}
	if slices.Contains(names, name) {
		t.Errorf("List still has %s: %v", name, names)
	}
	if limits.Exists(name) {
		t.Errorf("the cgroup of %s is left", name)
	}
}

// collector records the events of one process.
type collector struct {
	mu     sync.Mutex
	events []sandbox.Event
	exits  int
	exited chan struct{}
}

func newCollector() *collector { return &collector{exited: make(chan struct{})} }

func (c *collector) sink(ev sandbox.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, ev)
	if ev.Exited {
		c.exits++
		if c.exits == 1 {
			close(c.exited)
		}
	}
}

func (c *collector) snapshot() []sandbox.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

func (c *collector) stdout() []byte {
	var b []byte
	for _, ev := range c.snapshot() {
		b = append(b, ev.Stdout...)
	}
	return b
}

func (c *collector) stderr() []byte {
	var b []byte
	for _, ev := range c.snapshot() {
		b = append(b, ev.Stderr...)
	}
	return b
}

// wait waits for Exited and checks the event stream's shape: exactly one
// Exited, last, every event one kind, chunks within sandbox.ChunkSize, right pid.
func (c *collector) wait(t *testing.T, pid uint64) int32 {
	t.Helper()
	select {
	case <-c.exited:
	case <-time.After(guard):
		t.Fatalf("pid %d: no Exited event", pid)
	}
	evs := c.snapshot()
	for i, ev := range evs {
		kinds := 0
		for _, set := range []bool{ev.Stdout != nil, ev.Stderr != nil, ev.Exited} {
			if set {
				kinds++
			}
		}
		if kinds != 1 {
			t.Errorf("event %d has %d kinds: %+v", i, kinds, ev)
		}
		if ev.Pid != pid {
			t.Errorf("event %d pid %d, want %d", i, ev.Pid, pid)
		}
		if len(ev.Stdout) > sandbox.ChunkSize || len(ev.Stderr) > sandbox.ChunkSize {
			t.Errorf("event %d larger than sandbox.ChunkSize", i)
		}
		if ev.Exited != (i == len(evs)-1) {
			t.Errorf("Exited at event %d of %d", i, len(evs))
		}
	}
	return evs[len(evs)-1].ReturnCode
}

type result struct {
	stdout, stderr string
	rc             int32
}

func run(t *testing.T, s *Sandbox, spec sandbox.ProcessSpec) result {
	t.Helper()
	p, err := s.Start(spec)
	if err != nil {
		t.Fatalf("Start %v: %v", spec.Args, err)
	}
	c := newCollector()
	p.Stream(c.sink)
	rc := c.wait(t, p.Pid())
	return result{string(c.stdout()), string(c.stderr()), rc}
}

// hostPIDOf returns the host pid of the process whose pid inside the
// sandbox is printed in out.
func hostPIDOf(t *testing.T, s *Sandbox, out string) int {
	t.Helper()
	nsPid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("pid %q: %v", out, err)
	}
	pid, err := hostPID(s.nsID, nsPid)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// pidfd returns a pidfd for pid; the test fails if the process is gone.
func pidfd(t *testing.T, pid int) int {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// exitedFD reports whether the process behind pidfd has exited, waiting up
// to timeout.
func exitedFD(fd int, timeout time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(timeout.Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n == 1
	}
}

func TestOutputExitCodeAndNothingBeforeStream(t *testing.T) {
	s := openTest(t, Config{})
	p, err := s.Start(sh(`echo hi; echo err >&2; exit 3`))
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	select {
	case <-p.(*Process).sup.Reaped():
	case <-time.After(guard):
		t.Fatal("process not reaped")
	}
	if evs := c.snapshot(); len(evs) != 0 {
		t.Fatalf("events before Stream: %v", evs)
	}
	p.Stream(c.sink)
	rc := c.wait(t, p.Pid())
	if got := string(c.stdout()); got != "hi\n" {
		t.Errorf("stdout %q", got)
	}
	if got := string(c.stderr()); got != "err\n" {
		t.Errorf("stderr %q", got)
	}
	if rc != 3 {
		t.Errorf("rc %d, want 3", rc)
	}
	p.Stream(c.sink) // second Stream: no-op
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if c.exits != 1 {
		t.Errorf("%d Exited events", c.exits)
	}
}

func TestRunsInNetnsWithOnlyLo(t *testing.T) {
	s := openTest(t, Config{})
	own, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, s, sandbox.ProcessSpec{Bin: "readlink", Args: []string{"readlink", "/proc/self/ns/net"}})
	want := fmt.Sprintf("net:[%d]\n", s.nsID.ino)
	if r.stdout != want || r.rc != 0 {
		t.Errorf("netns inside %q rc %d, want %q", r.stdout, r.rc, want)
	}
	if strings.TrimSpace(r.stdout) == own {
		t.Errorf("process runs in the test's netns %s", own)
	}
	r = run(t, s, sandbox.ProcessSpec{Bin: "ip", Args: []string{"ip", "-o", "link"}})
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.rc != 0 || len(lines) != 1 || !strings.Contains(lines[0], " lo: ") || !strings.Contains(lines[0], ",UP") {
		t.Errorf("ip -o link inside: rc %d %q %q", r.rc, r.stdout, r.stderr)
	}
	names, err := exec.Command("ip", "netns", "list").Output()
	if err != nil || !strings.Contains(string(names), s.Name()) {
		t.Errorf("ip netns list does not show %s: %q %v", s.Name(), names, err)
	}
}

func TestHostsFile(t *testing.T) {
	hostBefore, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	s := openTest(t, Config{})
	st, err := os.Stat(s.HostsPath())
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("hosts file %v mode %v", err, st)
	}
	cat := sandbox.ProcessSpec{Bin: "cat", Args: []string{"cat", "/etc/hosts"}}
	r := run(t, s, cat)
	if r.stdout != string(hostsContent(DefaultHostname)) || r.rc != 0 {
		t.Errorf("/etc/hosts inside = %q (rc %d), want %q", r.stdout, r.rc, hostsContent(DefaultHostname))
	}
	updated := string(hostsContent(DefaultHostname)) + "10.1.2.3\tgvt-peer\n"
	if err := os.WriteFile(s.HostsPath(), []byte(updated), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := run(t, s, cat); r.stdout != updated {
		t.Errorf("after in-place update /etc/hosts inside = %q", r.stdout)
	}
	hostAfter, err := os.ReadFile("/etc/hosts")
	if err != nil || !bytes.Equal(hostBefore, hostAfter) {
		t.Errorf("host /etc/hosts changed: %v", err)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		// Fields 4 and 5: root within the source file system, mount point.
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == "/etc/hosts" && strings.Contains(f[3], s.Name()) {
			t.Errorf("hosts bind mount visible on the host: %s", line)
		}
	}
}

func TestHostname(t *testing.T) {
	hostBefore, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	s := openTest(t, Config{Hostname: "gvt-sb-host"})
	r := run(t, s, sandbox.ProcessSpec{Bin: "cat", Args: []string{"cat", "/proc/sys/kernel/hostname", "/etc/hosts"}})
	if !strings.HasPrefix(r.stdout, "gvt-sb-host\n") || !strings.Contains(r.stdout, "127.0.1.1\tgvt-sb-host\n") {
		t.Errorf("inside: %q", r.stdout)
	}
	if after, _ := os.Hostname(); after != hostBefore {
		t.Errorf("host hostname changed to %q", after)
	}
}

// defaultVolumes is what deploy plans without --volume-override.
func defaultVolumes(t *testing.T) volume.List {
	l, err := volume.Plan("")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestArgvEnvDir(t *testing.T) {
	s := openTest(t, Config{Volumes: defaultVolumes(t)})
	workdir := volume.DefaultPath
	spec := sandbox.ProcessSpec{
		Bin:  "sh", // found through Env's PATH
		Args: []string{"custom-argv0", "-c", `echo "$0 $FOO"; pwd`},
		Env:  []string{"FOO=bar", "PATH=/usr/bin:/bin"},
	}
	if r := run(t, s, spec); r.stdout != "custom-argv0 bar\n"+workdir+"\n" || r.rc != 0 {
		t.Errorf("got %q rc %d", r.stdout, r.rc)
	}
	other := "/tmp"
	spec.Dir = other
	if r := run(t, s, spec); r.stdout != "custom-argv0 bar\n"+other+"\n" {
		t.Errorf("with Dir: %q", r.stdout)
	}
	// No Args: argv is [Bin].
	if r := run(t, s, sandbox.ProcessSpec{Bin: "true"}); r.rc != 0 {
		t.Errorf("true: rc %d %q", r.rc, r.stderr)
	}
}

func TestKill(t *testing.T) {
	s := openTest(t, Config{DrainTimeout: time.Hour})
	for _, tc := range []struct {
		sig    syscall.Signal
		wantRC int32
	}{
		{0, 128 + 9}, // 0 means SIGKILL
		{syscall.SIGKILL, 128 + 9},
		{syscall.SIGTERM, 128 + 15},
	} {
		// The shell's child sleep holds stdout: only a group kill lets
		// the pipes reach EOF (DrainTimeout is an hour).
		p, err := s.Start(sh(`sleep 100; echo not reached`))
		if err != nil {
			t.Fatal(err)
		}
		c := newCollector()
		p.Stream(c.sink)
		if err := s.Kill(p.Pid(), tc.sig); err != nil {
			t.Fatalf("Kill %v: %v", tc.sig, err)
		}
		if rc := c.wait(t, p.Pid()); rc != tc.wantRC {
			t.Errorf("signal %v: rc %d, want %d", tc.sig, rc, tc.wantRC)
		}
		if len(c.stdout()) != 0 {
			t.Errorf("output %q", c.stdout())
		}
		if err := s.Kill(p.Pid(), syscall.SIGKILL); !errors.Is(err, sandbox.ErrNoProcess) {
			t.Errorf("Kill after exit: %v, want sandbox.ErrNoProcess", err)
		}
	}
	if err := s.Kill(1<<40, syscall.SIGTERM); !errors.Is(err, sandbox.ErrNoProcess) {
		t.Errorf("Kill unknown pid: %v", err)
	}
}

func TestCloseKillsDaemonAndRemovesEverything(t *testing.T) {
	s := openTest(t, Config{})
	r := run(t, s, sh(`setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!`))
	daemon := hostPIDOf(t, s, r.stdout)
	fd := pidfd(t, daemon)
	if exitedFD(fd, 0) {
		t.Fatal("daemon not running")
	}
	if id, err := nsIDOfPath(fmt.Sprintf("/proc/%d/ns/net", daemon)); err != nil || id != s.nsID {
		t.Fatalf("daemon not in the sandbox netns: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !exitedFD(fd, guard) {
		t.Error("daemon survived Close")
	}
	assertGone(t, s.Name())
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Start(sh("true")); !errors.Is(err, sandbox.ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
}

func TestBackgroundChildHoldingPipeDoesNotBlockExit(t *testing.T) {
	s := openTest(t, Config{DrainTimeout: 50 * time.Millisecond})
	p, err := s.Start(sh(`sleep 1000 & echo $!`))
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	p.Stream(c.sink)
	if rc := c.wait(t, p.Pid()); rc != 0 {
		t.Errorf("rc %d", rc)
	}
	fd := pidfd(t, hostPIDOf(t, s, string(c.stdout())))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !exitedFD(fd, guard) {
		t.Error("background child survived Close")
	}
}

func TestCloseStopsRunningProcesses(t *testing.T) {
	s := openTest(t, Config{})
	streamed, err := s.Start(sandbox.ProcessSpec{Bin: "sleep", Args: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	streamed.Stream(c.sink)
	unstreamed, err := s.Start(sandbox.ProcessSpec{Bin: "sleep", Args: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Close returns after the Exited event was delivered.
	evs := c.snapshot()
	if len(evs) != 1 || !evs[0].Exited || evs[0].ReturnCode != 128+15 {
		t.Errorf("events after Close: %+v", evs)
	}
	late := newCollector()
	unstreamed.Stream(late.sink)
	if evs := late.snapshot(); len(evs) != 0 {
		t.Errorf("Stream after Close delivered %+v", evs)
	}
}

func TestCloseKillsProcessesIgnoringSIGTERM(t *testing.T) {
	s := openTest(t, Config{StopTimeout: 100 * time.Millisecond})
	// The daemon inherits the ignored SIGTERM and left the group: only
	// the SIGKILL sweep of the namespace can end it.
	p, err := s.Start(sh(`trap "" TERM; setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!; echo ready; sleep 1000`))
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	var once sync.Once
	c := newCollector()
	p.Stream(func(ev sandbox.Event) {
		c.sink(ev)
		if bytes.Contains(ev.Stdout, []byte("ready")) {
			once.Do(func() { close(ready) })
		}
	})
	select {
	case <-ready:
	case <-time.After(guard):
		t.Fatal("shell did not get ready")
	}
	fd := pidfd(t, hostPIDOf(t, s, strings.Fields(string(c.stdout()))[0]))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if rc := c.wait(t, p.Pid()); rc != 128+9 {
		t.Errorf("rc %d, want 137", rc)
	}
	if !exitedFD(fd, guard) {
		t.Error("daemon ignoring SIGTERM survived Close")
	}
}

func TestOpenCloseTwiceSameWorkdir(t *testing.T) {
	workdir := t.TempDir()
	for i := range 2 {
		s := openTest(t, Config{Workdir: workdir})
		if r := run(t, s, sh(fmt.Sprintf("echo %d", i))); r.stdout != fmt.Sprintf("%d\n", i) {
			t.Errorf("cycle %d: %q", i, r.stdout)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("cycle %d: Close: %v", i, err)
		}
		assertGone(t, s.Name())
	}
}

// crash runs a runtime (the test binary as crashHelper) that opens the
// sandbox for workdir, starts a daemon and a direct child, and SIGKILLs it.
// It returns pidfds of the daemon and the child.
func crash(t *testing.T, workdir string, env ...string) (daemon, child int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), crashHelperEnv+"="+workdir), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	var daemonPid, childPid int
	if _, serr := fmt.Sscan(line, &daemonPid, &childPid); err != nil || serr != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("crash helper said %q: %v %v", line, err, serr)
	}
	daemon, child = pidfd(t, daemonPid), pidfd(t, childPid)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	return daemon, child
}

func TestOpenRemovesStaleSandboxAfterCrash(t *testing.T) {
	privtest.RequireRoot(t)
	workdir := t.TempDir()
	daemon, child := crash(t, workdir)
	name := NameFor(testPrefix, workdir)
	if names, _ := List(testPrefix); !slices.Contains(names, name) {
		t.Fatalf("crashed sandbox %s not listed: %v", name, names)
	}
	// The PID namespace's init dies with the runtime (parent-death
	// signal), and every process in the namespace with it, even one
	// that called setsid.
	if !exitedFD(child, guard) {
		t.Error("direct child survived the runtime")
	}
	if !exitedFD(daemon, guard) {
		t.Error("setsid daemon survived the runtime")
	}
	s := openTest(t, Config{Workdir: workdir})
	if r := run(t, s, sh("echo ok")); r.stdout != "ok\n" {
		t.Errorf("new sandbox: %q", r.stdout)
	}
}

func TestCleanup(t *testing.T) {
	privtest.RequireRoot(t)
	workdir := t.TempDir()
	daemon, _ := crash(t, workdir)
	if !exitedFD(daemon, guard) {
		t.Error("the daemon survived its runtime")
	}
	if err := Cleanup(testPrefix, workdir, nil); err != nil {
		t.Fatal(err)
	}
	assertGone(t, NameFor(testPrefix, workdir))
	if err := Cleanup(testPrefix, workdir, nil); err != nil {
		t.Errorf("Cleanup of nothing: %v", err)
	}
}

func TestBigOutputExact(t *testing.T) {
	s := openTest(t, Config{})
	r := run(t, s, sandbox.ProcessSpec{Bin: "head", Args: []string{"head", "-c", "5000000", "/dev/zero"}})
	if len(r.stdout) != 5000000 || strings.Trim(r.stdout, "\x00") != "" || r.rc != 0 {
		t.Errorf("got %d bytes rc %d", len(r.stdout), r.rc)
	}
	var out, errOut strings.Builder
	for i := 1; i <= 200000; i++ {
		fmt.Fprintf(&out, "%d\n", i)
	}
	for i := 1; i <= 100000; i++ {
		fmt.Fprintf(&errOut, "%d\n", i)
	}
	r = run(t, s, sh(`seq 1 200000; seq 1 100000 >&2`))
	if r.stdout != out.String() || r.stderr != errOut.String() {
		t.Errorf("seq output differs: %d/%d stdout, %d/%d stderr bytes", len(r.stdout), out.Len(), len(r.stderr), errOut.Len())
	}
}

func TestStartErrors(t *testing.T) {
	vols := defaultVolumes(t)
	s := openTest(t, Config{Volumes: vols})
	if err := os.WriteFile(filepath.Join(s.workdir, vols[0].Name, "data"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	notExec := volume.DefaultPath + "/data"
	for _, tc := range []struct {
		spec sandbox.ProcessSpec
		want error
		text string
	}{
		{sandbox.ProcessSpec{Bin: "gvt-sb-no-such-binary"}, sandbox.ErrNotFound, "gvt-sb-no-such-binary: command not found"},
		{sandbox.ProcessSpec{Bin: "/nonexistent/gvt-sb"}, sandbox.ErrNotFound, "/nonexistent/gvt-sb"},
		{sandbox.ProcessSpec{Bin: ""}, sandbox.ErrNotFound, "empty"},
		{sandbox.ProcessSpec{Bin: notExec}, sandbox.ErrNotExecutable, notExec},
		{sandbox.ProcessSpec{Bin: "/", Args: []string{"/"}}, sandbox.ErrNotExecutable, "/"},
		{sandbox.ProcessSpec{Bin: "true", Dir: "/nonexistent/gvt-sb"}, sandbox.ErrSetup, "/nonexistent/gvt-sb"},
	} {
		p, err := s.Start(tc.spec)
		if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.text) {
			t.Errorf("Start %+v: %v, want %v mentioning %q", tc.spec, err, tc.want, tc.text)
		}
		if p != nil {
			t.Errorf("Start %+v returned a process", tc.spec)
		}
	}
	// The sandbox still works and nothing was left behind.
	if r := run(t, s, sh("echo ok")); r.stdout != "ok\n" {
		t.Errorf("after errors: %q", r.stdout)
	}
	if !s.empty() {
		pids, err := pidsIn(s.nsID)
		t.Errorf("processes left in the netns besides the init: %v %v", pids, err)
	}
}

func TestConcurrentStarts(t *testing.T) {
	s := openTest(t, Config{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			p, err := s.Start(sh(fmt.Sprintf("echo %d", i)))
			if err != nil {
				t.Error(err)
				return
			}
			c := newCollector()
			p.Stream(c.sink)
			select {
			case <-c.exited:
			case <-time.After(guard):
				t.Error("no Exited")
				return
			}
			if got := string(c.stdout()); got != fmt.Sprintf("%d\n", i) {
				t.Errorf("process %d: %q", i, got)
			}
		})
	}
	wg.Wait()
}

func TestOpenBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Workdir: "/tmp", NamePrefix: "a/b"},
		{Workdir: "/tmp", Hostname: "bad host"},
		{Workdir: "/tmp", Hostname: strings.Repeat("h", 65)},
	} {
		if s, err := Open(cfg); !errors.Is(err, ErrBadConfig) {
			t.Errorf("Open(%+v) = %v, want ErrBadConfig", cfg, err)
			if s != nil {
				s.Close()
			}
		}
	}
}

func TestNameFor(t *testing.T) {
	a := NameFor("", "/srv/activity/a")
	if a != NameFor("", "/srv/activity/../activity/a/") || !strings.HasPrefix(a, DefaultPrefix) || len(a) != len(DefaultPrefix)+12 {
		t.Errorf("NameFor not stable/clean: %q", a)
	}
	if a == NameFor("", "/srv/activity/b") {
		t.Error("different workdirs share a name")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if NameFor("x-", "rel") != NameFor("x-", filepath.Join(wd, "rel")) {
		t.Error("relative and absolute workdir differ")
	}
}

func TestParseShimReport(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{shimMagic, nil},
		{"", sandbox.ErrSetup},
		{"garbage", sandbox.ErrSetup},
		{shimMagic + "notfound x: command not found", sandbox.ErrNotFound},
		{shimMagic + "noexec x: permission denied", sandbox.ErrNotExecutable},
		{shimMagic + "setup bind-mount failed", sandbox.ErrSetup},
		{shimMagic + "weird", sandbox.ErrSetup},
	} {
		err := parseShimReport([]byte(tc.in))
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("parseShimReport(%q) = %v, want %v", tc.in, err, tc.want)
		}
	}
}

func FuzzParseShimReport(f *testing.F) {
	f.Add([]byte(shimMagic))
	f.Add([]byte(shimMagic + "notfound x: command not found"))
	f.Add([]byte(shimMagic + "noexec /x: exec format error"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		err := parseShimReport(b)
		if err == nil && string(b) != shimMagic {
			t.Fatalf("accepted %q", b)
		}
		if err != nil && !errors.Is(err, sandbox.ErrSetup) && !errors.Is(err, sandbox.ErrNotFound) && !errors.Is(err, sandbox.ErrNotExecutable) {
			t.Fatalf("untyped error %v", err)
		}
	})
}
