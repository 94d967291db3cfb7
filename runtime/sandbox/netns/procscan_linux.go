//go:build linux

package netns

import (
	"errors"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// nsID identifies a namespace: the device and inode of its nsfs file, as
// seen through /run/netns/NAME, an open handle or /proc/PID/ns/net.
type nsID struct{ dev, ino uint64 }

func nsIDOfFD(fd int) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nsID{}, err
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

func nsIDOfPath(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

// pidsIn lists the processes (thread group leaders) whose network namespace
// is id, except the calling process: one of its threads may sit in the
// namespace to start children there. Exited processes (zombies) have no
// namespace any more and are not listed.
func pidsIn(id nsID) ([]int, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []int
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 || pid == self {
			continue
		}
		got, err := nsIDOfPath("/proc/" + name + "/ns/net")
		if err == nil && got == id {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// signalIn sends sig to every process in namespace id and returns how many
// it found. The namespace is re-checked through a pidfd, so a pid that was
// reused by an unrelated process between the scan and the signal is never
// hit.
func signalIn(id nsID, sig unix.Signal) (int, error) {
	pids, err := pidsIn(id)
	if err != nil {
		return 0, err
	}
	for _, pid := range pids {
		signalIfIn(pid, id, sig)
	}
	return len(pids), nil
}

func signalIfIn(pid int, id nsID, sig unix.Signal) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			// Kernels before 5.3: accept the small reuse window.
			_ = unix.Kill(pid, sig)
		}
		return
	}
	defer unix.Close(fd)
	// The pidfd pins the process it was opened for: if that process is
	// still alive after the namespace check, the check was about it.
	got, err := nsIDOfPath("/proc/" + strconv.Itoa(pid) + "/ns/net")
	if err != nil || got != id {
		return
	}
	if unix.PidfdSendSignal(fd, 0, nil, 0) != nil {
		return
	}
	_ = unix.PidfdSendSignal(fd, sig, nil, 0)
}

// killAllIn SIGKILLs every process in namespace id, again and again (a
// dying process may still fork), until none is left or timeout passes. It
// returns how many processes the first scan found and whether the namespace
// ended empty.
func killAllIn(id nsID, timeout time.Duration) (found int, empty bool) {
	deadline := time.Now().Add(timeout)
	for first := true; ; first = false {
		n, err := signalIn(id, unix.SIGKILL)
		if first {
			found = n
		}
		if err == nil && n == 0 {
			return found, true
		}
		if time.Now().After(deadline) {
			return found, false
		}
		time.Sleep(pollInterval)
	}
}

// pollInterval is how often teardown re-checks for remaining processes.
const pollInterval = 10 * time.Millisecond
