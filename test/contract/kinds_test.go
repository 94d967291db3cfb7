package contract

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gvpn/gvpn/runtime/image"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// busybox is the one path of busybox in every kind's payload: the host's
// (which netns and agent payloads see), the image's and the VM guest's.
// The suite's shell, web server, client and hashes are its applets, so
// that the same commands run in every kind.
const busybox = "/bin/busybox"

// A kind is one row of the table: one way gvpn-runtime sandboxes a
// payload.
type kind struct {
	name string
	// prepare skips t, saying why, when this machine cannot run the kind,
	// builds what the kind's nodes share, and returns how the ExeUnit
	// launches the runtime for one node (creating what that node's payload
	// needs, removed when t ends).
	prepare func(t *testing.T) func(t *testing.T, n *node) launch
	// ping is the argv of a ping the kind's payload can run, to which the
	// suite adds -c COUNT -W SECONDS DESTINATION.
	ping []string
	// rootPayload says the payload runs as root in its own machine (the
	// agent's namespace, the VM's guest) and so can send what it likes on
	// vpn0 itself; in the other kinds payloads have no capabilities and the
	// test sends as the payload by entering the sandbox's namespace.
	rootPayload bool
	// dropPrefix starts the gvpn.vpn name of a drop of the payload's
	// frames: "agent_" where gvpn-agent filters them inside the payload and
	// reports its counts to the runtime.
	dropPrefix string
	// volumes says deploy lists the /golem/work volume, which the runtime
	// maps into the payload; an agent's payload has its own machine's
	// disks, and deploy lists none.
	volumes bool
}

// launch is how the ExeUnit starts one node: the runtime's flags beyond
// the suite's own, and the requestor's image (--task-package), if any.
type launch struct {
	args        []string
	taskPackage string
}

var kinds = []kind{
	{
		name: "netns",
		prepare: func(t *testing.T) func(*testing.T, *node) launch {
			privtest.RequireRoot(t)
			return func(*testing.T, *node) launch { return launch{} }
		},
		ping:    []string{"/bin/ping"},
		volumes: true,
	},
	{
		name: "agent",
		prepare: func(t *testing.T) func(*testing.T, *node) launch {
			privtest.RequireRoot(t)
			return func(t *testing.T, n *node) launch {
				// A namespace the test makes stands for the payload's machine.
				ns, hosts := privtest.NewNetnsWithHosts(t, sandboxPrefix)
				n.payloadNS = ns
				return launch{args: []string{"--sandbox", "agent", "--agent-timeout", "20s",
					"--agent-command", strings.Join([]string{"exec ip netns exec", ns, agentBin,
						"--hosts-file", hosts, "--log-level debug"}, " ")}}
			}
		},
		ping:        []string{"/bin/ping"},
		rootPayload: true,
		dropPrefix:  "agent_",
	},
	{
		name: "vm",
		prepare: func(t *testing.T) func(*testing.T, *node) launch {
			kernel, initrd := privtest.VMGuest(t)
			return func(*testing.T, *node) launch {
				// TCG on a machine shared with other tests: give the boot time.
				return launch{args: []string{"--sandbox", "vm", "--vm-kernel", kernel, "--vm-initrd", initrd, "--agent-timeout", "150s"}}
			}
		},
		ping:        []string{busybox, "ping"},
		rootPayload: true,
		dropPrefix:  "agent_",
		volumes:     true,
	},
	{
		name: "image",
		prepare: func(t *testing.T) func(*testing.T, *node) launch {
			privtest.RequireRoot(t)
			pkg := busyboxGVMI(t)
			return func(*testing.T, *node) launch { return launch{taskPackage: pkg} }
		},
		// gvpn-lab's ping, on an ICMP datagram socket: busybox's needs a
		// raw socket, which an image's payload does not get.
		ping:    []string{"/bin/gvpn-lab", "ping"},
		volumes: true,
	},
}

// busyboxGVMI builds a requestor's image as gvpn-lab mkimage --busybox
// does (what gvmkit-build would make, offline): the host's static busybox
// with its applets, and gvpn-lab for its ping.
func busyboxGVMI(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"busybox", "mksquashfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipped: %s is not installed (make vm-deps installs busybox-static and squashfs-tools)", tool)
		}
	}
	root := filepath.Join(t.TempDir(), "root")
	if err := golemnet.BusyboxRoot(root); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", labBin, filepath.Join(root, "bin", "gvpn-lab")).CombinedOutput(); err != nil {
		t.Fatalf("cp %s: %v %s", labBin, err, out)
	}
	pkg := filepath.Join(t.TempDir(), "busybox.gvmi")
	if _, err := golemnet.MakeGVMI(root, pkg, image.Config{Env: []string{"PATH=/bin"}, Cmd: []string{"/bin/sh"}}); err != nil {
		t.Fatal(err)
	}
	return pkg
}
