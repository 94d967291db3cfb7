package cmdflag

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		pos      []string
		hostname string
		verbose  bool
	}{
		{[]string{"deploy", "--"}, []string{"deploy"}, "", false},
		{[]string{"--hostname", "h", "deploy", "--"}, []string{"deploy"}, "h", false},
		{[]string{"start", "--hostname", "h"}, []string{"start"}, "h", false},
		{[]string{"start", "a", "--verbose", "b"}, []string{"start", "a", "b"}, "", true},
		{[]string{"run", "--", "--hostname", "x"}, []string{"run", "--hostname", "x"}, "", false},
		{[]string{"--hostname", "--", "start"}, []string{"start"}, "--", false},
		{[]string{"--verbose", "--", "start", "-x"}, []string{"start", "-x"}, "", true},
	} {
		fs := New("prog")
		host := fs.String("hostname", "", "")
		verbose := fs.Bool("verbose", false, "")
		pos, err := ParseInterspersed(fs, tc.args)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if !slices.Equal(pos, tc.pos) || *host != tc.hostname || *verbose != tc.verbose {
			t.Errorf("%q: positional %q hostname %q verbose %v; want %q %q %v", tc.args, pos, *host, *verbose, tc.pos, tc.hostname, tc.verbose)
		}
	}
	fs := New("prog")
	fs.String("hostname", "", "")
	if _, err := ParseInterspersed(fs, []string{"start", "--nope"}); err == nil ||
		Explain("prog", err) != "prog: unknown flag --nope; see prog --help" {
		t.Errorf("unknown flag after the subcommand: %v", err)
	}
}

func TestExplain(t *testing.T) {
	fs := New("prog")
	fs.Int("mtu", 1220, "")
	fs.String("name", "", "")
	for args, want := range map[string]string{
		"--mtu=abc": "prog: invalid value \"abc\" for flag --mtu: not a number; see prog --help",
		"--name":    "prog: flag --name needs a value; see prog --help",
		"-x":        "prog: unknown flag --x; see prog --help",
	} {
		err := fs.Parse([]string{args})
		if got := Explain("prog", err); got != want {
			t.Errorf("%s: %q, want %q", args, got, want)
		}
	}
}

func TestPrintFlags(t *testing.T) {
	fs := New("prog")
	fs.Int("mtu", 1220, "the `bytes` of a frame")
	fs.Bool("debug-x", false, "debugging")
	fs.Bool("strict", false, "fail `test` too") // quoted words name no value of a boolean
	fs.String("stray", "", "not in a group")
	var b bytes.Buffer
	PrintFlags(&b, fs, []Group{{"Operator settings", []string{"mtu"}}, {"Debugging", []string{"debug-x"}}})
	out := b.String()
	for _, want := range []string{"Operator settings:\n  --mtu BYTES\n      the bytes of a frame\n      (default: 1220)\n",
		"Debugging:\n  --debug-x\n", "Other flags:\n", "  --stray STRING\n", "  --strict\n      fail test too\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\n  -mtu") {
		t.Errorf("a flag printed with one dash:\n%s", out)
	}
}
