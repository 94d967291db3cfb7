// Package owner says which runtime owns an activity's resources, so that
// two runtimes never share a workdir and a crashed runtime's leftovers can
// be told from a live runtime's.
//
// A workdir is locked with flock(2) on a file in it (Lock): the kernel drops
// the lock when its holder dies, however it dies. Resources outside the
// workdir (a sandbox's directory under /run/gvpn, its named namespace) get
// an owner record (Claim) naming the runtime's pid and that process's start
// time, so that a record whose process is gone — or whose pid now belongs
// to another process — is recognised as stale.
package owner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockFile is the lock's file name in the workdir.
const LockFile = ".gvpn-runtime.lock"

// ErrBusy is returned (wrapped) by Lock and Claim when a live runtime holds
// the workdir or the directory.
var ErrBusy = errors.New("in use by a running gvpn-runtime")

// WorkdirLock is a held workdir lock. Unlock, or the holder's death,
// releases it.
type WorkdirLock struct{ f *os.File }

// Lock takes the workdir's lock without waiting. When another process holds
// it, the error wraps ErrBusy and names that process; nothing in the
// workdir is changed then.
func Lock(workdir string) (*WorkdirLock, error) {
	path := filepath.Join(workdir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock workdir %s: %w", workdir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := "another process"
		if b, rerr := os.ReadFile(path); rerr == nil && len(strings.TrimSpace(string(b))) > 0 {
			holder = "pid " + strings.TrimSpace(string(b))
		}
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("workdir %s is %w (%s); one activity per workdir", workdir, ErrBusy, holder)
		}
		return nil, fmt.Errorf("lock workdir %s: %w", workdir, err)
	}
	// Who holds it, for the next one's error message.
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &WorkdirLock{f: f}, nil
}

// Unlock releases the lock. The file stays (removing it would race with a
// runtime that opened it and waits to lock it). Idempotent.
func (l *WorkdirLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = l.f.Truncate(0)
	err := l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
	return err
}

// RecordFile is the owner record's name in a claimed directory.
const RecordFile = "owner"

// Record identifies a process across pid reuse.
type Record struct {
	PID int
	// Start is the process's start time in clock ticks since boot
	// (/proc/PID/stat field 22).
	Start uint64
}

// Self is the calling process's record.
func Self() (Record, error) {
	pid := os.Getpid()
	start, err := startTime(pid)
	if err != nil {
		return Record{}, err
	}
	return Record{PID: pid, Start: start}, nil
}

func (r Record) String() string { return strconv.Itoa(r.PID) + " " + strconv.FormatUint(r.Start, 10) }

// Alive reports whether the recorded process still runs: its pid exists and
// started at the recorded time.
func (r Record) Alive() bool {
	start, err := startTime(r.PID)
	return err == nil && start == r.Start
}

// startTime reads field 22 of /proc/PID/stat. The command name (field 2)
// may contain spaces and parentheses, so fields are counted after its last
// ')'.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// Claim creates dir (mode 0700 whatever the umask: only root may enter) holding the calling
// process's owner record, atomically: the directory appears with its
// record or not at all, so a sweep never sees an ownerless directory of a
// live runtime. When dir exists already the error wraps ErrBusy if its
// owner is alive and os.ErrExist otherwise (the caller removes the stale
// directory and claims again).
func Claim(dir string) error {
	self, err := Self()
	if err != nil {
		return err
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".new-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := os.Chmod(tmp, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, RecordFile), []byte(self.String()+"\n"), 0o644); err != nil {
		return err
	}
	// rename(2) of a directory onto an existing non-empty one fails, and
	// onto an empty one (left by an older version) replaces it.
	err = os.Rename(tmp, dir)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
		if r, rerr := Read(dir); rerr == nil && r.Alive() {
			return fmt.Errorf("%s is %w (pid %d)", dir, ErrBusy, r.PID)
		}
		return fmt.Errorf("%s: %w", dir, os.ErrExist)
	}
	return err
}

// Read returns the owner record of a claimed directory.
func Read(dir string) (Record, error) {
	b, err := os.ReadFile(filepath.Join(dir, RecordFile))
	if err != nil {
		return Record{}, err
	}
	var r Record
	if _, err := fmt.Sscan(string(b), &r.PID, &r.Start); err != nil || r.PID <= 0 {
		return Record{}, fmt.Errorf("%s: bad owner record %q", dir, strings.TrimSpace(string(b)))
	}
	return r, nil
}

// Stale reports whether dir's owner is gone: its record names a dead
// process, or it has no readable record (Claim never makes a directory
// without one, so such a directory is an older version's or half
// removed). A directory whose record names a live process is never stale.
func Stale(dir string) bool {
	r, err := Read(dir)
	return err != nil || !r.Alive()
}
