// Package vm is gvpn-runtime's VM sandbox: the payload runs in a QEMU
// guest that the runtime boots itself (a kernel and initramfs made by
// `make vm-image`, the task package as its root when there is one), with
// gvpn-agent inside creating vpn0 there. The bridge crosses virtio-serial
// ports whose host ends are the runtime's unix sockets, so that once QEMU
// runs, the sandbox is an agent sandbox (package agent) like any other:
// the same control protocol, process semantics and reconnection.
package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/sandbox/agent"
)

// Volume is a host directory the guest sees at Guest, as a 9p share.
type Volume struct {
	Host  string // an existing directory on the host
	Guest string // an absolute path inside the guest
}

// Config says what to boot.
type Config struct {
	// Name names the VM for QEMU and ps (-name).
	Name string
	// Kernel and Initrd are the guest's (bin/vm/vmlinuz and
	// bin/vm/initrd.img from make vm-image).
	Kernel, Initrd string
	// QEMU is the emulator binary, a path or a name looked up in PATH;
	// empty means DefaultQEMU.
	QEMU string
	// MemoryMiB and CPUs size the guest; zero means the defaults.
	MemoryMiB, CPUs int
	// Root, when set, is a squashfs image (the task package) that the guest
	// mounts read-only, under a writable overlay in memory, as its root.
	// Empty: the guest runs from its initramfs (busybox).
	Root string
	// Volumes are shared into the guest.
	Volumes []Volume
	// Hostname is the guest's hostname; empty means "golem".
	Hostname string
	// SocketDir is the directory Open creates for the bridge's unix
	// sockets (bridge.sock, bridge.sock.ctl) and Close removes.
	SocketDir string
	// Bridge is BridgeVirtioSerial, BridgeVsock (QEMU's vhost-vsock-pci,
	// which needs the host's vhost_vsock) or BridgeAuto: vsock where
	// /dev/vhost-vsock is usable, else virtio-serial.
	Bridge string
	// Timeout bounds the wait for the agent's hello (the boot) and for each
	// of its answers; zero means agent.DefaultTimeout.
	Timeout time.Duration
	// Console receives the guest's serial console (its init's and
	// gvpn-agent's logs); nil discards it. The last of it is quoted in
	// errors either way.
	Console io.Writer
	// Log receives the sandbox's logs; nil discards them.
	Log *logrus.Entry

	// Limits are the agreement's: with memory or CPU given, they size the
	// guest (MemoryMiB, CPUs) and QEMU runs in the activity's cgroup
	// LimitsName (see sizeForLimits); with storage, the volumes under
	// Workdir are on the activity's disk. LimitsName empty: no cgroup.
	Limits     limits.Limits
	LimitsName string
	Workdir    string
	// RequireLimits: Open fails, before QEMU runs, when a limit cannot be
	// enforced.
	RequireLimits bool
	// The image's settings for payload processes (agent.Config's
	// ProcessEnv, ProcessDir, ProcessUser): its Env, WorkingDir and User.
	Env  []string
	Dir  string
	User string
}

// Open checks cfg, starts QEMU and returns the sandbox at once, while the
// guest boots: the first request (CreateNetwork, RunProcess) waits for the
// agent's hello up to Timeout and fails, quoting the console's last lines,
// when it does not come or QEMU ends first. Closing the returned Box asks
// the agent to shut down (the guest then powers off), stops QEMU if it has
// not ended, and removes the sockets.
func Open(ctx context.Context, cfg Config) (*agent.Box, error) {
	defaults(&cfg)
	if err := check(&cfg); err != nil {
		return nil, err
	}
	if cfg.SocketDir == "" {
		return nil, errors.New("vm sandbox: no socket directory")
	}
	return open(ctx, cfg)
}

// Check reports whether cfg can boot here (QEMU found, the guest's files
// and the task package usable, sizes in range) without starting anything:
// what gvpn-runtime test checks for --sandbox vm.
func Check(cfg Config) error {
	defaults(&cfg)
	return check(&cfg)
}

func defaults(cfg *Config) {
	if cfg.QEMU == "" {
		cfg.QEMU = DefaultQEMU
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = DefaultMemoryMiB
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = DefaultCPUs
	}
	if cfg.Name == "" {
		cfg.Name = "gvpn"
	}
}

func open(ctx context.Context, cfg Config) (*agent.Box, error) {
	groupLimits, diskDirs := sizeForLimits(&cfg)
	var b bridge
	switch cfg.Bridge {
	case BridgeVsock:
		if !deviceUsable("/dev/vhost-vsock") {
			return nil, errors.New("vm sandbox: a vsock bridge needs /dev/vhost-vsock (modprobe vhost_vsock); use the virtio-serial bridge")
		}
		b = vsockBridge(cfg.Name)
	case BridgeAuto:
		if deviceUsable("/dev/vhost-vsock") {
			b = vsockBridge(cfg.Name)
			break
		}
		fallthrough
	case BridgeVirtioSerial:
		var err error
		if b, err = serialBridge(cfg.SocketDir); err != nil {
			return nil, fmt.Errorf("vm sandbox: socket directory %s: %w", cfg.SocketDir, err)
		}
	default:
		return nil, fmt.Errorf("vm sandbox: bridge %q: want %s or %s", cfg.Bridge, BridgeVirtioSerial, BridgeVsock)
	}
	accel := "tcg"
	if kvmUsable() {
		accel = "kvm"
	}
	argv := append([]string{cfg.QEMU}, qemuArgs(cfg, b, accel)...)
	if cfg.Log != nil {
		cfg.Log.WithFields(logrus.Fields{"kernel": cfg.Kernel, "initrd": cfg.Initrd, "root": cfg.Root,
			"memory_mib": cfg.MemoryMiB, "cpus": cfg.CPUs, "accel": accel, "volumes": len(cfg.Volumes),
			"bridge": b.guest.String()}).Info("booting the payload VM")
	}
	// The sandbox is an agent sandbox whose launcher is QEMU, in the
	// activity's cgroup with room of its own beside the guest's.
	return agent.Open(ctx, agent.Config{
		Bridge:    b.listen,
		SocketDir: cfg.SocketDir,
		Launch: agent.Launch{
			Argv:   argv,
			Name:   "QEMU",
			Output: cfg.Console,

			LimitsName: cfg.LimitsName,
			Limits:     groupLimits,
			Granted:    cfg.Limits,
			Workdir:    cfg.Workdir,
			DiskDirs:   diskDirs,

			RequireLimits: cfg.RequireLimits,
		},
		Kind:    "vm",
		Lazy:    true,
		Timeout: cfg.Timeout,
		Log:     cfg.Log,

		ProcessEnv:  cfg.Env,
		ProcessDir:  cfg.Dir,
		ProcessUser: cfg.User,
	})
}

// check resolves and validates cfg's files, naming the setting at fault.
func check(cfg *Config) error {
	q, err := exec.LookPath(cfg.QEMU)
	if err != nil {
		return fmt.Errorf("vm sandbox: QEMU %q not found (install qemu-system-x86 or pass --vm-qemu): %w", cfg.QEMU, err)
	}
	cfg.QEMU = q
	for _, f := range []struct{ what, path string }{{"kernel", cfg.Kernel}, {"initrd", cfg.Initrd}} {
		if f.path == "" {
			return fmt.Errorf("vm sandbox: no guest %s (make vm-image builds bin/vm/)", f.what)
		}
		fi, err := os.Stat(f.path)
		if err != nil {
			return fmt.Errorf("vm sandbox: guest %s: %w (make vm-image builds bin/vm/)", f.what, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("vm sandbox: guest %s %s is not a regular file", f.what, f.path)
		}
	}
	if cfg.Root != "" {
		if err := CheckRoot(cfg.Root); err != nil {
			return fmt.Errorf("vm sandbox: %w", err)
		}
	}
	if cfg.MemoryMiB < 64 {
		return fmt.Errorf("vm sandbox: memory %d MiB is too little for the guest (at least 64)", cfg.MemoryMiB)
	}
	if cfg.CPUs < 1 || cfg.CPUs > 255 {
		return fmt.Errorf("vm sandbox: cpus %d out of range 1…255", cfg.CPUs)
	}
	for _, v := range cfg.Volumes {
		if err := checkGuestPath(v.Guest); err != nil {
			return fmt.Errorf("vm sandbox: volume: %w", err)
		}
		fi, err := os.Stat(v.Host)
		if err != nil {
			return fmt.Errorf("vm sandbox: volume %s: %w", v.Guest, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("vm sandbox: volume %s: %s is not a directory", v.Guest, v.Host)
		}
	}
	return nil
}

// kvmUsable reports whether QEMU can run the stock guest kernel under KVM:
// /dev/kvm opens and a hardware KVM module (kvm_intel, kvm_amd) drives it.
// A host whose /dev/kvm is PVM's (kvm_pvm, a paravirtualised KVM inside a
// cloud guest) opens fine but runs only PVM-enabled guest kernels: a
// Debian guest hangs there without a word, so TCG it is.
func kvmUsable() bool {
	if !deviceUsable("/dev/kvm") {
		return false
	}
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if _, err := os.Stat("/sys/module/" + m); err == nil {
			return true
		}
	}
	return false
}

// deviceUsable reports whether QEMU can open a host device: /dev/kvm
// (without it the guest runs under TCG, slower but the same), or
// /dev/vhost-vsock.
func deviceUsable(dev string) bool {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}
