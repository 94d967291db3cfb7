// Package cmdflag gives gvpn's binaries one command-line behaviour on top
// of the standard flag package: --help on stdout, flags printed as --flag
// and grouped by who sets them, flag errors as one line with a hint
// instead of the whole help, and flags accepted after a subcommand rather
// than silently taken for arguments.
package cmdflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Group is a titled set of flags in the help text, in the order given.
type Group struct {
	Title string
	Names []string
}

// New returns a FlagSet that prints nothing by itself: errors come back
// from Parse, for Explain to turn into one line.
func New(prog string) *flag.FlagSet {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// PrintFlags writes the flags of fs, group by group (one-letter aliases
// with one dash), as
//
//	--name VALUE
//	    usage (default: D)
//
// Flags that no group names are listed under "Other flags", so that help
// never hides one (Ungrouped finds them for tests).
func PrintFlags(w io.Writer, fs *flag.FlagSet, groups []Group) {
	for _, g := range groups {
		fmt.Fprintf(w, "\n%s:\n", g.Title)
		for _, name := range g.Names {
			if f := fs.Lookup(name); f != nil {
				printFlag(w, f)
			}
		}
	}
	if rest := Ungrouped(fs, groups); len(rest) > 0 {
		fmt.Fprintf(w, "\nOther flags:\n")
		for _, name := range rest {
			printFlag(w, fs.Lookup(name))
		}
	}
}

// Ungrouped returns the flags of fs that no group lists.
func Ungrouped(fs *flag.FlagSet, groups []Group) []string {
	listed := map[string]bool{}
	for _, g := range groups {
		for _, n := range g.Names {
			listed[n] = true
		}
	}
	var rest []string
	fs.VisitAll(func(f *flag.Flag) {
		if !listed[f.Name] {
			rest = append(rest, f.Name)
		}
	})
	return rest
}

func printFlag(w io.Writer, f *flag.Flag) {
	value, usage := flag.UnquoteUsage(f)
	line := "  --" + f.Name
	if len(f.Name) == 1 {
		line = "  -" + f.Name // a short alias, -w
	}
	// A boolean flag takes no value, whatever its usage quotes.
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); value != "" && !(ok && b.IsBoolFlag()) {
		line += " " + strings.ToUpper(value)
	}
	fmt.Fprintln(w, line)
	for _, l := range strings.Split(usage, "\n") {
		fmt.Fprintln(w, "      "+l)
	}
	if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" {
		fmt.Fprintf(w, "      (default: %s)\n", f.DefValue)
	}
}

// Explain turns an error of fs.Parse into one line for stderr, naming
// flags with two dashes and pointing at --help.
func Explain(prog string, err error) string {
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "flag provided but not defined: "):
		name := strings.TrimLeft(strings.TrimPrefix(msg, "flag provided but not defined: "), "-")
		msg = "unknown flag --" + name
	case strings.HasPrefix(msg, "flag needs an argument: "):
		name := strings.TrimLeft(strings.TrimPrefix(msg, "flag needs an argument: "), "-")
		msg = "flag --" + name + " needs a value"
	default:
		// "invalid value "x" for flag -mtu: parse error" and the like.
		msg = strings.Replace(msg, " flag -", " flag --", 1)
		msg = strings.Replace(msg, ": parse error", ": not a number", 1)
	}
	return fmt.Sprintf("%s: %s; see %s --help", prog, msg, prog)
}

// ParseInterspersed parses args with fs, letting flags come before, between
// and after positional arguments, and returns the positional ones in order.
// Everything after a "--" is positional. A flag after the subcommand
// therefore either sets its value or is an error; it is never mistaken for
// an argument.
func ParseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		// flag.Parse stops at the first non-flag and consumes a "--"; tell
		// the two apart by what is left.
		before := len(args)
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := args[:before-len(rest)]
		if len(consumed) > 0 && consumed[len(consumed)-1] == "--" && !isValueOfLast(fs, consumed) {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// isValueOfLast reports whether the final "--" of consumed was the value
// of the flag before it (--hostname --), not the end of the flags.
func isValueOfLast(fs *flag.FlagSet, consumed []string) bool {
	if len(consumed) < 2 {
		return false
	}
	prev := strings.TrimLeft(consumed[len(consumed)-2], "-")
	if strings.Contains(prev, "=") || !strings.HasPrefix(consumed[len(consumed)-2], "-") {
		return false
	}
	f := fs.Lookup(prev)
	if f == nil {
		return false
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return false
	}
	return true
}

// ErrHelp is flag.ErrHelp, for callers that test for it.
var ErrHelp = flag.ErrHelp

// IsHelp reports whether err asks for the help text.
func IsHelp(err error) bool { return errors.Is(err, flag.ErrHelp) }
