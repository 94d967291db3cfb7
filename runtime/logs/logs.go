// Package logs is the one logging set-up of gvpn's binaries (gvpn-runtime,
// gvpn-agent, gvpn-lab): logrus writing to the given stream (stderr: stdout
// belongs to the ExeUnit), at a level, as text or JSON. Libraries never
// call it; they take a logger from their caller.
package logs

import (
	"fmt"
	"io"

	"github.com/sirupsen/logrus"
)

// Formats are the values of --log-format.
var Formats = []string{"text", "json"}

// New returns a logger writing to w at level ("debug", "info", "warn",
// "error", …) in format ("text" or "json"). The errors name the flag that
// set the bad value. logrus's standard logger is pointed at the same place
// in the same way, for the few library logs (tap, netcfg) that still go
// through it.
func New(w io.Writer, level, format string) (*logrus.Logger, error) {
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	var f logrus.Formatter
	switch format {
	case "text":
		f = &logrus.TextFormatter{FullTimestamp: true}
	case "json":
		f = &logrus.JSONFormatter{}
	default:
		return nil, fmt.Errorf("--log-format must be text or json, not %q", format)
	}
	l := logrus.New()
	l.SetOutput(w)
	l.SetLevel(lvl)
	l.SetFormatter(f)
	logrus.SetOutput(w)
	logrus.SetLevel(lvl)
	logrus.SetFormatter(f)
	return l, nil
}
