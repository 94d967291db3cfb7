package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/runtime/sandbox/agent/vm"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/runtime/volume"
	"github.com/gvpn/gvpn/tap"
)

// Capability bits (linux/capability.h) that Golem VPN needs.
const (
	capDacOverride = 1  // /dev/net/tun, /run/netns/* (mode 0), /run/gvpn
	capNetAdmin    = 12 // TAP devices, addresses, routes
	capSysChroot   = 18 // setns into the sandbox's mount namespace
	capSysAdmin    = 21 // network and mount namespaces, the hosts bind mount
)

// selfTest checks, for real, everything a VPN activity needs on this host:
// privileges, /dev/net/tun, and creating a sandbox namespace with a TAP in
// it. The ExeUnit shows the output and fails the provider's runtime test on
// a non-zero exit.
func selfTest(o *Options, stderr io.Writer, log *logrus.Entry) int {
	checks := []struct {
		name string
		run  func() error
	}{
		{"privileges (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_CHROOT, CAP_DAC_OVERRIDE)", checkCaps},
		{"/dev/net/tun", checkTun},
		{"sandboxes left by runtimes that died removed", func() error { return sweep(o, log) }},
		{"network namespace sandbox with a TAP device and a payload", func() error { return checkSandbox(o, log) }},
	}
	u, root, err := payloadUser(o)
	if err != nil {
		fmt.Fprintf(stderr, "gvpn-runtime test: FAIL payload user: %v\n", err)
		return 1
	}
	if root {
		warnRoot(log)
		fmt.Fprintf(stderr, "gvpn-runtime test: WARN payloads run as %s\n", describePayload(u, root))
	} else {
		fmt.Fprintf(stderr, "gvpn-runtime test: ok   payloads run as %s\n", describePayload(u, root))
	}
	if o.UnsafeVolumeLinks {
		if err := volumeLinksSafe(); err != nil {
			fmt.Fprintf(stderr, "gvpn-runtime test: WARN --unsafe-volume-links: the ExeUnit's transfers follow links payloads plant in their volumes: %v\n", err)
		} else {
			fmt.Fprintf(stderr, "gvpn-runtime test: ok   volumes are mounted nosymfollow; --unsafe-volume-links is not needed on this kernel\n")
		}
	}
	if o.Sandbox == "vm" {
		checks = append(checks, struct {
			name string
			run  func() error
		}{"payload VM (QEMU, guest kernel and initramfs, task package)", func() error {
			return vm.Check(vmConfig(o, "selftest", "", nil, nil, log))
		}})
	}
	failed := 0
	if !checkLimits(o, stderr) {
		failed++
	}
	for _, c := range checks {
		if err := c.run(); err != nil {
			fmt.Fprintf(stderr, "gvpn-runtime test: FAIL %s: %v\n", c.name, err)
			failed++
			continue
		}
		fmt.Fprintf(stderr, "gvpn-runtime test: ok   %s\n", c.name)
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "gvpn-runtime test: %d of %d checks failed: Golem VPN cannot work on this host\n", failed, len(checks))
		return 1
	}
	fmt.Fprintf(stderr, "gvpn-runtime test: all %d checks passed (version %s)\n", len(checks), Version)
	return 0
}

func checkCaps() error {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		hex, ok := strings.CutPrefix(line, "CapEff:")
		if !ok {
			continue
		}
		eff, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		if err != nil {
			return fmt.Errorf("parse CapEff: %w", err)
		}
		var missing []string
		if eff&(1<<capNetAdmin) == 0 {
			missing = append(missing, "CAP_NET_ADMIN")
		}
		if eff&(1<<capSysAdmin) == 0 {
			missing = append(missing, "CAP_SYS_ADMIN")
		}
		if eff&(1<<capDacOverride) == 0 {
			missing = append(missing, "CAP_DAC_OVERRIDE")
		}
		if eff&(1<<capSysChroot) == 0 {
			missing = append(missing, "CAP_SYS_CHROOT")
		}
		if len(missing) > 0 {
			return fmt.Errorf("missing %s: run the provider as root, or: setcap cap_net_admin,cap_sys_admin,cap_sys_chroot,cap_dac_override+ep %s",
				strings.Join(missing, ", "), selfPath())
		}
		return nil
	}
	return errors.New("no CapEff line in /proc/self/status")
}

func checkTun() error {
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%w (load the tun module: modprobe tun; in a container pass --device /dev/net/tun)", err)
	}
	return f.Close()
}

func checkSandbox(o *Options, log *logrus.Entry) error {
	dir, err := os.MkdirTemp("", "gvpn-selftest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	u, root, err := payloadUser(o)
	if err != nil {
		return err
	}
	// With the default volume, so that the host can make it nosymfollow
	// (safe for the ExeUnit's transfers) or says why not.
	vols, _ := volume.Plan("")
	sb, err := netns.Open(netns.Config{Workdir: dir, NamePrefix: o.SandboxPrefix + "t", Log: logrus.NewEntry(quiet), User: u, Root: root,
		Volumes: vols, UnsafeVolumeLinks: o.UnsafeVolumeLinks})
	if err != nil {
		return err
	}
	defer sb.Close()
	dev, err := tap.Create(sb.NetNS(), tap.Config{Name: o.TapName})
	if err != nil {
		return err
	}
	if err := dev.Close(); err != nil {
		return err
	}
	return runTrue(sb)
}

// runTrue runs `true` as a payload: the sandbox's init, the privilege drop
// and the exec all work on this host.
func runTrue(sb *netns.Sandbox) error {
	p, err := sb.Start(sandbox.ProcessSpec{Bin: "true"})
	if err != nil {
		return err
	}
	rc := make(chan int32, 1)
	var stderr []byte // written before Exited, by the same goroutine chain
	p.Stream(func(ev sandbox.Event) {
		if len(stderr) < 4096 {
			stderr = append(stderr, ev.Stderr...)
		}
		if ev.Exited {
			rc <- ev.ReturnCode
		}
	})
	if code := <-rc; code != 0 {
		return fmt.Errorf("a payload running `true` exited with %d: %s", code, strings.TrimSpace(string(stderr)))
	}
	return nil
}

// sweep removes the sandboxes of runtimes that died (never a live one's);
// start and test run it, so that a crash leaves nothing behind for long.
func sweep(o *Options, log *logrus.Entry) error {
	removed, err := netns.Sweep(o.SandboxPrefix, log)
	if len(removed) > 0 {
		log.WithField("sandboxes", removed).Warn("removed sandboxes left by runtimes that died")
	}
	if err != nil {
		log.WithError(err).Warn("sweeping sandboxes left by runtimes that died")
	}
	return err
}

// volumeLinksSafe tells whether host volumes can be made nosymfollow here.
func volumeLinksSafe() error {
	dir, err := os.MkdirTemp("", "gvpn-selftest-vol-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	return volume.CheckNoSymfollow(dir)
}

// selfPath is this binary's path, for the setcap hint.
func selfPath() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "gvpn-runtime"
}

// checkLimits says which of the agreement's limits this host can enforce
// (with the flags' limits, or a typical agreement when none are given) by
// making a probe cgroup and disk. It fails only with --require-limits.
func checkLimits(o *Options, stderr io.Writer) bool {
	l, _ := o.limits() // checked by validate
	if l.CPUCores == 0 && l.MemBytes == 0 && l.StorageBytes == 0 {
		l = limits.Limits{CPUCores: 1, MemBytes: limits.GiB, Pids: o.PidsLimit, StorageBytes: limits.GiB}
	}
	un := limits.Check(l)
	switch {
	case len(un) == 0:
		fmt.Fprintf(stderr, "gvpn-runtime test: ok   the agreement's limits are enforced (cgroup v%d: cpu, memory, pids; storage: a loop-mounted disk)\n", limits.Version())
		return true
	case o.RequireLimits:
		fmt.Fprintf(stderr, "gvpn-runtime test: FAIL the agreement's limits (--require-limits): %s\n", limits.Describe(un))
		return false
	default:
		fmt.Fprintf(stderr, "gvpn-runtime test: WARN not enforced on this host: %s\n", limits.Describe(un))
		return true
	}
}
