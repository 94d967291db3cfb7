package vm

import (
	"fmt"
	"hash/fnv"
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

// qemuArgs returns QEMU's arguments for cfg (after the program name). The
// bridge is b: with virtio-serial, the data and control unix sockets the
// runtime listens on; with vsock, the guest's CID. accel is "kvm" or "tcg".
//
// The guest has no network card: its only link to the VPN is gvpn-agent's
// TAP, fed through the bridge. Over virtio-serial, QEMU dials the runtime's
// listening sockets (server=off) and dials again a second after losing
// them (reconnect=1), the way the agent re-dials a unix or vsock bridge.
func qemuArgs(cfg Config, b bridge, accel string) []string {
	args := []string{
		"-name", qemuEscape(cfg.Name),
		"-accel", accelArg(cfg, accel),
		"-m", strconv.Itoa(cfg.MemoryMiB),
		"-smp", strconv.Itoa(cfg.CPUs),
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-no-reboot", // a guest reboot or panic ends QEMU, so that it is reported
		"-serial", "stdio",
		"-kernel", cfg.Kernel,
		"-initrd", cfg.Initrd,
		"-append", kernelCmdline(cfg, b.guest),
	}
	if b.cid != 0 {
		args = append(args, "-device", "vhost-vsock-pci,guest-cid="+strconv.FormatUint(uint64(b.cid), 10))
	} else {
		args = append(args,
			"-device", "virtio-serial-pci,id=gvpnserial",
			"-chardev", "socket,id=gvpndata,reconnect=1,path="+qemuEscape(b.data),
			"-device", "virtserialport,bus=gvpnserial.0,chardev=gvpndata,name="+DataPort,
			"-chardev", "socket,id=gvpnctl,reconnect=1,path="+qemuEscape(b.ctl),
			"-device", "virtserialport,bus=gvpnserial.0,chardev=gvpnctl,name="+ControlPort)
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

// kernelCmdline tells the guest's init what to do (runtime/sandbox/agent/vm/mkimage/init.sh).
func kernelCmdline(cfg Config, guestBridge vsock.Addr) string {
	hostname := cfg.Hostname
	if hostname == "" {
		hostname = "golem"
	}
	c := []string{
		"console=ttyS0", "panic=-1", "quiet",
		"gvpn.bridge=" + guestBridge.String(),
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

// bridge is how the runtime and the guest's agent reach each other.
type bridge struct {
	listen vsock.Addr // the runtime's data address
	guest  vsock.Addr // the agent's data address
	data   string     // virtio-serial: the unix sockets QEMU dials
	ctl    string
	cid    uint32 // vsock: the guest's CID
}

// Bridge kinds for Config.Bridge.
const (
	BridgeAuto         = ""
	BridgeVirtioSerial = "virtio-serial"
	BridgeVsock        = "vsock"
)

// vsockBridge picks the guest CID and the port pair of a vsock bridge from
// the VM's name, so that VMs of different activities do not collide.
func vsockBridge(name string) bridge {
	h := fnv.New32a()
	h.Write([]byte(name))
	v := h.Sum32()
	cid := 3 + v%(1<<24)
	port := 20000 + 2*(v%20000)
	return bridge{
		listen: vsock.Addr{Scheme: vsock.SchemeVsock, CID: vsock.CIDAny, Port: port},
		guest:  vsock.Addr{Scheme: vsock.SchemeVsock, CID: vsock.CIDHost, Port: port},
		cid:    cid,
	}
}

// serialBridge is a virtio-serial bridge through unix sockets in dir.
func serialBridge(dir string) (bridge, error) {
	data := vsock.Addr{Scheme: vsock.SchemeUnix, Path: filepath.Join(dir, "bridge.sock")}
	ctl, err := data.Control()
	if err != nil {
		return bridge{}, err
	}
	return bridge{
		listen: data,
		guest:  vsock.Addr{Scheme: vsock.SchemeVirtioSerial, Name: DataPort},
		data:   data.Path,
		ctl:    ctl.Path,
	}, nil
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

// accelArg is -accel's value: under TCG with a memory limit, the
// translation cache is held to tcgCacheMiB so that QEMU fits its cgroup.
func accelArg(cfg Config, accel string) string {
	if accel == "tcg" && cfg.Limits.MemBytes > 0 {
		return accel + ",tb-size=" + strconv.Itoa(tcgCacheMiB)
	}
	return accel
}
