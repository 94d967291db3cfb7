package api

import "path/filepath"

// Where gvpn-runtime logs in service mode and at deploy. The provider
// starts the ExeUnit with stderr on /dev/null, so this file is the only
// place an operator (or the lab) finds the runtime's logs: part of the
// runtime's contract with whoever runs it, like the wire format.
const (
	LogDir  = "logs"
	LogFile = "gvpn-runtime.log"
)

// LogPath returns the runtime's log file for an activity work directory.
func LogPath(workdir string) string { return filepath.Join(workdir, LogDir, LogFile) }
