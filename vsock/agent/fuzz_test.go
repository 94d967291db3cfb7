package agent

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/gvpn/gvpn/netcfg"
)

// FuzzParseArgs: any command line (arguments separated by NUL) either
// parses into something Run can take, or fails with flag's own error or a
// *netcfg.FieldError; never a panic. Seeds: testdata/fuzz/FuzzParseArgs.
func FuzzParseArgs(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseArgs(strings.Split(s, "\x00"), nil, io.Discard)
		if err != nil {
			var ue *netcfg.FieldError
			if !errors.As(err, &ue) && !errors.Is(err, flag.ErrHelp) && !strings.Contains(err.Error(), "flag") &&
				!strings.Contains(err.Error(), "invalid") {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if o.ShowVersion {
			return
		}
		if err := o.Bridge.Validate(); err != nil {
			t.Fatalf("accepted an invalid bridge: %v", err)
		}
		if o.Manual != nil {
			if _, err := o.Manual.Parse(); err != nil {
				t.Fatalf("accepted a manual configuration the agent cannot apply: %+v: %v", *o.Manual, err)
			}
		}
	})
}
