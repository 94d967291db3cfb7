//go:build linux

package sandbox

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/owner"
)

// Sweep removes what runtimes that died left behind: every sandbox (named
// namespace, /run/gvpn directory, processes still in the namespace) and
// every agent sandbox socket directory whose name starts with prefix
// (DefaultPrefix when empty) and whose owner record names a process that is
// gone. A sandbox whose owner runs is never touched; a namespace without a
// claimed directory (an older version's, or half removed) is stale. It
// returns the names it removed; errors of single sandboxes are joined and
// the sweep goes on.
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
		if _, err := os.Lstat(dir); err == nil && !owner.Stale(dir) {
			continue
		}
		l := log.WithField("sandbox", name)
		if rec, err := owner.Read(dir); err == nil {
			l = l.WithField("dead_owner_pid", rec.PID)
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
