package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/network"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/runtime/sandbox/agent"
	"github.com/gvpn/gvpn/runtime/sandbox/agent/vm"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/runtime/volume"
)

// vmKind boots a QEMU guest with gvpn-agent in its initramfs and the task
// package as its root (runtime/sandbox/agent/vm); it shares --agent-timeout
// with the agent kind.
var vmKind = &kind{
	name:  "vm",
	about: "vm (a QEMU\nguest the runtime boots, the task package as its root)",
	flags: func(fs *flag.FlagSet, o *Options) {
		fs.StringVar(&o.VMKernel, "vm-kernel", vmDefaultFile("vmlinuz"), "vm sandbox: guest `kernel` (make vm-image writes bin/vm/vmlinuz)")
		fs.StringVar(&o.VMInitrd, "vm-initrd", vmDefaultFile("initrd.img"), "vm sandbox: guest `initramfs` with gvpn-agent (make vm-image writes bin/vm/initrd.img)")
		fs.StringVar(&o.VMQEMU, "vm-qemu", "qemu-system-x86_64", "vm sandbox: the QEMU `binary` (KVM when /dev/kvm is usable, else TCG)")
		fs.IntVar(&o.VMMemory, "vm-memory", 512, "vm sandbox: guest memory in `MiB`")
		fs.IntVar(&o.VMCPUs, "vm-cpus", 1, "vm sandbox: guest `CPUs`")
		fs.StringVar(&o.VMBridge, "vm-bridge", "", "vm sandbox: the `kind` of channel by which the agent in the guest reaches the runtime:\nvirtio-serial or vsock (default: vsock where /dev/vhost-vsock is usable, else virtio-serial)")
	},
	flagNames: []string{"vm-kernel", "vm-initrd", "vm-qemu", "vm-memory", "vm-cpus", "vm-bridge"},
	validate: func(o *Options) error {
		if o.VMMemory < 64 {
			return fmt.Errorf("--vm-memory: %d MiB is too little for a guest", o.VMMemory)
		}
		if o.VMCPUs < 1 {
			return fmt.Errorf("--vm-cpus: %d: at least 1", o.VMCPUs)
		}
		if o.VMBridge != "" && o.VMBridge != "virtio-serial" && o.VMBridge != "vsock" {
			return fmt.Errorf("--vm-bridge: %q is not virtio-serial or vsock", o.VMBridge)
		}
		return nil
	},
	image:   imageBoot,
	volumes: func(_ *Options, vols volume.List) (volume.List, error) { return vmVolumes(vols) },
	checks: func(o *Options, log *logrus.Entry) []selfCheck {
		return []selfCheck{{"payload VM (QEMU, guest kernel and initramfs, task package)", func() error {
			return vm.Check(vmConfig(o, "selftest", "", nil, nil, log))
		}, "install QEMU (make vm-deps) and build the guest (make vm-image writes bin/vm/ next to the binary), or point --vm-qemu, --vm-kernel and --vm-initrd at them"}}
	},
	open: func(o *Options, a openArgs) (sandbox.Sandbox, network.Attacher, int) {
		box, unmount, err := openVMSandbox(o, a.hostname, a.vols, a.limits, a.img, a.logOut, a.log)
		if err != nil {
			a.log.WithError(err).Error("cannot start the VM sandbox")
			return nil, nil, 1
		}
		vb := &vmBox{Box: box, unmount: unmount}
		if !o.checkEnforced(box.Unenforced(), a.log) {
			vb.Close()
			return nil, nil, 1
		}
		return vb, vb, 0
	},
}

// vmDefaultTimeout is the VM sandbox's --agent-timeout when none is
// given: a guest under TCG on a busy host took over 30 s to boot here.
const vmDefaultTimeout = 2 * time.Minute

// vmVolumes keeps the host volumes, which reach the guest as shares;
// memory and storage volumes are the netns sandbox's only.
func vmVolumes(vols volume.List) (volume.List, error) {
	out := volume.List{}
	for _, v := range vols {
		if v.Kind != volume.Host {
			return nil, fmt.Errorf("--volume-override: volume %q: the VM sandbox shares host volumes only, not %s", v.Path, v.Kind)
		}
		out = append(out, v)
	}
	return out, nil
}

// vmDefaultFile is a guest file next to the runtime's binary
// (bin/gvpn-runtime → bin/vm/NAME), where make vm-image writes it.
func vmDefaultFile(name string) string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(exe), "vm", name)
}

func vmTimeout(o *Options) time.Duration {
	if o.agentTimeoutSet {
		return o.AgentTimeout
	}
	return vmDefaultTimeout
}

// vmConfig is the guest the flags describe; name is the sandbox's.
func vmConfig(o *Options, name, hostname string, volumes []vm.Volume, console io.Writer, log *logrus.Entry) vm.Config {
	return vm.Config{
		Name:      name,
		Kernel:    o.VMKernel,
		Initrd:    o.VMInitrd,
		QEMU:      o.VMQEMU,
		MemoryMiB: o.VMMemory,
		CPUs:      o.VMCPUs,
		Root:      taskPackage(o),
		Volumes:   volumes,
		Hostname:  hostname,
		SocketDir: filepath.Join("/run/gvpn", name),
		Bridge:    o.VMBridge,
		Timeout:   vmTimeout(o),
		Console:   console,
		Log:       log,
	}
}

// openVMSandbox boots the payload VM for --sandbox vm. The guest's console
// goes to stderr with the runtime's logs.
//
// The returned function unmounts the volumes' host-side mounts; call it
// once the box is closed.
func openVMSandbox(o *Options, hostname string, vols volume.List, lim limits.Limits, img *imageState, stderr io.Writer, log *logrus.Entry) (*agent.Box, func(), error) {
	if err := vols.Prepare(o.Workdir, os.Geteuid()); err != nil {
		return nil, nil, err
	}
	var shares []vm.Volume
	for _, v := range vols {
		if v.Kind == volume.Host {
			shares = append(shares, vm.Volume{Host: filepath.Join(o.Workdir, v.Name), Guest: v.Path})
		}
	}
	name := netns.NameFor(o.SandboxPrefix, o.Workdir)
	cfg := vmConfig(o, name, hostname, shares, stderr, log)
	cfg.Limits, cfg.LimitsName, cfg.Workdir, cfg.RequireLimits = lim, name, o.Workdir, o.RequireLimits
	if img != nil {
		cfg.Env, cfg.Dir, cfg.User = img.Config.Env, img.Config.WorkingDir, img.Config.User
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	box, err := vm.Open(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	// The guest writes into the shares as the netns payload writes into
	// its volumes: the ExeUnit's transfers must not follow its links. The
	// record goes into the socket directory the box claimed, where the
	// crash sweep (netns.Sweep) finds it.
	mounts, err := vols.MountHost(o.Workdir, filepath.Join(cfg.SocketDir, volume.MountsRecord))
	switch {
	case errors.Is(err, volume.ErrNoSymfollow) && o.UnsafeVolumeLinks:
		log.WithError(err).Warn("UNSAFE: host volumes are not nosymfollow; the ExeUnit's transfers follow links the payload plants in them")
	case err != nil:
		box.Close()
		return nil, nil, err
	}
	log.WithField("control", box.Control().String()).Info("payload VM started; it boots while the service runs")
	return box, func() {
		if err := mounts.Unmount(); err != nil {
			log.WithError(err).Error("unmount the volumes")
		}
	}, nil
}

// vmBox is the VM sandbox as the service closes it: the box, then the
// volumes' host-side mounts. Both go before the reply to Shutdown, after
// which the ExeUnit may SIGKILL the runtime; a deferred unmount would
// never run then.
type vmBox struct {
	*agent.Box
	unmount func()
}

// Close closes the box and then unmounts the volumes; again, it does
// nothing more.
func (b *vmBox) Close() error {
	err := b.Box.Close()
	b.unmount()
	return err
}
