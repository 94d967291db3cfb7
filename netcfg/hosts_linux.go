package netcfg

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// maxHostsSize bounds how much of an existing hosts file MergeHosts reads;
// anything larger is not a hosts file we should be rewriting.
const maxHostsSize = 16 << 20

// MergeHosts merges entries (hostname → IP, as in CreateNetwork's hosts
// map) into the hosts file at path, creating it (mode 0644) if missing.
//
// Entries are checked first: hostnames must follow RFC 1123 and values
// must be IP addresses; the first bad one (by hostname order) is returned
// as a *HostsEntryError and the file is not touched. Then each hostname is
// made to resolve to its IP: lines already saying so are kept, a stale
// single-name line gets the new IP in place, the name is removed from other
// stale lines, and missing ones are appended as "IP<TAB>hostname", sorted
// by hostname. Every other line, comments included, is kept byte for byte.
//
// The file is rewritten in place (same inode), never replaced by rename:
// a sandbox's /etc/hosts is a bind mount, and renaming over a mount point
// fails. The new content is written over the old from offset 0, then the
// file is truncated to its length and synced, so a crash can leave a mix
// but never an empty file. An exclusive flock serialises concurrent
// MergeHosts calls on the same file. If nothing changes, nothing is
// written: merging the same map twice leaves identical bytes.
func MergeHosts(path string, entries map[string]string) error {
	es, err := checkHosts(entries)
	if err != nil {
		return err
	}
	if len(es) == 0 {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("netcfg: hosts: %w", err)
	}
	defer f.Close()

	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("netcfg: hosts %s: %w", path, err)
	}
	var lockErr error
	if err := rc.Control(func(fd uintptr) {
		for {
			lockErr = unix.Flock(int(fd), unix.LOCK_EX)
			if lockErr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return fmt.Errorf("netcfg: hosts %s: %w", path, err)
	}
	if lockErr != nil {
		return fmt.Errorf("netcfg: hosts %s: lock: %w", path, lockErr)
	}
	// Closing f releases the lock.

	data, err := io.ReadAll(io.LimitReader(f, maxHostsSize+1))
	if err != nil {
		return fmt.Errorf("netcfg: hosts %s: read: %w", path, err)
	}
	if len(data) > maxHostsSize {
		return fmt.Errorf("netcfg: hosts %s: larger than %d bytes", path, maxHostsSize)
	}
	out, changed := mergeHosts(string(data), es)
	if !changed {
		return nil
	}
	if _, err := f.WriteAt([]byte(out), 0); err != nil {
		return fmt.Errorf("netcfg: hosts %s: write: %w", path, err)
	}
	if err := f.Truncate(int64(len(out))); err != nil {
		return fmt.Errorf("netcfg: hosts %s: truncate: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("netcfg: hosts %s: sync: %w", path, err)
	}
	return nil
}
