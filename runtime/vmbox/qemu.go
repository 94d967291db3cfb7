package vmbox

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gvpn/gvpn/vsock"
)

// The names the guest's init and gvpn-agent know the bridge by: the data
// port, and the control port beside it (vsock.Addr.Control).
const (
	DataPort    = "gvpn.bridge"
	ControlPort = DataPort + ".ctl"
)

// Defaults of the Config sizes and program.
const (
	DefaultQEMU      = "qemu-system-x86_64"
	DefaultMemoryMiB = 512
	DefaultCPUs      = 1
)

// qemuArgs returns QEMU's arguments for cfg (after the program name), with
// the bridge's data and control unix sockets at data and ctl. accel is
// "kvm" or "tcg".
//
// The guest has no network card: its only link to the VPN is gvpn-agent's
// TAP, fed through the virtio-serial ports. QEMU dials the runtime's
// listening sockets (server=off) and dials again a second after losing
// them (reconnect=1), the way the agent re-dials a unix or vsock bridge.
func qemuArgs(cfg Config, data, ctl, accel string) []string {
	args := []string{
		"-name", qemuEscape(cfg.Name),
		"-accel", accel,
		"-m", strconv.Itoa(cfg.MemoryMiB),
		"-smp", strconv.Itoa(cfg.CPUs),
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-no-reboot", // a guest reboot or panic ends QEMU, so that it is reported
		"-serial", "stdio",
		"-kernel", cfg.Kernel,
		"-initrd", cfg.Initrd,
		"-append", kernelCmdline(cfg),
		"-device", "virtio-serial-pci,id=gvpnserial",
		"-chardev", "socket,id=gvpndata,reconnect=1,path=" + qemuEscape(data),
		"-device", "virtserialport,bus=gvpnserial.0,chardev=gvpndata,name=" + DataPort,
		"-chardev", "socket,id=gvpnctl,reconnect=1,path=" + qemuEscape(ctl),
		"-device", "virtserialport,bus=gvpnserial.0,chardev=gvpnctl,name=" + ControlPort,
	}
	if accel == "kvm" {
		args = append(args, "-cpu", "host")
	}
	if cfg.Root != "" {
		args = append(args, "-drive", "if=virtio,format=raw,readonly=on,file="+qemuEscape(cfg.Root))
	}
	for i, v := range cfg.Volumes {
		tag := volumeTag(i)
		args = append(args,
			"-fsdev", "local,id="+tag+",security_model=passthrough,path="+qemuEscape(v.Host),
			"-device", "virtio-9p-pci,fsdev="+tag+",mount_tag="+tag)
	}
	return args
}

// kernelCmdline tells the guest's init what to do (vm/mkimage/init.sh).
func kernelCmdline(cfg Config) string {
	hostname := cfg.Hostname
	if hostname == "" {
		hostname = "golem"
	}
	c := []string{
		"console=ttyS0", "panic=-1", "quiet",
		"gvpn.bridge=" + vsock.Addr{Scheme: vsock.SchemeVirtioSerial, Name: DataPort}.String(),
		"gvpn.hostname=" + hostname,
	}
	if cfg.Root != "" {
		c = append(c, "gvpn.root=/dev/vda")
	}
	for i, v := range cfg.Volumes {
		c = append(c, "gvpn.vol="+volumeTag(i)+":"+v.Guest)
	}
	return strings.Join(c, " ")
}

func volumeTag(i int) string { return "gvpnvol" + strconv.Itoa(i) }

// qemuEscape doubles the commas of a value inside a QEMU option list.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// checkGuestPath allows the paths the kernel command line can carry.
func checkGuestPath(p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
		return fmt.Errorf("guest path %q must be a clean absolute path below /", p)
	}
	for _, c := range p {
		if c <= ' ' || c == '"' || c == 0x7f {
			return fmt.Errorf("guest path %q has a space, quote or control character, which the kernel command line cannot carry", p)
		}
	}
	return nil
}
