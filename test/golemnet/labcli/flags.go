package labcli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/gvpn/gvpn/runtime/cmdflag"
)

// usageError is bad input: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// fail prints err as one line and returns the exit code for it: 2 for bad
// input, 1 otherwise.
func fail(stderr io.Writer, cmd string, err error) int {
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", " | ")
	fmt.Fprintf(stderr, "gvpn-lab %s: %s\n", cmd, msg)
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// cmdFlags is a subcommand's flag set and its help text.
type cmdFlags struct {
	*flag.FlagSet
	usage  string
	stdout io.Writer
}

func newFlagSet(name, usage string, stdout io.Writer) *cmdFlags {
	fs := flag.NewFlagSet("gvpn-lab "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // errors are one line; --help prints help()
	return &cmdFlags{FlagSet: fs, usage: usage, stdout: stdout}
}

// help prints the help text and the flags, as --flag, to stdout.
func (c *cmdFlags) help() {
	fmt.Fprint(c.stdout, strings.TrimSuffix(c.usage, "Flags:\n"))
	var names []string
	c.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	cmdflag.PrintFlags(c.stdout, c.FlagSet, []cmdflag.Group{{Title: "Flags", Names: names}})
}

// parseFlags parses args allowing flags after positional arguments, and
// returns the positional arguments, at most maxPos of them (-1: any). When
// the caller must stop, ok is false and code is the exit code (help: 0,
// bad flags: 2).
func parseFlags(fs *cmdFlags, args []string, stderr io.Writer, maxPos int) (pos []string, code int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.help()
				return nil, 0, false
			}
			msg := strings.TrimPrefix(cmdflag.Explain(fs.Name(), err), fs.Name()+": ")
			return nil, fail(stderr, strings.TrimPrefix(fs.Name(), "gvpn-lab "), usagef("%s", msg)), false
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if maxPos >= 0 && len(pos) > maxPos {
		return nil, fail(stderr, strings.TrimPrefix(fs.Name(), "gvpn-lab "), usagef("unexpected argument %q (see %s --help)", pos[maxPos], fs.Name())), false
	}
	return pos, 0, true
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// flagSet reports whether the flag called name was given.
func flagSet(fs *cmdFlags, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}
