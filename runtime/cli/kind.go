package cli

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/limits"
	"github.com/gvpn/gvpn/runtime/network"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/runtime/volume"
)

// kind is one sandbox kind, everything the command line knows about it:
// --sandbox, the help, validate, deploy, test and start ask the kinds
// instead of naming them. A new kind is one file (kind_NAME_linux.go)
// that defines its kind and one line in kinds.
type kind struct {
	// name is the --sandbox value.
	name string
	// about is the kind in --sandbox's help, "name (what it is)"; a
	// newline in it breaks the help line there.
	about string

	// flags defines the kind's own flags on fs, into o; flagNames lists
	// them in the order the help prints them, under "Sandbox settings".
	flags     func(fs *flag.FlagSet, o *Options)
	flagNames []string
	// validate checks the kind's flags, whichever kind is chosen (a bad
	// value is refused even when another kind would ignore it); nil: none.
	validate func(o *Options) error

	// image is what the kind makes of the task package.
	image imageUse
	// volumes is deploy's check of the planned volumes: the ones the
	// payload gets in this kind, or an error that names the one it cannot
	// have. The error's text reaches the requestor.
	volumes func(o *Options, vols volume.List) (volume.List, error)
	// payloadOwnsVolumes: the volume directories belong to --payload-user
	// (the payload runs on this host as that user); else to the runtime.
	payloadOwnsVolumes bool

	// checks are the kind's own lines of `gvpn-runtime test` when it is
	// chosen, after the host checks every kind shares; nil: none.
	checks func(o *Options, log *logrus.Entry) []selfCheck

	// open makes the sandbox for start. It logs why it failed and
	// returns start's exit code then (sbx is nil); on success it returns
	// the sandbox and its attacher (usually the same value) and code 0.
	open func(o *Options, a openArgs) (sbx sandbox.Sandbox, attacher network.Attacher, code int)
}

// imageUse is what a sandbox kind does with the task package.
type imageUse int

const (
	// imageRoot: the payload runs in the image (squashfs mounted, an
	// archive extracted at deploy), with its user resolved on the host.
	imageRoot imageUse = iota
	// imageBoot: the image boots as a guest's root; squashfs or GVMI only.
	imageBoot
	// imageIgnored: the kind's launcher decides what the payload sees.
	imageIgnored
)

// openArgs is what start has for a kind's open: the deployment's and the
// agreement's state.
type openArgs struct {
	hostname string
	vols     volume.List
	img      *imageState
	limits   limits.Limits
	// logOut is where the runtime's log goes; a kind's payload output
	// (a launcher's, a guest console) joins it.
	logOut io.Writer
	log    *logrus.Entry
}

// kinds are the sandbox kinds, in the order --help and the errors list
// them; the first is --sandbox's default.
var kinds = []*kind{netnsKind, agentKind, vmKind}

// kindNamed is the kind called name, or nil.
func kindNamed(name string) *kind {
	for _, k := range kinds {
		if k.name == name {
			return k
		}
	}
	return nil
}

// kindList joins the kinds' names, or their abouts: "a, b or c".
func kindList(about bool) string {
	var s []string
	for _, k := range kinds {
		if about {
			s = append(s, k.about)
		} else {
			s = append(s, k.name)
		}
	}
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// sandboxFlagNames are the "Sandbox settings" help group: the flags every
// kind shares, then each kind's.
func sandboxFlagNames() []string {
	names := []string{"sandbox", "sandbox-prefix"}
	for _, k := range kinds {
		names = append(names, k.flagNames...)
	}
	return names
}

// chosenKind is the kind --sandbox names; validate has checked it.
func (o *Options) chosenKind() *kind { return kindNamed(o.Sandbox) }

// checkKind is validate's part for the kinds: --sandbox names one, and
// every kind's flags are good.
func (o *Options) checkKind() error {
	if kindNamed(o.Sandbox) == nil {
		return fmt.Errorf("--sandbox: %q is not %s", o.Sandbox, kindList(false))
	}
	for _, k := range kinds {
		if k.validate == nil {
			continue
		}
		if err := k.validate(o); err != nil {
			return err
		}
	}
	return nil
}
