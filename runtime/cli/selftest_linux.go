package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/proc"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/runtime/volume"
	"github.com/gvpn/gvpn/tap"
)

// selfCheck is one line of `gvpn-runtime test`: what is checked, and
// what the operator does when it fails.
type selfCheck struct {
	name string
	run  func() error
	fix  string
}

// selfTest checks, for real, everything a VPN activity needs on this host:
// the payload user, privileges, /dev/net/tun, and creating a sandbox
// namespace with a TAP in it. ya-provider runs it at start-up and stops
// altogether, every runtime with it, when it exits non-zero, often with
// nothing but the exit code in its log; so each failure says which check
// failed and how to fix it, on one line.
func selfTest(o *Options, stderr io.Writer, log *logrus.Entry) int {
	var (
		payload    string
		payloadErr error
	)
	checks := []selfCheck{
		{"payload user", func() error {
			u, root, err := payloadUser(o)
			if err != nil {
				payloadErr = err
				return err
			}
			if root {
				warnRoot(log)
			}
			payload = describePayload(u, root)
			return nil
		}, "set --payload-user in the descriptor's extra-args (--runtime-arg=--payload-user=...) to a user this runtime can switch to, or remove it"},
		{"privileges (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_CHROOT, CAP_DAC_OVERRIDE)", checkCaps,
			fmt.Sprintf("run the provider as root, or give the binary file capabilities (docs/provider.md, step 4): sudo make install-provider, or setcap %s %s on a file system not mounted nosuid", fileCaps, selfPath())},
		{"/dev/net/tun", checkTun, "load the tun module (modprobe tun); in a container pass --device /dev/net/tun"},
		{"sandboxes left by runtimes that died removed", func() error { return sweep(o, log) },
			fmt.Sprintf("remove them by hand: ip netns delete each %s* namespace of no live runtime and rm -r its /run/gvpn directory, or run this test once as root", o.SandboxPrefix)},
		{"network namespace sandbox with a TAP device and a payload", func() error {
			if payloadErr != nil {
				return errNotRun
			}
			return checkSandbox(o, log)
		},
			"run again with --log-level=debug for the details; the kernel needs network, mount, PID, IPC and UTS namespaces and /run must be writable by the runtime"},
	}
	if netns.CanMapIDRanges() {
		checks = append(checks, selfCheck{"no host user or subordinate id range in the payloads' host ids",
			func() error { return netns.CheckIDRange("/etc") },
			"give those users ids outside 0x60000000-0x6fffffff (usermod -u, groupmod -g, /etc/subuid and /etc/subgid): a payload would own their files"})
	}
	if o.UnsafeVolumeLinks {
		if err := volumeLinksSafe(); err != nil {
			fmt.Fprintf(stderr, "gvpn-runtime test: WARN --unsafe-volume-links: the ExeUnit's transfers follow links payloads plant in their volumes: %v\n", err)
		} else {
			fmt.Fprintf(stderr, "gvpn-runtime test: ok   volumes are mounted nosymfollow; --unsafe-volume-links is not needed on this kernel\n")
		}
	}
	if k := o.chosenKind(); k != nil && k.checks != nil {
		checks = append(checks, k.checks(o, log)...)
	}
	failed := 0
	if !checkLimits(o, stderr) {
		failed++
	}
	for _, c := range checks {
		err := c.run()
		if errors.Is(err, errNotRun) {
			fmt.Fprintf(stderr, "gvpn-runtime test: skip %s: it needs a payload user\n", c.name)
			continue
		}
		if err != nil {
			fmt.Fprintf(stderr, "gvpn-runtime test: FAIL %s: %v; to fix: %s\n", c.name, err, c.fix)
			failed++
			continue
		}
		if payload != "" && c.name == "payload user" {
			level := "ok  "
			if o.PayloadRoot {
				level = "WARN"
			}
			fmt.Fprintf(stderr, "gvpn-runtime test: %s payloads run as %s\n", level, payload)
			continue
		}
		fmt.Fprintf(stderr, "gvpn-runtime test: ok   %s\n", c.name)
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "gvpn-runtime test: %d of %d checks failed: Golem VPN cannot work on this host, and ya-provider stops every runtime (vm too) while this fails: fix the FAIL lines above, or move ya-runtime-gvpn.json out of the plugins directory until they pass\n", failed, len(checks))
		return 1
	}
	fmt.Fprintf(stderr, "gvpn-runtime test: all %d checks passed (version %s)\n", len(checks), Version)
	return 0
}

// errNotRun is a check's answer when one it depends on failed.
var errNotRun = errors.New("not run")

// fileCaps is the file capability set a non-root provider gives the
// binary (docs/provider.md, the Makefile's install-provider).
const fileCaps = "cap_net_admin,cap_sys_admin,cap_sys_chroot,cap_dac_override+ep"

func checkCaps() error {
	eff, err := proc.EffectiveCaps()
	if err != nil {
		return err
	}
	var missing []string
	// /dev/net/tun, /run/netns/* (mode 0) and /run/gvpn take DAC_OVERRIDE;
	// setns into the sandbox's mount namespace SYS_CHROOT.
	for _, c := range []struct {
		bit  int
		name string
	}{{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}, {unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}, {unix.CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"}, {unix.CAP_SYS_CHROOT, "CAP_SYS_CHROOT"}} {
		if !proc.HasCaps(eff, c.bit) {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	return nil
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
	sbLog := logrus.NewEntry(quiet)
	if log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		sbLog = log.WithField("check", "sandbox")
	}
	u, root, err := payloadUser(o)
	if err != nil {
		return err
	}
	// With the default volume, so that the host can make it nosymfollow
	// (safe for the ExeUnit's transfers) or says why not.
	vols, _ := volume.Plan("")
	sb, err := netns.Open(netns.Config{Workdir: dir, NamePrefix: o.SandboxPrefix + "t", Log: sbLog, User: u, Root: root,
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
