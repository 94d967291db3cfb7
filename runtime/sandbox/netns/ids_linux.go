//go:build linux

package netns

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/runtime/proc"
)

// Each sandbox that can map ids (CanMapIDRanges) gets a range of
// IDRangeSize host uids and gids of its own, idRangeSlots ranges from
// idRangeFirst on: payload processes run in user namespaces mapping ids 0
// to IDRangeSize-1 to that range, so two activities never share an
// identity on the host, and neither is any user of the host. The range
// is in systemd's documented container range (0x80000-0x6fffffff) and
// below 2^31, so that ping_group_range covers it; it is allocated from
// the top end to keep off systemd-nspawn's random picks.
const (
	// IDRangeSize is the number of ids a sandbox's user namespace maps:
	// an image's users (0 to 65535, nobody 65534) all map.
	IDRangeSize  = 65536
	idRangeFirst = 0x60000000
	idRangeSlots = 0x1000

	idRecordFile = "ids"       // in /run/gvpn/NAME: "BASE SIZE"
	idLockFile   = ".ids.lock" // in /run/gvpn: serialises allocation
	idNextFile   = ".ids.next" // in /run/gvpn: where the next search starts
	workdirFile  = "workdir"   // in /run/gvpn/NAME: the activity's workdir
)

// CanMapIDRanges reports whether this process can give a sandbox a user
// namespace mapped to a range of host ids: it needs CAP_SETUID and
// CAP_SETGID (to write the maps) and CAP_SYS_ADMIN (idmapped mounts), as
// root has them. A runtime without them (a provider that is not root,
// with the file capabilities of docs/provider.md) runs payloads without a
// user namespace, as a host user that must then be its own (see
// Config.User): activities of such a runtime share that identity, and an
// image's files keep their owners, so an image that expects root cannot
// write its own files.
func CanMapIDRanges() bool {
	eff, err := proc.EffectiveCaps()
	return err == nil && proc.HasCaps(eff, unix.CAP_SETUID, unix.CAP_SETGID, unix.CAP_SYS_ADMIN)
}

// allocIDs picks a range no sandbox directory under runDir records and
// records it in dir (the caller's claimed /run/gvpn/NAME). Ranges are
// handed out round robin, so a range comes back only after every other
// one was used; a crashed sandbox's range is free again once Sweep (or
// the next Open of its workdir) removed its directory.
func allocIDs(dir string) (uint32, error) {
	lock, err := os.OpenFile(filepath.Join(runDir, idLockFile), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return 0, fmt.Errorf("id ranges: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return 0, fmt.Errorf("id ranges: %w", err)
	}
	entries, err := os.ReadDir(runDir)
	if err != nil {
		return 0, fmt.Errorf("id ranges: %w", err)
	}
	used := map[uint32]bool{}
	for _, e := range entries {
		if base, err := readIDs(filepath.Join(runDir, e.Name())); err == nil {
			used[base] = true
		}
	}
	next := 0
	if b, err := os.ReadFile(filepath.Join(runDir, idNextFile)); err == nil {
		next, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	for i := range idRangeSlots {
		slot := (next + i) % idRangeSlots
		base := uint32(idRangeFirst + slot*IDRangeSize)
		if used[base] {
			continue
		}
		rec := fmt.Sprintf("%d %d\n", base, IDRangeSize)
		if err := os.WriteFile(filepath.Join(dir, idRecordFile), []byte(rec), 0o600); err != nil {
			return 0, fmt.Errorf("id ranges: %w", err)
		}
		_ = os.WriteFile(filepath.Join(runDir, idNextFile), []byte(strconv.Itoa(slot+1)+"\n"), 0o600)
		return base, nil
	}
	return 0, errors.New("id ranges: all are in use")
}

// CheckIDRange reports the host users, groups and subordinate id ranges
// (passwd, group, subuid and subgid in etc, normally /etc) that lie in the
// ranges sandboxes map payloads to: a payload would own such a user's
// files. A missing file holds no conflict; the error names each
// conflicting entry and its file.
func CheckIDRange(etc string) error {
	const first, end = uint64(idRangeFirst), uint64(idRangeFirst) + idRangeSlots*IDRangeSize
	var bad []string
	for _, f := range []struct {
		name   string
		id     int  // the field holding the id, or a range's start
		ranged bool // the next field is the range's length
	}{{"passwd", 2, false}, {"group", 2, false}, {"subuid", 1, true}, {"subgid", 1, true}} {
		b, err := os.ReadFile(filepath.Join(etc, f.name))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			fields := strings.Split(line, ":")
			if len(fields) <= f.id || (f.ranged && len(fields) <= f.id+1) {
				continue
			}
			lo, err := strconv.ParseUint(fields[f.id], 10, 32)
			n := uint64(1)
			if err == nil && f.ranged {
				n, err = strconv.ParseUint(fields[f.id+1], 10, 32)
			}
			if err == nil && lo < end && lo+n > first {
				bad = append(bad, fmt.Sprintf("%s %s (id %d, %d ids)", f.name, fields[0], lo, n))
			}
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("host ids %#x-%#x are for payloads, but this host uses some: %s", first, end-1, strings.Join(bad, ", "))
	}
	return nil
}

// readIDs returns the base of the range recorded in a sandbox directory.
func readIDs(dir string) (uint32, error) {
	b, err := os.ReadFile(filepath.Join(dir, idRecordFile))
	if err != nil {
		return 0, err
	}
	var base, size uint32
	if _, err := fmt.Sscan(string(b), &base, &size); err != nil || size != IDRangeSize {
		return 0, fmt.Errorf("%s: bad id record %q", dir, strings.TrimSpace(string(b)))
	}
	return base, nil
}

// usernsMarker makes the current executable a keeper of a new user
// namespace (see newUserns): it waits for EOF on stdin and exits.
const (
	usernsMarker = "__gvpn-sandbox-userns"
	usernsArgv0  = "gvpn-sandbox-userns"
)

// idMap is the mapping of every payload user namespace of the range at
// base: ids 0 to IDRangeSize-1 inside are base to base+IDRangeSize-1 on
// the host.
func idMap(base uint32) []syscall.SysProcIDMap {
	return []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(base), Size: IDRangeSize}}
}

// newUserns returns a user namespace mapped to the range at base, for
// the init to idmap the image with. A namespace needs a process to be
// made; the keeper is this executable, started in a new one, and gone
// once its namespace is open (the descriptor keeps the namespace).
func newUserns(base uint32) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	cmd := &exec.Cmd{
		Path:  "/proc/self/exe",
		Args:  []string{usernsArgv0, usernsMarker},
		Stdin: r,
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER,
			UidMappings: idMap(base),
			GidMappings: idMap(base),
			Pdeathsig:   syscall.SIGKILL,
		},
	}
	err = cmd.Start()
	r.Close()
	if err != nil {
		return nil, err
	}
	f, err := os.Open("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user")
	w.Close()
	_ = cmd.Wait()
	return f, err
}

func runUsernsKeeper() int {
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// disownVolumes gives the activity's volume directories in workdir (those
// a uid of the range at base owns) back to the runtime: the range may go
// to another activity later, which must not enter them. The runtime's
// group keeps its access, so the ExeUnit still reads them.
func disownVolumes(workdir string, base uint32) error {
	entries, err := os.ReadDir(workdir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("disown volumes: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "vol-") {
			continue
		}
		p := filepath.Join(workdir, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil || st.Uid < base || st.Uid >= base+IDRangeSize {
			continue
		}
		if err := os.Lchown(p, os.Geteuid(), -1); err != nil {
			errs = append(errs, fmt.Errorf("disown volume %s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// cleanupWorkdir removes what a sandbox named name, whose directory is
// dir, left in its workdir: the writable layer and the payload's /tmp;
// and disowns its volumes. The workdir is the one the directory records,
// and only if it is the one the name was derived from.
func cleanupWorkdir(name, dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, workdirFile))
	if err != nil {
		return nil // an older version's directory, or none recorded yet
	}
	workdir := string(b)
	if len(name) < 12 || !filepath.IsAbs(workdir) || NameFor(name[:len(name)-12], workdir) != name {
		return fmt.Errorf("%s: workdir record %q does not match the name", dir, workdir)
	}
	var errs []error
	for _, d := range []string{LayerDirName, TmpDirName} {
		if err := os.RemoveAll(filepath.Join(workdir, d)); err != nil {
			errs = append(errs, fmt.Errorf("remove stale %s: %w", d, err))
		}
	}
	if base, err := readIDs(dir); err == nil {
		errs = append(errs, disownVolumes(workdir, base))
	}
	return errors.Join(errs...)
}
