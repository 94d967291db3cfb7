package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/runtime/cmdflag"
	"github.com/gvpn/gvpn/runtime/logs"
)

// Main runs gvpn-agent's command line and returns the exit code: 0 after
// SIGTERM/SIGINT or a served shutdown, 1 when the agent failed, 2 for a bad
// command line.
func Main(args []string, stdout, stderr io.Writer) int {
	o, err := ParseArgs(args, os.Getenv, stdout)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		var ue *netcfg.FieldError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "gvpn-agent: %v; see gvpn-agent --help\n", err)
		} else {
			fmt.Fprintln(stderr, cmdflag.Explain("gvpn-agent", err))
		}
		return 2
	}
	if o.ShowVersion {
		fmt.Fprintln(stdout, "gvpn-agent", Version)
		return 0
	}
	log, err := setupLog(o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "gvpn-agent:", err)
		return 2
	}
	o.Log = log
	fields := logrus.Fields{"bridge": o.Bridge.String(), "version": Version}
	if o.Manual != nil {
		fields["mode"] = "manual"
		fields["ip"] = o.Manual.IfAddr + "/" + o.Manual.Mask
		fields["listen"] = o.Listen
	} else {
		fields["mode"] = "managed"
	}
	log.WithFields(fields).Info("gvpn-agent starting")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := Run(ctx, o.Config); err != nil {
		log.WithError(err).Error("gvpn-agent failed")
		return 1
	}
	log.Info("gvpn-agent stopped")
	return 0
}

func setupLog(o Options, stderr io.Writer) (*logrus.Entry, error) {
	l, err := logs.New(stderr, o.LogLevel, o.LogFormat)
	if err != nil {
		return nil, err
	}
	return logrus.NewEntry(l).WithField("agent", "gvpn"), nil
}
