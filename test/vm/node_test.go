package vm

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// node is one provider node: an ExeUnit stand-in driving a gvpn-runtime.
type node struct {
	name, ip string
	vm       bool
	eu       *golemnet.ExeUnit
	hub      *golemnet.Node
	workdir  string
	sockDir  string // the VM's socket directory, /run/gvpn/<sandbox name>
	logs     *golemnet.TailBuffer
	deployed golemnet.DeployResult
}

type nodeOpts struct {
	vm          bool
	kernel      string
	initrd      string
	taskPackage string
	bridge      string // --vm-bridge
	// runtimeArgs are added to the runtime's flags (the agreement's).
	runtimeArgs []string
}

// startHub starts the hub with the nodes registered.
func startHub(t *testing.T, nodes ...*node) *golemnet.Hub {
	t.Helper()
	quiet := logrus.New()
	quiet.SetOutput(os.Stderr)
	quiet.SetLevel(logrus.WarnLevel)
	hub := golemnet.NewHub(logrus.NewEntry(quiet))
	t.Cleanup(func() { hub.Close() })
	for _, n := range nodes {
		hn, err := hub.AddNode(n.name, netip.MustParseAddr(n.ip))
		if err != nil {
			t.Fatal(err)
		}
		n.hub = hn
	}
	if err := hub.Start(); err != nil {
		t.Fatal(err)
	}
	return hub
}

// start deploys and starts the node's runtime, the way the ExeUnit does.
func (n *node) start(t *testing.T, o nodeOpts) {
	t.Helper()
	n.vm = o.vm
	n.logs = golemnet.NewTailBuffer(256 << 10)
	n.workdir = filepath.Join(t.TempDir(), n.name)
	logs := n.logs
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stderr of %s's runtime:\n%s\nits log file:\n%s", n.name, logs.String(), golemnet.RuntimeLog(n.workdir))
		}
	})
	args := []string{"--sandbox-prefix", nsPrefix, "--log-level", "debug", "--stats-interval", "500ms"}
	if o.vm {
		// TCG on a machine shared with other tests: give the boot time.
		args = append(args, "--sandbox", "vm", "--vm-kernel", o.kernel, "--vm-initrd", o.initrd, "--agent-timeout", "150s")
		if o.bridge != "" {
			args = append(args, "--vm-bridge", o.bridge)
		}
		if o.taskPackage != "" {
			args = append(args, "--task-package", o.taskPackage)
		}
		n.sockDir = filepath.Join("/run/gvpn", netns.NameFor(nsPrefix, n.workdir))
	}
	args = append(args, o.runtimeArgs...)
	cfg := golemnet.ExeUnitConfig{
		Runtime:     runtimeBin,
		Workdir:     n.workdir,
		Hostname:    n.name,
		RuntimeArgs: args,
		Stderr:      logs,
	}
	if n.hub != nil {
		cfg.VPNEndpoint = n.hub.EndpointURL()
	}
	ctx := privtest.Context(t, 60*time.Second)
	dep, err := golemnet.Deploy(ctx, cfg)
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	n.deployed = dep
	eu, err := golemnet.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("%s: start: %v", n.name, err)
	}
	n.eu = eu
	t.Cleanup(func() {
		eu.Shutdown(context.Background())
		n.checkGone(t)
	})
}

// join sends the node's CreateNetwork and points the hub at its endpoint.
func (n *node) join(t *testing.T, ctx context.Context, hosts map[string]string) {
	t.Helper()
	ep, err := n.eu.CreateNetwork(ctx, golemnet.VPNNetwork{Addr: "192.168.12.0", Mask: "255.255.255.0", IfAddr: n.ip}, hosts)
	if err != nil {
		t.Fatalf("%s: CreateNetwork: %v", n.name, err)
	}
	addr, err := golemnet.ParseUDPEndpoint(ep)
	if err != nil {
		t.Fatal(err)
	}
	n.hub.SetRuntimeEndpoint(addr)
}

// run runs a command in the node's payload and fails the test unless it
// exits 0.
func (n *node) run(t *testing.T, ctx context.Context, bin string, args ...string) string {
	t.Helper()
	out, err := n.eu.Output(ctx, bin, args...)
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	return out
}

func (n *node) sh(t *testing.T, ctx context.Context, script string) string {
	t.Helper()
	return n.run(t, ctx, "/bin/sh", "-c", script)
}

// qemuPIDs lists the QEMU processes of the node's VM: those whose command
// line names its socket directory.
func (n *node) qemuPIDs() []int {
	if n.sockDir == "" {
		return nil
	}
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmd, []byte("qemu-system")) {
			continue
		}
		if bytes.Contains(cmd, []byte(n.sockDir+"/")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// checkGone checks that after Shutdown nothing of the node is left: no
// QEMU, no socket directory, no sandbox namespace.
func (n *node) checkGone(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for len(n.qemuPIDs()) > 0 {
		if time.Now().After(deadline) {
			t.Errorf("%s: QEMU left after Shutdown: pids %v", n.name, n.qemuPIDs())
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n.sockDir != "" {
		if _, err := os.Stat(n.sockDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: socket directory %s left after Shutdown (%v)", n.name, n.sockDir, err)
		}
	}
	name := netns.NameFor(nsPrefix, n.workdir)
	if _, err := os.Stat(filepath.Join("/run/netns", name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: network namespace %s left after Shutdown (%v)", n.name, name, err)
	}
	if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(out), name) {
		t.Errorf("%s: an interface named after the sandbox is left on the host:\n%s", n.name, out)
	}
}
