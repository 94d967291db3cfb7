//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
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
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	return has(unix.CAP_SETUID) && has(unix.CAP_SETGID) && has(unix.CAP_SYS_ADMIN)
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
