// Package proc is how gvpn starts and ends a payload's programs, whichever
// sandbox runs them (the netns sandbox's shim, gvpn-agent): the program is
// found as execvp finds it, a Supervisor watches the started process (its
// output, its exit, signals to its group), and its end is reported with the
// shell's return codes.
package proc

import (
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultPath is searched for a bare program name when the program's
// environment has no PATH, as execvp does.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// MaxSignal is the highest signal number Linux has (SIGRTMAX).
const MaxSignal = 64

// PathOf returns the search path of a program started with the environment
// env ("KEY=value"): its PATH, or DefaultPath when it has none. The last
// PATH wins, as in getenv.
func PathOf(env []string) string {
	path, found := "", false
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path, found = v, true
		}
	}
	if !found {
		return DefaultPath
	}
	return path
}

// LookPath resolves bin the way execvp does: a name with a slash is used as
// it is, any other name is searched in path (a colon-separated list; an
// empty entry means the working directory). A relative candidate is checked
// relative to dir when dir is not empty. A match that is a directory or not
// executable is skipped; the error is EACCES (errors.Is fs.ErrPermission)
// when only such matches were found, and ENOENT (fs.ErrNotExist) when none.
func LookPath(bin, path, dir string) (string, error) {
	if bin == "" {
		return "", unix.ENOENT
	}
	if strings.Contains(bin, "/") {
		return bin, nil
	}
	var denied error
	for _, d := range strings.Split(path, ":") {
		if d == "" {
			d = "."
		}
		candidate := d + "/" + bin
		check := candidate
		if !filepath.IsAbs(check) && dir != "" {
			check = filepath.Join(dir, check)
		}
		var st unix.Stat_t
		if unix.Stat(check, &st) != nil || st.Mode&unix.S_IFMT == unix.S_IFDIR {
			continue
		}
		if err := unix.Access(check, unix.X_OK); err != nil {
			denied = err
			continue
		}
		return candidate, nil
	}
	if denied != nil {
		return "", denied
	}
	return "", unix.ENOENT
}

// ReturnCode is the shell's return code for a wait status: the exit status,
// or 128+N when signal N ended the process (SIGKILL 137, SIGTERM 143), or
// -1 when the status says neither.
func ReturnCode(ws syscall.WaitStatus) int32 {
	switch {
	case ws.Exited():
		return int32(ws.ExitStatus())
	case ws.Signaled():
		return 128 + int32(ws.Signal())
	default:
		return -1
	}
}
