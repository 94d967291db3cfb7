package cli

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/runtime/api"
	"github.com/gvpn/gvpn/runtime/cmdflag"
	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/runtime/network"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/runtime/volume"
)

// sandboxHelp is --sandbox's help text, as --help prints it.
func sandboxHelp(t *testing.T) string {
	t.Helper()
	_, out, _ := run("--help")
	_, rest, ok := strings.Cut(out, "\n  --sandbox KIND\n")
	if !ok {
		t.Fatalf("--help has no --sandbox line:\n%s", out)
	}
	help, _, _ := strings.Cut(rest, "\n  --")
	return help
}

// TestKindsAreTheRegistry: --sandbox's help, its validation and the
// "Sandbox settings" help group come from kinds and nothing else.
func TestKindsAreTheRegistry(t *testing.T) {
	help := sandboxHelp(t)
	var names []string
	for _, k := range kinds {
		names = append(names, k.name)
		if !strings.Contains(help, strings.ReplaceAll(k.about, "\n", "\n      ")) {
			t.Errorf("--sandbox help lacks kind %s (%q):\n%s", k.name, k.about, help)
		}
		if code, _, errOut := run("--sandbox", k.name, "offer-template"); code != 0 {
			t.Errorf("--sandbox %s: exit %d, %s", k.name, code, errOut)
		}
	}
	oneLine(t, `--sandbox: "nope" is not `+kindList(false), "--sandbox", "nope", "offer-template")
	if want := "netns, agent or vm"; kindList(false) != want {
		t.Errorf("kinds %q, want %q (the order --help and the errors have always listed)", kindList(false), want)
	}
	listed, _, _ := strings.Cut(help, "(default: ")
	if strings.Count(listed, " (") != len(kinds) {
		t.Errorf("--sandbox help names %d kinds, %d registered: %s", strings.Count(help, " ("), len(kinds), help)
	}
	// Every kind's flags are its own, defined once and listed in the
	// sandbox group.
	fs, _ := newFlagSet()
	group := map[string]bool{}
	for _, n := range sandboxFlagNames() {
		if group[n] {
			t.Errorf("flag --%s listed twice in Sandbox settings", n)
		}
		group[n] = true
	}
	for _, k := range kinds {
		own := flag.NewFlagSet(k.name, flag.ContinueOnError)
		k.flags(own, &Options{})
		own.VisitAll(func(f *flag.Flag) {
			if !group[f.Name] || fs.Lookup(f.Name) == nil {
				t.Errorf("kind %s: flag --%s not in the runtime's flags or not in its help group", k.name, f.Name)
			}
		})
		n := 0
		own.VisitAll(func(*flag.Flag) { n++ })
		if n != len(k.flagNames) {
			t.Errorf("kind %s defines %d flags and lists %d for the help", k.name, n, len(k.flagNames))
		}
		if k.open == nil || k.volumes == nil || k.flags == nil {
			t.Errorf("kind %s lacks open, volumes or flags", k.name)
		}
	}
}

// fakeKind is a sandbox kind that exists only in this test: registered
// in kinds, it must be selectable, validated, deployed and started through
// the same code paths as the real ones, without root.
type fakeKind struct {
	greeting string
	opened   chan openArgs
	box      *fakeBox
}

type fakeBox struct{ closed chan struct{} }

func (b *fakeBox) Start(sandbox.ProcessSpec) (sandbox.Process, error) {
	return nil, errors.New("fake kind: no processes")
}
func (b *fakeBox) Kill(uint64, syscall.Signal) error { return sandbox.ErrNoProcess }
func (b *fakeBox) Close() error {
	select {
	case <-b.closed:
	default:
		close(b.closed)
	}
	return nil
}
func (b *fakeBox) Attach(context.Context, netcfg.LinkConfig, map[string]string) (link.Link, error) {
	return nil, errors.New("fake kind: no network")
}

// register adds the fake kind to kinds until the test ends.
func (f *fakeKind) register(t *testing.T) {
	saved := kinds
	t.Cleanup(func() { kinds = saved })
	kinds = append(append([]*kind{}, kinds...), &kind{
		name:  "fake",
		about: "fake (this test's)",
		flags: func(fs *flag.FlagSet, o *Options) {
			fs.Func("fake-greeting", "fake sandbox: a `word` it checks", func(v string) error { f.greeting = v; return nil })
		},
		flagNames: []string{"fake-greeting"},
		validate: func(*Options) error {
			if f.greeting == "boo" {
				return errors.New("--fake-greeting: boo is rude")
			}
			return nil
		},
		image:   imageIgnored,
		volumes: func(_ *Options, vols volume.List) (volume.List, error) { return vols, nil },
		open: func(o *Options, a openArgs) (sandbox.Sandbox, network.Attacher, int) {
			f.opened <- a
			return f.box, f.box, 0
		},
	})
}

func TestFakeKindEndToEnd(t *testing.T) {
	f := &fakeKind{opened: make(chan openArgs, 1), box: &fakeBox{closed: make(chan struct{})}}
	f.register(t)

	help := sandboxHelp(t)
	if !strings.Contains(help, "or fake (this test's)") {
		t.Errorf("--sandbox help does not list the registered kind: %s", help)
	}
	if _, out, _ := run("--help"); !strings.Contains(out, "  --fake-greeting WORD\n") || strings.Contains(out, "Other flags") {
		t.Errorf("the kind's flag is not in the sandbox group:\n%s", out)
	}
	oneLine(t, "--fake-greeting: boo is rude", "--sandbox", "netns", "--fake-greeting", "boo", "offer-template")
	f.greeting = ""

	wd := t.TempDir()
	if code, out, errOut := run("-w", wd, "--sandbox", "fake", "--fake-greeting", "hi", "deploy", "--hostname", "node-f", "--"); code != 0 || errOut != "" || !strings.Contains(out, `"Ok"`) {
		t.Fatalf("deploy: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// start with the ExeUnit gone at once (stdin at EOF): the service
	// opens the kind's sandbox, serves, and closes it.
	code, out, errOut := run("-w", wd, "--sandbox", "fake", "--sandbox-prefix", "gvpnkindtest-", "start")
	if code != 0 || out != "" {
		t.Fatalf("start: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if f.greeting != "hi" {
		t.Errorf("the kind's flag: %q", f.greeting)
	}
	select {
	case a := <-f.opened:
		if a.hostname != "node-f" || len(a.vols) != 1 || a.vols[0].Path != "/golem/work" || a.log == nil || a.logOut == nil {
			t.Errorf("open got hostname %q, volumes %v: not what deploy recorded", a.hostname, a.vols)
		}
	default:
		t.Fatal("start never opened the fake kind's sandbox")
	}
	select {
	case <-f.box.closed:
	default:
		t.Error("the fake sandbox was not closed at teardown")
	}
	logs, _ := os.ReadFile(api.LogPath(wd))
	if !strings.Contains(string(logs), "teardown complete") {
		t.Errorf("log:\n%s", logs)
	}
	if _, err := os.Stat(filepath.Join(wd, deploymentFile)); err != nil {
		t.Error(err)
	}
	if rest := cmdflag.Ungrouped(func() *flag.FlagSet { fs, _ := newFlagSet(); return fs.FlagSet }(), helpGroups()); len(rest) > 0 {
		t.Errorf("flags in no help group: %v", rest)
	}
}
