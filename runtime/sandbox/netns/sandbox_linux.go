//go:build linux

package netns

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/netcfg/nsthread"
	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/owner"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/runtime/volume"
)

// Where named namespaces and hosts files live. Variables only so that the
// layout is stated once; nothing changes them.
var (
	netnsDir = nsthread.RunDir
	runDir   = "/run/gvpn"
)

// Defaults for the Config timeouts.
const (
	DefaultStopTimeout  = 2 * time.Second
	DefaultDrainTimeout = time.Second
)

// Deadlock guards (not behaviour): how long Start waits for the shim's
// report, how long teardown waits for SIGKILLed processes to vanish.
const (
	shimReportTimeout = 10 * time.Second
	killTimeout       = 2 * time.Second
	// closeDrainTimeout bounds how long Close waits for output pipes to
	// reach EOF once every process in the namespace is dead.
	closeDrainTimeout = 500 * time.Millisecond
)

// Config describes a sandbox.
type Config struct {
	// Workdir is the activity's working directory. The namespace name is
	// derived from its absolute path (see NameFor); it holds the volumes'
	// directories and the payload's /tmp. Required.
	Workdir string
	// Hostname is the payload's hostname (its own UTS namespace), also in
	// /etc/hostname and as "127.0.1.1 Hostname" in the hosts file; empty
	// means DefaultHostname, never the host's. It must pass
	// netcfg.CheckHostname.
	Hostname string
	// User is who payload processes run as, with no_new_privs; the zero
	// value means Nobody. Ignored when Root. When the sandbox maps a user
	// namespace (see CanMapIDRanges) these are ids inside it, below
	// IDRangeSize: uid 0 is the image's root, with a few capabilities
	// over the activity's own files only (see doc.go); otherwise they are
	// host ids and uid 0 is refused.
	User User
	// RootFS, when set, is the payload's root file system (a requestor's
	// image) instead of the host's directories: read-only, under a
	// writable layer in Workdir (LayerDirName) that Close removes.
	RootFS *RootFS
	// Root runs payload processes as root with the runtime's capabilities.
	// Unsafe: only for payloads the operator trusts, never a requestor's.
	Root bool
	// Volumes are mounted at their paths, writable: the payload's only
	// writable places besides /tmp and /dev/shm. Their directories are in
	// Workdir (see volume.List.Prepare); Open creates missing ones.
	Volumes volume.List
	// UnsafeVolumeLinks lets Open go on, with a warning, when the kernel
	// cannot make the host volumes' directories nosymfollow (before Linux
	// 5.10): the ExeUnit's transfers then follow links the payload plants
	// there. Off by default: Open fails with volume.ErrNoSymfollow.
	UnsafeVolumeLinks bool
	// Log receives the sandbox's logs; nil discards them.
	Log *logrus.Entry
	// NamePrefix starts the namespace name; empty means DefaultPrefix. It
	// must not contain '/'. Tests use their own prefix.
	NamePrefix string
	// StopTimeout is how long Close waits after SIGTERM before it
	// SIGKILLs what is left; zero means DefaultStopTimeout.
	StopTimeout time.Duration
	// DrainTimeout is how long a reaped process's Exited event waits for
	// its output pipes to reach EOF; see Process.Stream. Zero means
	// DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Limits are the agreement's: every payload process runs in the
	// sandbox's cgroup with its CPU, memory and pids limits, and with
	// StorageBytes the volumes and /tmp are on a disk of that size (see
	// package limits). What the host cannot enforce is listed by
	// Unenforced; the zero value limits nothing.
	Limits limits.Limits

	// The task package's settings for every payload process
	// (sandbox.ProcessSpec.WithDefaults). Env ("KEY=value", the image's
	// Env) comes before the request's environment, which wins on the same
	// key; Dir (the image's WorkingDir) is the working directory when the
	// request gives none, instead of the default volume's path.
	Env []string
	Dir string
}

// RootFS is an image that is the payload's root file system. Exactly one
// of Dir and Image is set.
type RootFS struct {
	// Dir is a directory holding the root tree (an extracted OCI image).
	// It is mounted read-only and never changed.
	Dir string `json:"dir,omitempty"`
	// Image is a regular file that starts with a squashfs file system (a
	// plain squashfs, or a GVMI, whose container config follows the
	// file system). The sandbox's init attaches it to a read-only loop
	// device that frees itself when the sandbox ends.
	Image string `json:"image,omitempty"`
	// Size is the squashfs's length in bytes at the start of Image; the
	// loop device ends at the next multiple of 512 (its sector), which
	// must lie within the file (the file system does not read past its
	// own length). 0 means the whole file. Unused with Dir.
	Size int64 `json:"size,omitempty"`
}

// check tells what is wrong with r, naming the field.
func (r *RootFS) check() error {
	switch {
	case r.Dir != "" && r.Image != "":
		return fmt.Errorf("%w: RootFS: both Dir and Image set", ErrBadConfig)
	case r.Dir == "" && r.Image == "":
		return fmt.Errorf("%w: RootFS: neither Dir nor Image set", ErrBadConfig)
	case r.Dir != "":
		if r.Size != 0 {
			return fmt.Errorf("%w: RootFS.Size %d given with Dir", ErrBadConfig, r.Size)
		}
		fi, err := os.Stat(r.Dir)
		if err != nil {
			return fmt.Errorf("%w: RootFS.Dir: %v", ErrBadConfig, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w: RootFS.Dir %s is not a directory", ErrBadConfig, r.Dir)
		}
	default:
		fi, err := os.Stat(r.Image)
		if err != nil {
			return fmt.Errorf("%w: RootFS.Image: %v", ErrBadConfig, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%w: RootFS.Image %s is not a regular file", ErrBadConfig, r.Image)
		}
		if r.Size < 0 || sectorEnd(r.Size) > fi.Size() {
			return fmt.Errorf("%w: RootFS.Size %d: want the file system's length, whose last 512-byte sector lies within the image's %d bytes", ErrBadConfig, r.Size, fi.Size())
		}
	}
	return nil
}

// sectorEnd rounds n up to a multiple of 512.
func sectorEnd(n int64) int64 { return (n + 511) &^ 511 }

// LayerDirName is the workdir directory holding the writable layer over a
// RootFS (its upper and work directories). Close and Sweep remove it.
const LayerDirName = "gvpn-layer"

// User is a payload user.
type User struct{ UID, GID uint32 }

// Nobody is the default payload user (uid and gid 65534, "nobody" and
// "nogroup" on Debian): it owns no file of the host.
var Nobody = User{UID: 65534, GID: 65534}

// DefaultHostname is the payload's hostname when Config.Hostname is empty:
// the one Golem's VM runtime uses, so that a payload learns nothing about
// the provider's machine.
const DefaultHostname = "golem"

// Sandbox is one activity's namespaces, hosts file and processes. Its
// methods are safe for concurrent use.
type Sandbox struct {
	name         string
	workdir      string
	hostname     string
	user         User
	root         bool
	rootfs       *RootFS
	shim         *os.File // the static shim to start in rootfs (nil: /proc/self/exe)
	userns       bool     // payloads run in user namespaces mapped to ids
	ids          uint32   // first host id of the activity's range (userns)
	usernsFile   *os.File // a user namespace with that mapping (idmapped image)
	layerDir     string   // the writable layer over rootfs, in the workdir
	volumes      volume.List
	unsafeLinks  bool
	mounts       *volume.Mounts // the volumes' host-side nosymfollow mounts
	dir          string         // the default working directory inside
	env          []string       // the image's environment, under the request's
	runDir       string         // /run/gvpn/NAME, claimed with an owner record
	tmpDir       string         // the payload's /tmp, in the workdir
	hostsPath    string
	log          *logrus.Entry
	stopTimeout  time.Duration
	drainTimeout time.Duration

	ns         netns.NsHandle
	nsID       nsID
	starter    *starter
	holder     *exec.Cmd     // the namespaces' init, see holderMarker
	holderDone chan struct{} // closed once the holder was reaped

	limits *limits.Set // the payload's cgroup and disk (empty until create)

	// life is held for reading by Start from its closed check until the
	// process is registered, and for writing by Close to set closed: no
	// process can appear after Close has begun.
	life   sync.RWMutex
	closed bool

	mu      sync.Mutex
	live    map[uint64]*Process   // pid → process whose leader is not reaped
	tracked map[*Process]struct{} // processes whose pipes or goroutines remain

	stopped   chan struct{}  // closed by Close once every process was killed
	wg        sync.WaitGroup // every goroutine of every process
	closeOnce sync.Once
	closeErr  error
}

// A Sandbox is both halves of the netns sandbox: the service's sandbox and
// the network manager's attacher (see Attach).
var _ sandbox.Sandbox = (*Sandbox)(nil)

// Open creates the sandbox for cfg.Workdir: a named network namespace
// (like `ip netns add NAME`) with lo up; the directory /run/gvpn/NAME with
// an owner record (package owner), the hosts file (mode 0644) holding the
// localhost lines and the hostname file; the payload's /tmp as the
// workdir's directory gvpn-tmp; and the holder process that builds the
// payload's view of the file system in its own mount, PID, UTS and IPC
// namespaces. If a sandbox of that name is left by a runtime that died,
// every process still in its namespace is killed and it is removed first
// (logged at warn level); if its runtime is alive, Open fails with an
// error wrapping owner.ErrBusy and touches nothing.
func Open(cfg Config) (*Sandbox, error) {
	if cfg.Workdir == "" {
		return nil, fmt.Errorf("%w: empty workdir", ErrBadConfig)
	}
	if strings.ContainsAny(cfg.NamePrefix, "/\x00") {
		return nil, fmt.Errorf("%w: name prefix %q contains '/' or NUL", ErrBadConfig, cfg.NamePrefix)
	}
	if cfg.Hostname != "" {
		if err := netcfg.CheckHostname(cfg.Hostname); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
		}
	}
	if cfg.Hostname == "" {
		cfg.Hostname = DefaultHostname
	}
	if cfg.RootFS != nil {
		if err := cfg.RootFS.check(); err != nil {
			return nil, err
		}
	}
	var shim *os.File
	if cfg.RootFS != nil {
		var err error
		if shim, err = imageShim(); err != nil {
			return nil, err
		}
	}
	userns := !cfg.Root && CanMapIDRanges()
	if cfg.User == (User{}) && !(userns && cfg.RootFS != nil) {
		cfg.User = Nobody // with an image and a user namespace: the image's root
	}
	switch {
	case userns && (cfg.User.UID >= IDRangeSize || cfg.User.GID >= IDRangeSize):
		return nil, fmt.Errorf("%w: payload user %d:%d outside the user namespace's ids 0-%d", ErrBadConfig, cfg.User.UID, cfg.User.GID, IDRangeSize-1)
	case !userns && !cfg.Root && cfg.User.UID == 0:
		return nil, fmt.Errorf("%w: payload user uid 0 without Root", ErrBadConfig)
	}
	workdir, err := filepath.Abs(cfg.Workdir)
	if err != nil {
		return nil, fmt.Errorf("%w: workdir: %v", ErrBadConfig, err)
	}
	log := orDiscard(cfg.Log)
	name := NameFor(cfg.NamePrefix, workdir)
	log = log.WithField("sandbox", name)
	s := &Sandbox{
		name:         name,
		workdir:      workdir,
		hostname:     cfg.Hostname,
		user:         cfg.User,
		root:         cfg.Root,
		rootfs:       cfg.RootFS,
		shim:         shim,
		userns:       userns,
		layerDir:     filepath.Join(workdir, LayerDirName),
		volumes:      cfg.Volumes,
		unsafeLinks:  cfg.UnsafeVolumeLinks,
		dir:          cmp.Or(cfg.Dir, defaultDir(cfg.Volumes)),
		env:          cfg.Env,
		runDir:       filepath.Join(runDir, name),
		tmpDir:       filepath.Join(workdir, TmpDirName),
		hostsPath:    filepath.Join(runDir, name, "hosts"),
		log:          log,
		stopTimeout:  orDefault(cfg.StopTimeout, DefaultStopTimeout),
		drainTimeout: orDefault(cfg.DrainTimeout, DefaultDrainTimeout),
		ns:           netns.None(),
		live:         make(map[uint64]*Process),
		tracked:      make(map[*Process]struct{}),
		stopped:      make(chan struct{}),
		limits:       &limits.Set{},
	}

	if err := s.claim(); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", name, err)
	}
	if err := s.create(cfg.Limits); err != nil {
		s.destroy()
		return nil, fmt.Errorf("sandbox %s: %w", name, err)
	}
	log.WithFields(logrus.Fields{"workdir": workdir, "user_namespace": userns, "host_ids": s.ids, "image": cfg.RootFS != nil}).Debug("sandbox open")
	if !userns && !cfg.Root {
		log.Info("no user namespace (the runtime lacks CAP_SETUID, CAP_SETGID or CAP_SYS_ADMIN): payloads run as host user " +
			fmt.Sprint(cfg.User.UID) + ", shared by every activity of this runtime; an image keeps its files' owners")
	}
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// claim takes /run/gvpn/NAME for this process, after removing a stale
// sandbox of the same name (its runtime died). A live owner's sandbox is
// left alone.
func (s *Sandbox) claim() error {
	err := owner.Claim(s.runDir)
	if err == nil {
		// A named namespace without a claimed directory is an older
		// version's leftover (or half removed): never a live sandbox's.
		if _, lerr := os.Lstat(filepath.Join(netnsDir, s.name)); lerr == nil {
			if _, err := cleanupName(s.name, s.log); err != nil {
				return fmt.Errorf("remove stale sandbox: %w", err)
			}
			if err := owner.Claim(s.runDir); err != nil {
				return err
			}
		}
		return nil
	}
	if !errors.Is(err, os.ErrExist) {
		return err
	}
	if _, err := cleanupName(s.name, s.log); err != nil {
		return fmt.Errorf("remove stale sandbox: %w", err)
	}
	s.log.Warn("removed a stale sandbox left by a runtime that died (processes in it were killed)")
	return owner.Claim(s.runDir)
}

// defaultDir is the working directory of a process that names none: the
// default volume when there is one (the ExeUnit sends an empty work_dir),
// else the root.
func defaultDir(vols volume.List) string {
	for _, v := range vols {
		if v.Path == volume.DefaultPath {
			return v.Path
		}
	}
	return "/"
}

// TmpDirName is the workdir directory that is the payload's /tmp.
const TmpDirName = "gvpn-tmp"

// create makes the namespace, brings lo up, writes the hosts and hostname
// files, prepares /tmp and the volumes, starts the holder and the thread
// that forks processes inside the namespaces. On error the caller runs
// destroy.
func (s *Sandbox) create(l limits.Limits) error {
	if err := os.WriteFile(filepath.Join(s.runDir, workdirFile), []byte(s.workdir), 0o600); err != nil {
		return fmt.Errorf("workdir record: %w", err)
	}
	if s.userns {
		base, err := allocIDs(s.runDir)
		if err != nil {
			return err
		}
		s.ids = base
	}
	uid, _ := s.hostUser()
	if err := s.volumes.Prepare(s.workdir, uid); err != nil {
		return err
	}
	if s.rootfs != nil {
		if err := s.makeLayer(); err != nil {
			return err
		}
	}
	if err := makeTmp(s.tmpDir); err != nil {
		return err
	}
	// The size-limited disk goes under the volumes, /tmp and the layer
	// first; the nosymfollow mounts of the host volumes then go on top.
	if err := s.openLimits(l); err != nil {
		return err
	}
	// Before the holder starts, so that its bind mounts of the volumes
	// come from these (it clears nosymfollow for the payload's view).
	mounts, err := s.volumes.MountHost(s.workdir, filepath.Join(s.runDir, volume.MountsRecord))
	switch {
	case errors.Is(err, volume.ErrNoSymfollow) && s.unsafeLinks:
		s.log.WithError(err).Warn("UNSAFE: host volumes are not nosymfollow; the ExeUnit's transfers follow links the payload plants in them")
	case err != nil:
		return err
	}
	s.mounts = mounts
	if s.rootfs != nil && s.userns {
		f, err := newUserns(s.ids)
		if err != nil {
			return fmt.Errorf("user namespace for the image: %w", err)
		}
		s.usernsFile = f
	}
	ns, err := nsthread.NewNamed(s.name)
	if err != nil {
		return fmt.Errorf("create netns: %w", err)
	}
	s.ns = ns
	if s.nsID, err = nsIDOfFD(int(ns)); err != nil {
		return fmt.Errorf("stat netns: %w", err)
	}
	if err := linkUpLo(ns); err != nil {
		return err
	}
	if err := writeHostsFile(s.hostsPath, s.hostname); err != nil {
		return err
	}
	if err := writeReadable(filepath.Join(s.runDir, "hostname"), []byte(s.hostname+"\n")); err != nil {
		return fmt.Errorf("hostname file: %w", err)
	}
	for _, d := range []string{"root", imageMount, lowerMount} {
		if err := os.Mkdir(filepath.Join(s.runDir, d), 0o700); err != nil {
			return fmt.Errorf("mount point: %w", err)
		}
	}
	if s.starter, err = newStarter(ns, s.startHolder); err != nil {
		return fmt.Errorf("enter the sandbox's namespaces: %w", err)
	}
	return nil
}

// hostUser is who payload processes are on the host.
func (s *Sandbox) hostUser() (uid, gid int) {
	switch {
	case s.root:
		return 0, 0
	case s.userns:
		return int(s.ids + s.user.UID), int(s.ids + s.user.GID)
	}
	return int(s.user.UID), int(s.user.GID)
}

// rootIDs are the host ids of the root of the payload's user namespace
// (host root without one): they own the writable layer's top and what
// the init creates in the image.
func (s *Sandbox) rootIDs() (uid, gid int) {
	if s.userns {
		return int(s.ids), int(s.ids)
	}
	if s.root {
		return 0, 0
	}
	return int(s.user.UID), int(s.user.GID)
}

// makeLayer creates the writable layer's directories afresh: the layer
// directory only the runtime may enter (the payload reaches it through
// the overlay, which works with the init's credentials), its upper
// directory, the top of the payload's root, belonging to the payload's
// root.
func (s *Sandbox) makeLayer() error {
	if err := os.RemoveAll(s.layerDir); err != nil {
		return fmt.Errorf("writable layer: %w", err)
	}
	if err := os.Mkdir(s.layerDir, 0o700); err != nil {
		return fmt.Errorf("writable layer: %w", err)
	}
	uid, gid := s.rootIDs()
	for _, d := range []string{"upper", "work"} {
		p := filepath.Join(s.layerDir, d)
		if err := os.Mkdir(p, 0o755); err != nil {
			return fmt.Errorf("writable layer: %w", err)
		}
		if err := os.Chmod(p, 0o755); err != nil {
			return fmt.Errorf("writable layer: %w", err)
		}
	}
	if err := os.Lchown(filepath.Join(s.layerDir, "upper"), uid, gid); err != nil {
		return fmt.Errorf("writable layer: %w", err)
	}
	return nil
}

// makeTmp creates the payload's /tmp: mode 1777 like any /tmp, whatever
// the umask, emptied when it is left from an earlier run.
func makeTmp(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("/tmp: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("/tmp: %w", err)
	}
	if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
		return fmt.Errorf("/tmp: %w", err)
	}
	return nil
}

// startHolder starts the holder from the starter's thread (so it is in the
// network namespace and gets SIGKILL when that thread, i.e. the runtime,
// dies) and waits for its report.
func (s *Sandbox) startHolder() (pid int, err error) {
	uid, gid := s.hostUser()
	rootUID, rootGID := s.rootIDs()
	spec, err := json.Marshal(holderSpec{
		Root:         filepath.Join(s.runDir, "root"),
		Hostname:     s.hostname,
		Hosts:        s.hostsPath,
		HostnameFile: filepath.Join(s.runDir, "hostname"),
		Tmp:          s.tmpDir,
		Workdir:      s.workdir,
		Volumes:      s.volumes,
		UID:          uint32(uid),
		GID:          uint32(gid),
		RootFS:       s.rootfs,
		Layer:        s.layerDir,
		Stage:        s.runDir,
		IDMap:        s.usernsFile != nil,
		RootUID:      uint32(rootUID),
		RootGID:      uint32(rootGID),
	})
	if err != nil {
		return 0, err
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer repR.Close()
	extra := []*os.File{repW}
	if s.usernsFile != nil {
		extra = append(extra, s.usernsFile) // usernsFD
	}
	var stderr strings.Builder
	cmd := &exec.Cmd{
		Path: holderPath(),
		// The spec names host paths; in the environment only root may
		// read it (a payload can read any process's argv).
		Args:       []string{holderArgv0, holderMarker},
		Env:        []string{holderSpecEnv + "=" + string(spec)},
		Stderr:     &limitedWriter{w: &stderr, n: maxReport},
		ExtraFiles: extra,
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:    true,
			Pdeathsig:  syscall.SIGKILL,
			Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC,
		},
	}
	err = cmd.Start()
	repW.Close()
	if err != nil {
		return 0, fmt.Errorf("start the sandbox init: %w", err)
	}
	_ = repR.SetReadDeadline(time.Now().Add(shimReportTimeout))
	b, rerr := io.ReadAll(io.LimitReader(repR, maxReport))
	if rerr == nil && string(b) == shimMagic+holderUnshifted {
		s.log.Warn("this kernel cannot idmap the image's file system: its files keep their owners, which the payload's user namespace does not map (an image that expects root cannot change its own files)")
	}
	if rerr == nil && (string(b) == shimMagic+holderReady || string(b) == shimMagic+holderUnshifted) {
		s.holder = cmd
		s.holderDone = make(chan struct{})
		go s.waitHolder()
		return cmd.Process.Pid, nil
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if rerr != nil {
		return 0, fmt.Errorf("sandbox init: %w", rerr)
	}
	if err := parseShimReport(b); err != nil {
		return 0, fmt.Errorf("sandbox init: %w", err)
	}
	return 0, fmt.Errorf("%w: sandbox init ended without a report (%s)", sandbox.ErrSetup, strings.TrimSpace(stderr.String()))
}

// waitHolder reaps the holder. Its death before Close means every payload
// process died with it.
func (s *Sandbox) waitHolder() {
	err := s.holder.Wait()
	s.life.RLock()
	closed := s.closed
	s.life.RUnlock()
	if !closed {
		s.log.WithError(err).Error("the sandbox's init died: every payload process died with it")
	}
	close(s.holderDone)
}

// limitedWriter keeps at most n bytes.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.n -= k
		l.w.Write(p[:k])
	}
	return len(p), nil
}

func linkUpLo(ns netns.NsHandle) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in netns: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// hostsContent is the initial hosts file: what a Debian host has for
// localhost, plus the sandbox's own hostname on 127.0.1.1.
func hostsContent(hostname string) []byte {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	if hostname != "" {
		b.WriteString("127.0.1.1\t" + hostname + "\n")
	}
	return []byte(b.String())
}

func writeHostsFile(path, hostname string) error {
	if err := writeReadable(path, hostsContent(hostname)); err != nil {
		return fmt.Errorf("hosts file: %w", err)
	}
	return nil
}

// writeReadable writes a file that every user may read and only root
// write. WriteFile's mode is subject to the umask; processes must be able
// to read the file whatever user they run as.
func writeReadable(path string, b []byte) error {
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err
	}
	return os.Chmod(path, 0o644)
}

// HostUser is who payload processes are on the host (Config.User shifted
// into the activity's id range when userns), for logs: each activity is
// its own host user only with a user namespace.
func (s *Sandbox) HostUser() (u User, userns bool) {
	uid, gid := s.hostUser()
	return User{UID: uint32(uid), GID: uint32(gid)}, s.userns
}

// Name is the network namespace name, as `ip netns list` shows it.
func (s *Sandbox) Name() string { return s.name }

// NetNS is a handle of the sandbox's network namespace (to create the TAP
// in it, configure addresses). It is owned by the sandbox and valid until
// Close; do not close it.
func (s *Sandbox) NetNS() netns.NsHandle { return s.ns }

// HostsPath is the sandbox's hosts file, bind-mounted over /etc/hosts in
// every process. Change it in place (open with O_TRUNC or O_APPEND and
// write, as os.WriteFile does), never by renaming another file over it:
// running processes see this inode through their bind mount. Processes
// started later see the change at once, running ones when they reread
// the file.
func (s *Sandbox) HostsPath() string { return s.hostsPath }

// Kill sends sig to the process group of the process pid (Start puts each
// process in its own group, so its children get the signal too). Signal 0
// means SIGKILL: the wire's KillProcess carries 0 when the requestor did
// not choose one. It returns sandbox.ErrNoProcess (wrapped) if pid was not started
// by this sandbox or its process has already exited, even if the Exited
// event is still on its way.
func (s *Sandbox) Kill(pid uint64, sig syscall.Signal) error {
	if sig == 0 {
		sig = syscall.SIGKILL
	}
	s.mu.Lock()
	p := s.live[pid]
	s.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%w: pid %d", sandbox.ErrNoProcess, pid)
	}
	return p.signalGroup(sig)
}

// Close tears the sandbox down: SIGTERM to every process group and every
// other process in the namespace; after StopTimeout (or as soon as all are
// gone) SIGKILL to whatever is left; then it waits until every streamed
// process's Exited event was delivered, so the caller may flush them when
// Close returns; then it removes the namespace and the hosts file
// directory. Processes never streamed get no events. With the default
// StopTimeout Close returns within about 2 s even if processes ignore
// SIGTERM. Close is idempotent: later calls return nil.
func (s *Sandbox) Close() error {
	first := false
	s.closeOnce.Do(func() {
		first = true
		s.closeErr = s.teardown()
	})
	if !first {
		return nil
	}
	return s.closeErr
}

func (s *Sandbox) teardown() error {
	s.life.Lock()
	s.closed = true
	s.life.Unlock()

	var errs []error
	if !s.stopProcesses() {
		errs = append(errs, fmt.Errorf("sandbox %s: processes survived SIGKILL", s.name))
	}
	close(s.stopped)
	if err := s.finishProcesses(); err != nil {
		errs = append(errs, err)
	}
	if s.starter != nil {
		s.starter.stop()
	}
	errs = append(errs, s.destroy())
	s.log.Debug("sandbox closed")
	return errors.Join(errs...)
}

// stopProcesses terminates every process: first politely, then not. It
// reports whether the namespace ended empty.
func (s *Sandbox) stopProcesses() bool {
	s.signalAll(syscall.SIGTERM)
	deadline := time.Now().Add(s.stopTimeout)
	for !s.empty() {
		if time.Now().After(deadline) {
			s.log.Warn("processes ignored SIGTERM; sending SIGKILL")
			s.signalAll(syscall.SIGKILL)
			_, empty := killAllIn(s.nsID, killTimeout)
			if !empty {
				s.log.Error("processes survived SIGKILL in the sandbox")
			}
			return empty
		}
		time.Sleep(pollInterval)
	}
	return true
}

// signalAll signals every group whose leader is alive, then every process
// in the namespace (daemons that left their group).
func (s *Sandbox) signalAll(sig syscall.Signal) {
	s.mu.Lock()
	procs := make([]*Process, 0, len(s.live))
	for _, p := range s.live {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	for _, p := range procs {
		_ = p.signalGroup(sig)
	}
	if _, err := signalIn(s.nsID, sig); err != nil {
		s.log.WithError(err).Warn("scan processes in sandbox")
	}
}

// empty reports whether no started process is unreaped and no process is
// left in the namespace.
func (s *Sandbox) empty() bool {
	s.mu.Lock()
	n := 0
	for _, p := range s.live {
		if !p.hasExited() {
			n++
		}
	}
	s.mu.Unlock()
	if n > 0 {
		return false
	}
	pids, err := pidsIn(s.nsID)
	if err != nil {
		return false
	}
	for _, pid := range pids {
		if s.holder == nil || pid != s.holder.Process.Pid {
			return false
		}
	}
	return true
}

// finishProcesses waits, after all processes were killed, for them to be
// reaped and for streamed processes to deliver their Exited event, then
// closes every pipe and waits for every goroutine.
func (s *Sandbox) finishProcesses() error {
	s.mu.Lock()
	procs := make([]*Process, 0, len(s.tracked))
	for p := range s.tracked {
		procs = append(procs, p)
	}
	s.mu.Unlock()

	var errs []error
	for _, p := range procs {
		p.release()
	}
	guard := time.NewTimer(killTimeout + closeDrainTimeout)
	defer guard.Stop()
	expired := false
	for _, p := range procs {
		if !expired {
			select {
			case <-p.done():
			case <-guard.C:
				expired = true
			}
		}
		select {
		case <-p.done():
		default:
			errs = append(errs, fmt.Errorf("sandbox %s: pid %d: exit not delivered in time", s.name, p.pid))
		}
	}
	// Output pipes still held by processes that escaped the namespace must
	// not keep readers (and so Close) waiting.
	for _, p := range procs {
		p.closePipes()
	}
	// Only a process that survived SIGKILL (stuck in the kernel) keeps a
	// goroutine waiting now; Close must return anyway.
	waited := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-time.After(killTimeout):
		errs = append(errs, fmt.Errorf("sandbox %s: process goroutines did not finish", s.name))
	}
	return errors.Join(errs...)
}

// destroy ends the holder (and with it whatever is left in its PID
// namespace), removes the namespace, the run directory and the payload's
// /tmp; used by Close and by a failed Open.
func (s *Sandbox) destroy() error {
	var errs []error
	if s.holder != nil {
		s.life.Lock()
		s.closed = true // expected death: waitHolder stays quiet
		s.life.Unlock()
		_ = s.holder.Process.Kill()
		select {
		case <-s.holderDone:
		case <-time.After(killTimeout):
			errs = append(errs, fmt.Errorf("sandbox %s: the sandbox init survived SIGKILL", s.name))
		}
	}
	// The nosymfollow mounts sit on the disk's binds: they go first.
	if err := s.mounts.Unmount(); err != nil {
		errs = append(errs, fmt.Errorf("sandbox %s: %w", s.name, err))
	}
	// The disk goes before the payload's /tmp, which is one of its binds.
	if err := s.closeLimits(); err != nil {
		errs = append(errs, fmt.Errorf("sandbox %s: %w", s.name, err))
	}
	if s.ns.IsOpen() {
		if err := s.ns.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close netns handle: %w", err))
		}
		if err := nsthread.DeleteNamed(s.name); err != nil {
			errs = append(errs, fmt.Errorf("sandbox %s: delete netns: %w", s.name, err))
		}
	}
	if err := os.RemoveAll(s.runDir); err != nil {
		errs = append(errs, fmt.Errorf("sandbox %s: remove %s: %w", s.name, s.runDir, err))
	}
	if err := os.RemoveAll(s.tmpDir); err != nil {
		errs = append(errs, fmt.Errorf("sandbox %s: remove the payload's /tmp: %w", s.name, err))
	}
	if s.usernsFile != nil {
		s.usernsFile.Close()
	}
	if s.rootfs != nil {
		if err := os.RemoveAll(s.layerDir); err != nil {
			errs = append(errs, fmt.Errorf("sandbox %s: remove the writable layer: %w", s.name, err))
		}
	}
	if s.userns && s.ids != 0 {
		if err := disownVolumes(s.workdir, s.ids); err != nil {
			errs = append(errs, fmt.Errorf("sandbox %s: %w", s.name, err))
		}
	}
	return errors.Join(errs...)
}

// Cleanup removes the sandbox for workdir left behind by a runtime that did
// not Close it (crash, SIGKILL): it kills every process in its namespace,
// deletes the namespace and the hosts directory. It is a no-op if there is
// none. Do not call it for a sandbox that is open in this process. log may
// be nil (discard).
func Cleanup(prefix, workdir string, log *logrus.Entry) error {
	name := NameFor(prefix, workdir)
	log = orDiscard(log).WithField("sandbox", name)
	found, err := cleanupName(name, log)
	if found && err == nil {
		log.Warn("removed a stale sandbox")
	}
	return err
}

func cleanupName(name string, log *logrus.Entry) (found bool, err error) {
	nsPath := filepath.Join(netnsDir, name)
	if _, err := os.Lstat(nsPath); err == nil {
		found = true
		if id, err := nsIDOfPath(nsPath); err == nil {
			n, empty := killAllIn(id, killTimeout)
			if n > 0 {
				log.WithField("killed", n).Warn("killed processes left in a stale sandbox")
			}
			if !empty {
				return found, fmt.Errorf("processes in stale netns %s survived SIGKILL", name)
			}
		}
		if err := nsthread.DeleteNamed(name); err != nil {
			return found, fmt.Errorf("delete stale netns %s: %w", name, err)
		}
	}
	dir := filepath.Join(runDir, name)
	// The dead runtime's nosymfollow volume mounts, which sit on the
	// disk's binds, before the disk and before the record goes.
	if err := volume.UnmountRecorded(filepath.Join(dir, volume.MountsRecord)); err != nil {
		return found, fmt.Errorf("stale sandbox %s: %w", name, err)
	}
	// The cgroup and the disk are named like the sandbox; its processes
	// are dead now.
	if err := limits.Sweep(name); err != nil {
		return found, fmt.Errorf("stale sandbox limits: %w", err)
	}
	if _, err := os.Lstat(dir); err == nil {
		found = true
		if err := cleanupWorkdir(name, dir); err != nil {
			return found, err
		}
		if err := os.RemoveAll(dir); err != nil {
			return found, fmt.Errorf("remove stale hosts dir: %w", err)
		}
	}
	return found, nil
}

// List returns the names of existing sandboxes (a named namespace or a
// hosts directory) that start with prefix (DefaultPrefix when empty),
// sorted. Use it to find leaks.
func List(prefix string) ([]string, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	seen := map[string]bool{}
	for _, dir := range []string{netnsDir, runDir} {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				seen[e.Name()] = true
			}
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// starter owns one OS thread that lives in the sandbox's namespace for the
// sandbox's lifetime; every process is forked from it, so it starts in the
// namespace (a fork inherits the forking thread's namespaces).
//
// A dedicated thread rather than a switch in and out per Start because
// Pdeathsig is tied to the thread that forked the child, not to the
// process: a pooled thread may later be discarded by unrelated code (a
// goroutine that exits while locked), which would SIGKILL the payload.
// This thread is discarded deliberately at Close, after every process is
// gone; if the runtime dies, the kernel kills the direct children.
type starter struct {
	reqs        chan startReq
	done        chan struct{}
	startHolder func() (int, error)
}

type startReq struct {
	cmd *exec.Cmd
	res chan error
}

// newStarter starts the thread: it enters ns, runs startHolder there and
// then joins the holder's mount, PID (for its children), UTS and IPC
// namespaces, so that every process it forks starts in all of them.
func newStarter(ns netns.NsHandle, startHolder func() (int, error)) (*starter, error) {
	st := &starter{reqs: make(chan startReq), done: make(chan struct{}), startHolder: startHolder}
	ready := make(chan error, 1)
	go st.run(ns, ready)
	if err := <-ready; err != nil {
		<-st.done
		return nil, err
	}
	return st, nil
}

func (st *starter) run(ns netns.NsHandle, ready chan<- error) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// Not the main thread: the runtime cannot end it, and
		// /proc/PID/ns/net (what `ip netns identify` and others read)
		// shows the main thread's namespace. This goroutine keeps the
		// main thread locked until the new one has locked a thread of
		// its own, so it cannot land on the main thread again: with
		// GOMAXPROCS=1 (a one-CPU cgroup) it always would, forever.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			st.serve(ns, ready)
		}()
		<-locked
		runtime.UnlockOSThread()
		return
	}
	st.serve(ns, ready)
}

// serve runs on a locked thread other than the main one.
func (st *starter) serve(ns netns.NsHandle, ready chan<- error) {
	defer close(st.done)
	if err := netns.Set(ns); err != nil {
		// setns failed, so the thread is still where it was.
		runtime.UnlockOSThread()
		ready <- err
		return
	}
	// From here on the thread is changed for good: every return leaves it
	// locked, so the Go runtime ends it.
	pid, err := st.startHolder()
	if err == nil {
		err = joinHolder(pid)
	}
	ready <- err
	if err != nil {
		return
	}
	for req := range st.reqs {
		req.res <- req.cmd.Start()
	}
	// Return while locked: the runtime ends this thread instead of
	// reusing it in the wrong namespace.
}

// joinHolder moves the calling thread into the holder's namespaces. A
// thread shares its file system attributes (root, cwd) with the whole
// process, which setns to a mount namespace refuses; unshare(CLONE_FS)
// gives this thread its own first.
func joinHolder(pid int) error {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare CLONE_FS: %w", err)
	}
	namespaces := []struct {
		name string
		typ  int
		fd   int
	}{{"mnt", unix.CLONE_NEWNS, -1}, {"pid", unix.CLONE_NEWPID, -1}, {"uts", unix.CLONE_NEWUTS, -1}, {"ipc", unix.CLONE_NEWIPC, -1}}
	// Open all first: once in the new mount namespace, /proc is the
	// init's, where the init is pid 1.
	for i := range namespaces {
		ns := &namespaces[i]
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, ns.name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open the init's %s namespace: %w", ns.name, err)
		}
		defer unix.Close(fd)
		ns.fd = fd
	}
	for _, ns := range namespaces {
		if err := unix.Setns(ns.fd, ns.typ); err != nil {
			return fmt.Errorf("join the init's %s namespace: %w", ns.name, err)
		}
	}
	return nil
}

func (st *starter) start(cmd *exec.Cmd) error {
	res := make(chan error, 1)
	st.reqs <- startReq{cmd: cmd, res: res}
	return <-res
}

// stop ends the thread. Only after the last start returned.
func (st *starter) stop() {
	close(st.reqs)
	<-st.done
}

// holderPath is the file the sandbox init is executed from: /proc/self/exe,
// or, for a runtime that is not root but holds file capabilities, this
// binary by its path. The init starts in a new mount namespace, and the
// kernel honours file capabilities only for a file reached through a mount
// of the namespace that executes it; /proc/self/exe points into the
// runtime's namespace, so such a runtime would start an init without them.
// As root the magic link stays: it cannot name a file replaced on disk
// meanwhile.
var holderPath = sync.OnceValue(func() string {
	if os.Geteuid() != 0 {
		if p, err := os.Executable(); err == nil {
			if p, err = filepath.EvalSymlinks(p); err == nil {
				return p
			}
		}
	}
	return "/proc/self/exe"
})

// orDiscard is log, or a logger that discards when the caller gave none:
// a library logs only where its caller said.
func orDiscard(log *logrus.Entry) *logrus.Entry {
	if log != nil {
		return log
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}
