//go:build linux

package netns

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/owner"
)

// Sweep removes what runtimes that died left behind: every sandbox (named
// namespace, /run/gvpn directory, processes still in the namespace) and
// every agent sandbox socket directory whose name starts with prefix
// (DefaultPrefix when empty) and whose owner record names a process that is
// gone. A sandbox whose owner runs is never touched, nor a namespace
// without a /run/gvpn directory (it may be anybody's). A directory without
// an owner record (an older version's, or half removed) is stale only when
// it is older than a minute, no thread of any process is in its namespace
// (an older runtime keeps one there for its whole life) and no socket is
// bound in it. It returns the names it removed; errors of single
// sandboxes are joined and the sweep goes on.
func Sweep(prefix string, log *logrus.Entry) ([]string, error) {
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	names, err := List(prefix)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, name := range names {
		dir := filepath.Join(runDir, name)
		if _, err := os.Lstat(dir); err != nil {
			// A namespace alone may be anybody's that shares the
			// prefix; only a gvpn directory beside it makes it ours.
			continue
		}
		l := log.WithField("sandbox", name)
		rec, err := owner.Read(dir)
		switch {
		case err == nil && rec.Alive():
			continue
		case err == nil:
			l = l.WithField("dead_owner_pid", rec.PID)
		case young(dir), inUse(name), listening(dir):
			continue
		}
		if _, err := cleanupName(name, l); err != nil {
			errs = append(errs, err)
			continue
		}
		l.Warn("removed a sandbox left by a runtime that died")
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

// legacyGrace is how old a directory without an owner record must be
// before a sweep takes it for stale: an older runtime creates it a moment
// before its thread enters the namespace.
const legacyGrace = time.Minute

func young(dir string) bool {
	fi, err := os.Lstat(dir)
	return err != nil || time.Since(fi.ModTime()) < legacyGrace
}

// listening reports whether a unix socket is bound to a path in dir: an
// older runtime's agent sandbox listens there. /proc/net/unix lists them
// without connecting (a connection would take the agent's bridge over).
func listening(dir string) bool {
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && strings.HasPrefix(f[7], dir+"/") {
			return true
		}
	}
	return false
}

// inUse reports whether any thread of any process is in the named
// namespace (or whether that cannot be told).
func inUse(name string) bool {
	id, err := nsIDOfPath(filepath.Join(netnsDir, name))
	if errors.Is(err, os.ErrNotExist) {
		return false // no namespace: only a directory to remove
	}
	if err != nil {
		return true
	}
	tasks, err := filepath.Glob("/proc/[0-9]*/task/[0-9]*/ns/net")
	if err != nil {
		return true
	}
	for _, t := range tasks {
		if got, err := nsIDOfPath(t); err == nil && got == id {
			return true
		}
	}
	return false
}
