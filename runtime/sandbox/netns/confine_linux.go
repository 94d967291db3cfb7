//go:build linux

package netns

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/volume"
)

// The holder is the sandbox's first process: the current executable started
// by Open with holderMarker and a JSON holderSpec in holderSpecEnv, in new
// mount, PID, UTS and IPC namespaces (and the sandbox's network
// namespace). It builds the
// payload's view of the file system, sets the hostname and the ping group
// range, reports on fd 3, and then stays as the PID namespace's init,
// reaping orphans. Every payload process joins its namespaces (see
// starter), so all of them share one /tmp, one hostname and one process
// table; when the holder dies — Close, or the runtime's death through the
// parent-death signal — the kernel kills every process in the namespace,
// including ones that called setsid.
const (
	holderMarker = "__gvpn-sandbox-init"
	holderArgv0  = "gvpn-sandbox-init"
	holderReady  = "ready\n"
	// holderUnshifted is holderReady when the image could not be
	// idmapped (see mountImage).
	holderUnshifted = "ready unshifted\n"
	holderSpecEnv   = "GVPN_SANDBOX_INIT_SPEC"
)

// holderSpec is what the holder needs to build the payload's root.
type holderSpec struct {
	// Root is an empty directory on the host to mount the new root on;
	// the mount is only visible in the holder's mount namespace.
	Root     string `json:"root"`
	Hostname string `json:"hostname"`
	// Hosts and HostnameFile are bind-mounted (read-only) over /etc/hosts
	// and /etc/hostname.
	Hosts        string `json:"hosts"`
	HostnameFile string `json:"hostnameFile"`
	// Tmp is the host directory that is the payload's /tmp.
	Tmp string `json:"tmp"`
	// Workdir holds the volumes' directories; its parent is masked, so
	// that other activities' workdirs are not visible.
	Workdir string      `json:"workdir"`
	Volumes volume.List `json:"volumes"`
	// UID and GID own the RAM volumes (host ids).
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`

	// RootFS, when set, is the payload's root instead of the host's
	// directories (see mountImage), with its writable layer's upper and
	// work directories in Layer; Stage holds the init's scratch mount
	// points.
	RootFS *RootFS `json:"rootfs,omitempty"`
	Layer  string  `json:"layer,omitempty"`
	Stage  string  `json:"stage,omitempty"`
	// IDMap says that usernsFD is a user namespace with the activity's
	// mapping: the image is mounted shifted by it.
	IDMap bool `json:"idmap,omitempty"`
	// RootUID and RootGID (host ids) own what the init creates in the
	// image: the root of the payload's user namespace, or host root.
	RootUID uint32 `json:"rootUid,omitempty"`
	RootGID uint32 `json:"rootGid,omitempty"`
}

// Sizes of the small memory file systems of the new root.
const (
	shmSize     = 64 << 20
	ramDefault  = 64 << 20
	smallTmpfs  = "size=1m"
	devTmpfsOpt = "mode=0755,size=64k"
)

// hidden are the host's top-level entries the payload does not see: they
// get their own content (proc, sys, dev, tmp, run) or none (the host's
// home directories, where a provider's data usually lives).
var hidden = map[string]bool{
	"proc": true, "sys": true, "dev": true, "tmp": true, "run": true,
	"root": true, "home": true, "lost+found": true,
}

// devices are bound from the host's /dev into the payload's.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

func runHolder(args []string) int {
	report := os.NewFile(3, "report")
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "gvpn-sandbox-init: %v\n", err)
		fmt.Fprintf(report, "%s%s %v", shimMagic, kindSetup, err)
		report.Close()
		return 1
	}
	if len(args) != 0 {
		return fail(fmt.Errorf("want no arguments, got %d", len(args)))
	}
	var spec holderSpec
	if err := json.Unmarshal([]byte(os.Getenv(holderSpecEnv)), &spec); err != nil {
		return fail(fmt.Errorf("spec: %v", err))
	}
	os.Unsetenv(holderSpecEnv)
	// The payload's signals are not the init's business; only SIGKILL
	// (Close, or the runtime's death) ends it.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE)
	shifted, err := buildRoot(spec)
	if err != nil {
		return fail(err)
	}
	if spec.IDMap && !shifted {
		fmt.Fprint(report, shimMagic+holderUnshifted)
	} else {
		fmt.Fprint(report, shimMagic+holderReady)
	}
	report.Close()
	reapForever()
	return 0
}

// reapForever is init's one duty: collect the exit status of every orphan
// the namespace hands over, so none stays a zombie.
func reapForever() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	for {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		<-sigs
	}
}

// buildRoot makes the payload's root in the holder's mount namespace and
// switches to it: a read-only tmpfs holding read-only, nosuid bind mounts
// of the host's top-level directories (except hidden ones), a private
// /dev, /proc, /sys, /tmp and /run, the sandbox's /etc/hosts and
// /etc/hostname, and the volumes, the only writable places besides /tmp
// and /dev/shm.
//
// shifted says whether an image was idmapped (see mountImage).
func buildRoot(spec holderSpec) (shifted bool, err error) {
	err = buildRootShifted(spec, &shifted)
	return shifted, err
}

func buildRootShifted(spec holderSpec, shifted *bool) error {
	// Nothing mounted below may reach the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", spec.Hostname, err)
		}
	}
	// ICMP echo sockets for every group, in this network namespace only:
	// ping works for the payload user without setuid or file
	// capabilities (which nosuid and no_new_privs disable anyway).
	if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0); err != nil {
		return fmt.Errorf("ping_group_range: %w", err)
	}
	// Every port of this network namespace for every user: an image's
	// server that expects root binds port 80 without a capability on
	// the host's network.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_unprivileged_port_start", []byte("0"), 0); err != nil {
		return fmt.Errorf("ip_unprivileged_port_start: %w", err)
	}
	r := spec.Root
	image := spec.RootFS != nil
	if image {
		var err error
		if *shifted, err = mountImage(spec); err != nil {
			return err
		}
	} else {
		if err := unix.Mount("tmpfs", r, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,"+smallTmpfs); err != nil {
			return fmt.Errorf("root tmpfs on %s: %w", r, err)
		}
		if err := bindHostTop(r); err != nil {
			return err
		}
	}
	if err := buildDev(filepath.Join(r, "dev")); err != nil {
		return err
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"/proc", func() error {
			return unix.Mount("proc", filepath.Join(r, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		}},
		{"/sys", func() error {
			return unix.Mount("sysfs", filepath.Join(r, "sys"), "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		}},
		{"/tmp", func() error { return bind(spec.Tmp, filepath.Join(r, "tmp"), false) }},
		{"/run", func() error {
			if image { // an image's programs may keep their state there
				return unix.Mount("tmpfs", filepath.Join(r, "run"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV,
					fmt.Sprintf("mode=0755,uid=%d,gid=%d,%s", spec.RootUID, spec.RootGID, smallTmpfs))
			}
			return unix.Mount("tmpfs", filepath.Join(r, "run"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_RDONLY, "mode=0755,"+smallTmpfs)
		}},
		{"/etc/hosts", func() error {
			if image {
				return bindInRoot(spec.Hosts, r, "etc/hosts", true, true, int(spec.RootUID), int(spec.RootGID))
			}
			return bind(spec.Hosts, filepath.Join(r, "etc/hosts"), true)
		}},
		{"/etc/hostname", func() error {
			if image {
				return bindInRoot(spec.HostnameFile, r, "etc/hostname", true, true, int(spec.RootUID), int(spec.RootGID))
			}
			target := filepath.Join(r, "etc/hostname")
			if _, err := os.Stat(target); err != nil {
				return nil // the host has none: nothing to cover
			}
			return bind(spec.HostnameFile, target, true)
		}},
		{"the workdirs' directory", func() error {
			if image {
				return nil // no host directory to hide a workdir in
			}
			return maskParent(r, spec.Workdir)
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	for _, v := range spec.Volumes {
		if err := mountVolume(r, spec, v); err != nil {
			return fmt.Errorf("volume %s: %w", v.Path, err)
		}
	}
	if !image { // an image's root is its writable layer
		if err := readOnly(r, false); err != nil {
			return fmt.Errorf("read-only root: %w", err)
		}
	}
	// pivot_root(".", ".") stacks the old root on the new one; detaching
	// it leaves only the new root (runc does the same).
	if err := unix.Chdir(r); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the host's root: %w", err)
	}
	return unix.Chdir("/")
}

// bindHostTop recreates the host's top level in r: directories as
// read-only, nosuid, nodev recursive bind mounts, symbolic links (/bin ->
// usr/bin) as links, hidden names as empty directories.
func bindHostTop(r string) error {
	entries, err := os.ReadDir("/")
	if err != nil {
		return err
	}
	for _, name := range []string{"proc", "sys", "dev", "tmp", "run", "root", "home"} {
		if err := os.Mkdir(filepath.Join(r, name), 0o755); err != nil {
			return err
		}
	}
	for _, e := range entries {
		name := e.Name()
		if hidden[name] {
			continue
		}
		src, dst := "/"+name, filepath.Join(r, name)
		switch {
		case e.Type()&os.ModeSymlink != 0:
			target, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, dst); err != nil {
				return err
			}
		case e.IsDir():
			if err := os.Mkdir(dst, 0o755); err != nil {
				return err
			}
			if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("bind %s: %w", src, err)
			}
			if err := readOnly(dst, true); err != nil {
				return fmt.Errorf("read-only %s: %w", src, err)
			}
		}
	}
	return nil
}

// readOnly makes the mount at path (and, when recursive, every mount
// below it) read-only, nosuid and nodev. Mount flags belong to this
// namespace's copies of the mounts: the host's stay as they are.
func readOnly(path string, recursive bool) error {
	flags := uint(0)
	if recursive {
		flags = unix.AT_RECURSIVE
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	return unix.MountSetattr(-1, path, flags, &attr)
}

// bind mounts src on dst, nosuid and nodev, read-only when asked.
func bind(src, dst string, ro bool) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if ro {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	return unix.MountSetattr(-1, dst, 0, &attr)
}

// buildDev makes a minimal /dev: the harmless character devices, the
// standard links, a private devpts and a private /dev/shm. No disk, no
// /dev/net/tun.
func buildDev(dev string) error {
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, devTmpfsOpt); err != nil {
		return fmt.Errorf("/dev: %w", err)
	}
	for _, d := range devices {
		p := filepath.Join(dev, d)
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o666)
		if err != nil {
			return fmt.Errorf("/dev/%s: %w", d, err)
		}
		f.Close()
		if err := unix.Mount("/dev/"+d, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("/dev/%s: %w", d, err)
		}
	}
	links := [][2]string{
		{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
		{"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"},
	}
	for _, l := range links {
		if err := os.Symlink(l[0], filepath.Join(dev, l[1])); err != nil {
			return fmt.Errorf("/dev/%s: %w", l[1], err)
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return fmt.Errorf("/dev/pts: %w", err)
	}
	if err := unix.Mount("tmpfs", filepath.Join(dev, "shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size="+strconv.Itoa(shmSize)); err != nil {
		return fmt.Errorf("/dev/shm: %w", err)
	}
	return readOnly(dev, false)
}

// maskParent hides the directory holding the activity's workdir (other
// activities' workdirs, with their volumes) behind an empty read-only
// tmpfs, when it is visible at all and is not a top-level directory.
func maskParent(r, workdir string) error {
	parent := filepath.Dir(workdir)
	if strings.Count(parent, "/") < 2 {
		return nil
	}
	target := filepath.Join(r, parent)
	if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
		return nil
	}
	return unix.Mount("tmpfs", target, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=4k")
}

// mountVolume mounts v at its path in r: the workdir directory for host
// and storage volumes, a tmpfs owned by the payload user for RAM volumes.
// A mount point that does not exist is created, which works wherever the
// path lies outside the host's read-only directories.
func mountVolume(r string, spec holderSpec, v volume.Volume) error {
	if spec.RootFS != nil {
		return mountImageVolume(r, spec, v)
	}
	target := filepath.Join(r, v.Path)
	if err := os.MkdirAll(target, 0o755); err != nil {
		if errors.Is(err, unix.EROFS) {
			return fmt.Errorf("cannot create the mount point: it lies in a read-only directory of the host (choose a path such as /golem/...)")
		}
		return err
	}
	if v.Kind == volume.RAM {
		size := v.Size
		if size <= 0 {
			size = ramDefault
		}
		opts := fmt.Sprintf("mode=0700,uid=%d,gid=%d,size=%d", spec.UID, spec.GID, size)
		return unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts)
	}
	return bind(filepath.Join(spec.Workdir, v.Name), target, false)
}

// mountImageVolume mounts v in an image's root, at its path resolved
// inside the image and created in the writable layer when the image
// lacks it.
func mountImageVolume(r string, spec holderSpec, v volume.Volume) error {
	if v.Kind != volume.RAM {
		return bindInRoot(filepath.Join(spec.Workdir, v.Name), r, v.Path, false, false, int(spec.RootUID), int(spec.RootGID))
	}
	target, err := inRoot(r, v.Path, false, int(spec.RootUID), int(spec.RootGID))
	if err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	defer unix.Close(target)
	size := v.Size
	if size <= 0 {
		size = ramDefault
	}
	opts := fmt.Sprintf("mode=0700,uid=%d,gid=%d,size=%d", spec.UID, spec.GID, size)
	return unix.Mount("tmpfs", fdPath(target), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts)
}

// CheckVolumes tells before any sandbox exists whether the payload's root
// can hold vols: a mount point the init has to create must not lie in one
// of the host's read-only directories (a path under /usr must exist on the
// host; one under /golem or /root need not). deploy calls it, so that the
// requestor's mistake fails Deploy, naming the volume, and not Start.
// With an image (Config.RootFS) there is nothing to check: missing mount
// points are made in its writable layer.
func CheckVolumes(vols volume.List) error {
	for _, v := range vols {
		top, _, _ := strings.Cut(strings.TrimPrefix(v.Path, "/"), "/")
		if hidden[top] {
			continue
		}
		fi, err := os.Lstat("/" + top)
		if err != nil || !fi.IsDir() {
			continue // not on the host: made in the payload's own root
		}
		if _, err := os.Stat(v.Path); err != nil {
			return fmt.Errorf("--volume-override: volume %q: /%s is the host's directory, read-only in the sandbox, and has no %s to mount on (choose a path such as /golem/...)", v.Path, top, v.Path)
		}
	}
	return nil
}
