package vm

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gvpn/gvpn/runtime/image"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/payload"
	"github.com/gvpn/gvpn/test/privtest"
)

// guestTools are the commands the scenario runs in the guest, which differ
// between busybox (the initramfs) and a Debian root.
type guestTools struct {
	fetch string // prints the body of the URL that follows
}

var busyboxTools = guestTools{fetch: "wget -q -O -"}

// debianTools are a Debian minbase root's own tools.
var debianTools = guestTools{fetch: "curl -sS --fail --max-time 120"}

// vmScenario checks what a VM node does beyond the contract every kind
// keeps (test/contract, which checks vpn0, ping and TCP both ways,
// RunProcess, KillProcess, the agent's drops and a clean Shutdown between
// two VM nodes): it is a real guest; names resolve through its hosts file;
// it fetches from a netns node with its own tools, over a bridge that
// carries superframes; a file goes each way through the work volume; QEMU
// killed is reported and the sandbox recovers.
func vmScenario(t *testing.T, vmOpts nodeOpts, tools guestTools) {
	vm := &node{name: "node-vm", ip: "192.168.12.2"}
	ns := &node{name: "node-ns", ip: "192.168.12.3"}
	startHub(t, vm, ns)
	hosts := map[string]string{vm.name: vm.ip, ns.name: ns.ip}
	vm.start(t, vmOpts)
	ns.start(t, nodeOpts{})
	ctx := privtest.Context(t, 8*time.Minute)

	// CreateNetwork waits for the guest to boot.
	booting := time.Now()
	vm.join(t, ctx, hosts)
	t.Logf("VM booted and configured in %v", time.Since(booting).Round(time.Millisecond))
	ns.join(t, ctx, hosts)

	if vmOpts.taskPackage != "" {
		// The payload runs in the task package's root: Debian's own tools.
		if out := vm.run(t, ctx, "cat", "/etc/debian_version"); strings.TrimSpace(out) == "" {
			t.Fatal("no /etc/debian_version in the guest's root")
		}
		if out := vm.run(t, ctx, "/usr/bin/curl", "--version"); !strings.HasPrefix(out, "curl ") {
			t.Fatalf("curl --version in the guest: %q", out)
		}
	}

	// A real guest: its own kernel.
	host, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	guest := strings.TrimSpace(vm.run(t, ctx, "uname", "-r"))
	if guest == "" || guest == strings.TrimSpace(string(host)) {
		t.Fatalf("uname -r in the VM is %q, the host's is %q: not a guest", guest, strings.TrimSpace(string(host)))
	}
	if out := vm.run(t, ctx, "ping", "-c", "1", "-W", "5", ns.name); !strings.Contains(out, ns.ip) {
		t.Fatalf("ping %s in the VM did not resolve through its hosts file: %s", ns.name, out)
	}

	// HTTP, 5 MiB netns → VM, checked by hash: the test's own payload
	// server on the netns node, the guest's own client.
	const size = 5 << 20
	// Uploaded into the netns node's volume like a requestor's program:
	// that payload sees no host /tmp, where go test keeps this binary.
	self, _ := os.Executable()
	prog, err := golemnet.Install(ns.workdir, ns.deployed, self, "gvt-payload")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ns.eu.Spawn(ctx, "/usr/bin/env", payload.Env+"=http-serve", prog, "0.0.0.0:8080")
	if err != nil {
		t.Fatal(err)
	}
	ns.sh(t, ctx, "for i in $(seq 400); do ss -ltn | grep -q ':8080 ' && exit 0; sleep 0.05; done; exit 1")
	out := vm.sh(t, ctx, fmt.Sprintf("%s http://%s:8080/bytes/%d | sha256sum", tools.fetch, ns.name, size))
	if got := strings.Fields(out)[0]; got != payload.Hash(size) {
		t.Fatalf("HTTP %s → %s: body hash %s, want %s", ns.name, vm.name, got, payload.Hash(size))
	}
	if err := ns.eu.KillProcess(ctx, srv.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if r, err := srv.Wait(ctx); err != nil || r.ReturnCode != 128+15 {
		t.Fatalf("HTTP server after SIGTERM: rc %d err %v", r.ReturnCode, err)
	}
	// That transfer crossed the bridge as superframes (docs/bridge.md
	// §2.4), over virtio-serial or vsock alike.
	if l := golemnet.RuntimeLog(vm.workdir); !strings.Contains(l, "bridge: superframes with virtio-net headers both ways") {
		t.Fatalf("the VM's runtime log does not say the bridge carries superframes:\n%s", l)
	}

	// A file each way through the work volume, as the ExeUnit's uploads and
	// downloads reach it: <workdir>/vol-…/ on the host is /golem/work in
	// the guest.
	vols, _ := filepath.Glob(filepath.Join(vm.workdir, "vol-*"))
	if len(vols) != 1 {
		t.Fatalf("volume directories in the workdir: %v, want one", vols)
	}
	if err := os.WriteFile(filepath.Join(vols[0], "in.txt"), []byte("uploaded by the requestor\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := vm.run(t, ctx, "cat", "/golem/work/in.txt"); got != "uploaded by the requestor\n" {
		t.Fatalf("the guest read %q from the volume", got)
	}
	vm.sh(t, ctx, "uname -r > /golem/work/out.txt")
	if got, err := os.ReadFile(filepath.Join(vols[0], "out.txt")); err != nil || strings.TrimSpace(string(got)) != guest {
		t.Fatalf("the host read %q (%v) from the volume, want %q", got, err, guest)
	}

	// QEMU killed outright: the guest's running process is reported gone
	// (-1), and the sandbox boots the VM again and configures it.
	sleeper, err := vm.eu.Spawn(ctx, "sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	pids := vm.qemuPIDs()
	if len(pids) != 1 {
		t.Fatalf("QEMU processes of the VM node: %v, want one", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if r, err := sleeper.Wait(ctx); err != nil || r.ReturnCode != -1 {
		t.Fatalf("process in the killed VM: rc %d err %v, want -1", r.ReturnCode, err)
	}
	privtest.WaitFor(t, "the runtime's log to report QEMU's end", func() bool {
		return strings.Contains(golemnet.RuntimeLog(vm.workdir), "QEMU exited")
	})
	if got := strings.TrimSpace(vm.run(t, ctx, "uname", "-r")); got != guest {
		t.Fatalf("uname -r after the VM was booted again: %q", got)
	}
	vm.run(t, ctx, "ping", "-c", "1", "-W", "5", ns.ip)

	for _, n := range []*node{vm, ns} {
		if err := n.eu.ProtocolError(); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*node{vm, ns} {
		if err := n.eu.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		n.checkGone(t)
	}
}

// TestVMNodeVsock: vmScenario over a vsock bridge (QEMU's
// vhost-vsock-pci), where the host has vhost_vsock, with no task package:
// the guest runs from its initramfs, busybox. (test/contract's vm kind is
// that guest over virtio-serial.)
func TestVMNodeVsock(t *testing.T) {
	kernel, initrd := privtest.VMGuest(t)
	if f, err := os.OpenFile("/dev/vhost-vsock", os.O_RDWR, 0); err != nil {
		t.Skipf("skipped: no usable /dev/vhost-vsock here (%v; modprobe vhost_vsock on a host that has it); the VM tests run over virtio-serial", err)
	} else {
		f.Close()
	}
	vmScenario(t, nodeOpts{vm: true, kernel: kernel, initrd: initrd, bridge: "vsock"}, busyboxTools)
}

// TestDeployRefusesNonSquashfs: a task package that is none of the
// formats is refused by deploy, with an Err that says so (and not the
// provider's path), before any VM boots.
func TestDeployRefusesNonSquashfs(t *testing.T) {
	dir := t.TempDir()
	pkg := filepath.Join(dir, "task.tar.gz")
	if err := os.WriteFile(pkg, []byte("\x1f\x8b\x08\x00 this is a tarball, not a root file system image"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := golemnet.Deploy(privtest.Context(t, time.Minute), golemnet.ExeUnitConfig{
		Runtime:     runtimeBin,
		Workdir:     filepath.Join(dir, "work"),
		RuntimeArgs: []string{"--sandbox", "vm", "--task-package", pkg},
	})
	if err == nil {
		t.Fatal("deploy accepted a tarball as the guest's root")
	}
	// deploy's output goes to the requestor: the reason, never the
	// provider's path of the package (the log file has that).
	if e := res.Valid["Err"]; strings.Contains(e, dir) || !strings.Contains(e, "not a GVMI, squashfs") {
		t.Fatalf("deploy's Err: %q, want the squashfs reason without the host path %s", e, pkg)
	}
}

// TestVMNodeSquashfsRoot: vmScenario with a task package, a squashfs
// image of a Debian minbase root that the test builds (and caches beside
// the guest image), so the payload runs Debian's tools in the guest.
func TestVMNodeSquashfsRoot(t *testing.T) {
	kernel, initrd := privtest.VMGuest(t)
	root := debianRoot(t)
	vmScenario(t, nodeOpts{vm: true, kernel: kernel, initrd: initrd, taskPackage: root}, debianTools)
}

// TestVMNodeGVMISettings: a GVMI (the Debian root with a container config
// appended, as gvmkit-build writes it) boots, its Volumes are listed by
// deploy, and the payload gets its Env, WorkingDir and User.
func TestVMNodeGVMISettings(t *testing.T) {
	kernel, initrd := privtest.VMGuest(t)
	sq, err := os.ReadFile(debianRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg := `{"Env":["PATH=/usr/bin:/bin","GREETING=hello from the gvmi"],"WorkingDir":"/var","User":"nobody","Volumes":{"/data":{}}}`
	pkg := filepath.Join(t.TempDir(), "debian.gvmi")
	if err := os.WriteFile(pkg, image.AppendTrailer(sq, []byte(cfg)), 0o644); err != nil {
		t.Fatal(err)
	}
	vm := &node{name: "node-vm", ip: "192.168.12.2"}
	startHub(t, vm)
	vm.start(t, nodeOpts{vm: true, kernel: kernel, initrd: initrd, taskPackage: pkg})
	var vols string
	for _, v := range vm.deployed.Vols {
		vols += string(v)
	}
	if !strings.Contains(vols, `"/data"`) || !strings.Contains(vols, `"/golem/work"`) {
		t.Errorf("deploy vols %s, want /data beside /golem/work", vols)
	}
	ctx := privtest.Context(t, 8*time.Minute)
	vm.join(t, ctx, map[string]string{vm.name: vm.ip})
	out := vm.sh(t, ctx, `echo "$GREETING"; pwd; id -un; test -d /data && echo data`)
	if want := "hello from the gvmi\n/var\nnobody\ndata\n"; out != want {
		t.Errorf("in the guest: %q, want %q", out, want)
	}
}

// TestVMGuestNeverComesUp: a guest that cannot boot (an initramfs that is
// not one: the kernel panics, and QEMU, told not to reboot, ends) fails
// CreateNetwork at once with the end of the guest's console, and Shutdown
// still leaves nothing behind.
func TestVMGuestNeverComesUp(t *testing.T) {
	kernel, _ := privtest.VMGuest(t)
	bad := filepath.Join(t.TempDir(), "initrd.img")
	if err := os.WriteFile(bad, bytes.Repeat([]byte("not an initramfs "), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	vm := &node{name: "node-vm", ip: "192.168.12.2"}
	startHub(t, vm)
	vm.start(t, nodeOpts{vm: true, kernel: kernel, initrd: bad})
	ctx := privtest.Context(t, 5*time.Minute)
	_, err := vm.eu.CreateNetwork(ctx, golemnet.VPNNetwork{Addr: "192.168.12.0", Mask: "255.255.255.0", IfAddr: vm.ip},
		map[string]string{vm.name: vm.ip})
	if err == nil {
		t.Fatal("CreateNetwork succeeded in a guest that cannot boot")
	}
	if msg := err.Error(); !strings.Contains(msg, "QEMU ended before the agent said hello") || !strings.Contains(msg, "Kernel panic") {
		t.Fatalf("CreateNetwork error %q: want QEMU's end and the console's kernel panic", msg)
	}
	if err := vm.eu.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	vm.checkGone(t)
}
