package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/sandbox/agent"
	"github.com/gvpn/gvpn/runtime/sandbox/agent/vm"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
)

// vmDefaultTimeout is the VM sandbox's --agent-timeout when none is
// given: a guest under TCG on a busy host took over 30 s to boot here.
const vmDefaultTimeout = 2 * time.Minute

// vmWorkVolume is the volume every VM activity gets, like the /golem/work
// of Golem's own images.
const vmWorkVolume = "/golem/work"

// vmVolumeName is the workdir directory of the volume at guest path p, the
// name the ExeUnit maps container paths under p to.
func vmVolumeName(p string) string {
	h := sha256.Sum256([]byte(p))
	return "vol-" + hex.EncodeToString(h[:8])
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

// vmRoot is the task package the guest boots from, if any.
func vmRoot(o *Options) string {
	if len(o.TaskPackages) == 0 {
		return ""
	}
	return o.TaskPackages[len(o.TaskPackages)-1]
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
		Root:      vmRoot(o),
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
func openVMSandbox(o *Options, hostname string, stderr io.Writer, log *logrus.Entry) (*agent.Box, error) {
	work := filepath.Join(o.Workdir, vmVolumeName(vmWorkVolume))
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, fmt.Errorf("volume %s: %w", vmWorkVolume, err)
	}
	name := netns.NameFor(o.SandboxPrefix, o.Workdir)
	cfg := vmConfig(o, name, hostname, []vm.Volume{{Host: work, Guest: vmWorkVolume}}, stderr, log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	box, err := vm.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	log.WithField("control", box.Control().String()).Info("payload VM started; it boots while the service runs")
	return box, nil
}
