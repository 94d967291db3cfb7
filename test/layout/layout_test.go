// Package layout checks that the module's imports keep the layout that
// docs/architecture.md describes: dependencies point one way, from the
// binaries down to the data-plane leaves, and each contract has one home
// that its users import instead of its implementations.
//
// The test reads `go list -json ./...`, so it needs the go tool and the
// module's source; it skips (saying so) where they are missing, as in the
// Docker test image, which carries test binaries only.
package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the package graph in docs/architecture.md")

const module = "github.com/gvpn/gvpn"

// pkg is one package of the module as go list reports it, with paths
// relative to the module ("runtime/link"); imports from outside the module
// are left out.
type pkg struct {
	path        string
	imports     []string // of the package's own files
	testImports []string // of its _test.go files (both in-package and external)
}

// rule restricts what the packages matching pkgs may import from the module.
// Patterns are package paths relative to the module; "x/..." matches x and
// everything below it.
type rule struct {
	pkgs   []string
	except []string // packages among pkgs the rule does not apply to
	// allow, when not nil, is the complete list of module packages the
	// package may import; deny lists packages it must not import.
	allow, deny []string
	// tests applies the rule to the _test.go files too; testAllow adds
	// packages only those may import (test kits).
	tests     bool
	testAllow []string
	// general marks a rule for the whole module (or a whole tree); every
	// package must also have a rule that is not general, its own place in
	// the layer table (TestEveryPackageHasARule).
	general bool
	why     string
}

// rules is the layout. Read from the bottom of the graph up.
var rules = []rule{
	{
		pkgs: []string{"runtime/link", "runtime/frame"}, allow: []string{},
		tests: true, testAllow: []string{"runtime/link/linktest", "test/privtest"},
		why: "the frame link and frame parsing are data-plane leaves: they sit below everything, as wireguard-go's tun sits below device",
	},
	{
		pkgs: []string{"runtime/pump"}, allow: []string{"runtime/link", "runtime/frame"},
		tests: true, testAllow: []string{"runtime/link/linktest", "test/privtest"},
		why: "the pump is a data-plane leaf: it joins two links and knows nothing above them",
	},
	{
		pkgs: []string{"runtime/offload"}, allow: []string{"runtime/link", "runtime/frame"},
		tests: true, testAllow: []string{"runtime/link/linktest", "test/privtest", "tap", "netcfg", "netcfg/nsthread", "runtime/pump"},
		why: "segmentation and coalescing are a data-plane leaf beside the pump: they turn a virtio-net-header link into a plain one, reading headers with frame's one parser; only their test joins real TAPs with the pump",
	},
	{
		pkgs: []string{"runtime/cmdflag"}, allow: []string{}, tests: true,
		why: "the flag helpers every binary's command line uses depend on nothing",
	},
	{
		pkgs: []string{"runtime/owner"}, allow: []string{}, tests: true,
		why: "who owns a workdir or a sandbox's directory is asked by every sandbox and the CLI, so it depends on nothing",
	},
	{
		pkgs: []string{"runtime/volume"}, allow: []string{}, tests: true,
		why: "the activity's volume list is parsed by the CLI and mounted by the netns sandbox, so it depends on neither",
	},
	{
		pkgs: []string{"runtime/api"}, allow: []string{}, tests: true,
		why: "the wire contract with the ExeUnit (ya-runtime-api, gvpn.vpn) depends on nothing, so the tests and the lab can speak it",
	},
	{
		pkgs: []string{"runtime/endpoint"}, allow: []string{"runtime/api", "runtime/link"},
		why: "the ExeUnit's data endpoint is the runtime's end of the API's endpoint forms, made of socket links",
	},
	{
		pkgs: []string{"runtime/cli"}, deny: []string{"vsock/agent/..."},
		why: "the runtime's CLI wires the runtime's packages together; gvpn-agent's code is reached over the bridge only",
	},
	{
		pkgs: []string{"runtime/sandbox/agent/vm/mkimage"}, allow: []string{},
		why: "the VM image builder is a program of its own (make vm-image), run at build time, not by the runtime",
	},
	{
		pkgs: []string{"cmd/gvpn-runtime"}, allow: []string{"runtime/cli", "runtime/sandbox/netns"},
		why: "gvpn-runtime's main only starts the CLI (and the netns sandbox's shim, which must run before it)",
	},
	{
		pkgs: []string{"cmd/gvpn-agent"}, allow: []string{"vsock/agent"},
		why: "gvpn-agent's main only starts the agent",
	},
	{
		pkgs: []string{"cmd/gvpn-lab"}, allow: []string{"test/golemnet/labcli"},
		why: "gvpn-lab's main only starts the lab's CLI",
	},
	{
		pkgs: []string{"runtime/logs"}, allow: []string{}, tests: true,
		why: "the binaries' one logging set-up is used by all three mains' packages, so it depends on nothing",
	},
	{
		pkgs: []string{"runtime/proc"}, allow: []string{}, tests: true,
		why: "how a payload program is found and how its end is reported is shared by every sandbox and gvpn-agent, so it depends on nothing",
	},
	{
		pkgs: []string{"runtime/loopdev"}, allow: []string{}, tests: true, testAllow: []string{"test/privtest"},
		why: "attaching an image file to a loop device is a leaf: the netns sandbox's init uses it, it knows nothing of sandboxes",
	},
	{
		pkgs: []string{"runtime/limits"}, allow: []string{"runtime/proc"}, tests: true,
		why: "the payload's cgroup and disk are used by every sandbox kind, so they depend on nothing of the module but the process helpers (its capabilities)",
	},
	{
		pkgs: []string{"runtime/link/linktest"}, allow: []string{"runtime/link"},
		why: "the link test kit is imported by every data-plane test, so it may depend on the link contract only",
	},
	{
		pkgs: []string{"tap/..."}, deny: []string{"runtime/...", "vsock/..."}, tests: true,
		why: "tap is a library for runtime authors: its Device satisfies the frame link by its method set and net.ErrClosed, not by importing the runtime",
	},
	{
		pkgs: []string{"netcfg/ifname"}, allow: []string{}, tests: true,
		why: "the interface-name rule is shared by tap and netcfg, so it depends on neither",
	},
	{
		pkgs: []string{"netcfg/..."}, allow: []string{"netcfg/..."},
		why: "netcfg (addressing, hosts, namespace handles) is a library below the runtime, the agent and tap",
	},
	{
		pkgs: []string{"runtime/image/passwd"}, allow: []string{}, tests: true,
		why: "an image's user is resolved by the runtime and by gvpn-agent in its guest with the same rules, so that code depends on nothing",
	},
	{
		pkgs: []string{"runtime/image"}, allow: []string{"runtime/image/passwd"}, tests: true,
		why: "task packages are a library: the CLI opens them, sandboxes and tools may read them, and they know nothing of either",
	},
	{
		pkgs: []string{"runtime/sandbox"}, allow: []string{}, tests: true,
		why: "runtime/sandbox is the neutral home of the sandbox contract: every implementation imports it, it imports none of them",
	},
	{
		pkgs: []string{"runtime/sandbox/..."}, except: []string{"runtime/sandbox"},
		deny: []string{"runtime/service", "runtime/network", "runtime/cli", "runtime/endpoint", "test/..."},
		why:  "a sandbox implements the contract in runtime/sandbox and knows nothing of the service or the network manager that use it",
	},
	{
		pkgs: []string{"runtime/service"}, allow: []string{"runtime/api", "runtime/sandbox"}, tests: true,
		why: "the service loop knows the API and the sandbox contract, never an implementation: a new sandbox is added without touching it",
	},
	{
		pkgs: []string{"runtime/network"}, deny: []string{"runtime/sandbox/...", "runtime/service", "runtime/cli", "tap/...", "vsock/..."},
		why: "the network manager gets the payload's side of the VPN through its Attacher contract; the sandboxes provide it",
	},
	{
		pkgs: []string{"vsock/..."}, deny: []string{"runtime/api", "runtime/cli", "runtime/endpoint", "runtime/network", "runtime/sandbox/...", "runtime/service"},
		why: "the bridge and the agent are built on the data-plane leaves and the libraries only; the runtime imports them, not the other way",
	},
	{
		pkgs: []string{"runtime/..."}, deny: []string{"vsock/agent/..."}, general: true,
		why: "vsock/agent is gvpn-agent's own code, run inside the payload; the runtime talks to it over the bridge only",
	},
	{
		pkgs: []string{"test/..."}, deny: []string{"runtime/network", "runtime/service", "runtime/cli"}, tests: true,
		why: "the tests and the lab drive gvpn-runtime through its binary and the wire contract (runtime/api), not through the runtime's internal types",
	},
	{
		pkgs: []string{"..."}, except: []string{"test/...", "cmd/..."}, deny: []string{"test/..."}, general: true,
		why: "test code never ships inside the libraries (their _test.go files may use the test kits)",
	},
	{
		pkgs: []string{"..."}, except: []string{"cmd/..."}, deny: []string{"runtime/cli", "cmd/..."}, tests: true, general: true,
		why: "the CLI and the mains are the top of the graph: only cmd/ imports runtime/cli, nothing imports cmd/",
	},
}

// match reports whether path matches one of patterns.
func match(path string, patterns []string) bool {
	for _, p := range patterns {
		switch {
		case p == "...":
			return true
		case strings.HasSuffix(p, "/..."):
			base := strings.TrimSuffix(p, "/...")
			if path == base || strings.HasPrefix(path, base+"/") {
				return true
			}
		case path == p:
			return true
		}
	}
	return false
}

// violations checks every package against every rule and returns one line
// per broken rule and import.
func violations(pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
		for _, r := range rules {
			if !match(p.path, r.pkgs) || match(p.path, r.except) {
				continue
			}
			check := func(imports []string, kind string, extra []string) {
				for _, imp := range imports {
					if imp == p.path {
						continue
					}
					bad := match(imp, r.deny)
					if r.allow != nil && !match(imp, r.allow) && !match(imp, extra) {
						bad = true
					}
					if bad {
						out = append(out, fmt.Sprintf("%s (%s) imports %s: %s", p.path, kind, imp, r.why))
					}
				}
			}
			check(p.imports, "code", nil)
			if r.tests {
				check(p.testImports, "tests", r.testAllow)
			}
		}
		// Sandbox implementations are siblings: none builds on another.
		if strings.HasPrefix(p.path, "runtime/sandbox/") {
			own := strings.SplitN(strings.TrimPrefix(p.path, "runtime/sandbox/"), "/", 2)[0]
			for _, imp := range p.imports {
				if strings.HasPrefix(imp, "runtime/sandbox/") &&
					strings.SplitN(strings.TrimPrefix(imp, "runtime/sandbox/"), "/", 2)[0] != own {
					out = append(out, fmt.Sprintf("%s (code) imports %s: sandbox implementations are siblings; what they share belongs in a package below them", p.path, imp))
				}
			}
		}
	}
	return out
}

// load runs go list in the module root and returns the module's packages,
// sorted by path, and the module root.
func load(t *testing.T) ([]pkg, string) {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the layout check needs the go tool to list the packages; none in PATH (a test image without the toolchain)")
	}
	gomod, err := exec.Command(gobin, "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == "/dev/null" {
		t.Skip("the layout check needs the module's source (go env GOMOD found no go.mod)")
	}
	cmd := exec.Command(gobin, "list", "-json=ImportPath,Imports,TestImports,XTestImports", "./...")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	outb, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(outb))
	for {
		var lp struct {
			ImportPath                         string
			Imports, TestImports, XTestImports []string
		}
		if err := dec.Decode(&lp); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		p := pkg{path: rel(lp.ImportPath), imports: own(lp.Imports)}
		p.testImports = own(append(lp.TestImports, lp.XTestImports...))
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	slices.SortFunc(pkgs, func(a, b pkg) int { return strings.Compare(a.path, b.path) })
	return pkgs, cmd.Dir
}

func rel(path string) string {
	if path == module {
		return "."
	}
	return strings.TrimPrefix(path, module+"/")
}

// own keeps the module's packages of imports, relative, sorted, once each.
func own(imports []string) []string {
	var out []string
	for _, imp := range imports {
		if imp == module || strings.HasPrefix(imp, module+"/") {
			out = append(out, rel(imp))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestImportRules(t *testing.T) {
	pkgs, _ := load(t)
	for _, v := range violations(pkgs) {
		t.Error(v)
	}
}

// unruled returns the packages that no rule but a general one covers.
func unruled(pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
		if !slices.ContainsFunc(rules, func(r rule) bool {
			return !r.general && match(p.path, r.pkgs) && !match(p.path, r.except)
		}) {
			out = append(out, p.path)
		}
	}
	return out
}

// TestEveryPackageHasARule: a new package gets its own rule (and its row in
// the layer table) before it can be merged; the general rules alone do not
// say where it stands.
func TestEveryPackageHasARule(t *testing.T) {
	pkgs, _ := load(t)
	for _, p := range unruled(pkgs) {
		t.Errorf("package %s has no rule in test/layout: add one (and its place in docs/architecture.md's layer table)", p)
	}
	if got := unruled([]pkg{{path: "runtime/newthing"}, {path: "runtime/link"}}); !slices.Equal(got, []string{"runtime/newthing"}) {
		t.Errorf("a package without a rule of its own is not reported: %v", got)
	}
}

// The package graph in docs/architecture.md sits between these markers.
const (
	graphBegin = "<!-- package graph: generated by go test ./test/layout -update; do not edit -->"
	graphEnd   = "<!-- end of package graph -->"
)

// graph renders the module's packages and what each imports from the
// module (its own files, not its tests), one package a line.
func graph(pkgs []pkg) string {
	var b strings.Builder
	b.WriteString("```\n")
	for _, p := range pkgs {
		if len(p.imports) == 0 {
			fmt.Fprintf(&b, "%s\n", p.path)
			continue
		}
		fmt.Fprintf(&b, "%s → %s\n", p.path, strings.Join(p.imports, ", "))
	}
	b.WriteString("```\n")
	return b.String()
}

// TestArchitectureGraph keeps the package graph in docs/architecture.md
// true: it must be what go list says now.
func TestArchitectureGraph(t *testing.T) {
	pkgs, root := load(t)
	path := filepath.Join(root, "docs", "architecture.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	i, j := strings.Index(text, graphBegin), strings.Index(text, graphEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the package graph markers %q … %q", path, graphBegin, graphEnd)
	}
	want := graph(pkgs)
	got := text[i+len(graphBegin)+1 : j]
	if got == want {
		return
	}
	if *update {
		text = text[:i+len(graphBegin)+1] + want + text[j:]
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the package graph in %s", path)
		return
	}
	t.Errorf("the package graph in %s is stale; run `go test ./test/layout -update` and review the change.\nit says:\n%s\ngo list says:\n%s", path, got, want)
}

// TestRulesCatchBadImports makes sure the rules can fail: each import below
// breaks the layout and must be reported.
func TestRulesCatchBadImports(t *testing.T) {
	for _, bad := range []pkg{
		{path: "tap", imports: []string{"runtime/link"}},
		{path: "tap", testImports: []string{"runtime/link"}},
		{path: "runtime/link", imports: []string{"netcfg"}},
		{path: "runtime/pump", imports: []string{"runtime/api"}},
		{path: "runtime/sandbox", imports: []string{"runtime/sandbox/netns"}},
		{path: "runtime/sandbox/netns", imports: []string{"runtime/service"}},
		{path: "runtime/sandbox/vm", imports: []string{"runtime/sandbox/agent"}},
		{path: "runtime/service", imports: []string{"runtime/sandbox/netns"}},
		{path: "runtime/service", imports: []string{"runtime/network"}},
		{path: "runtime/network", imports: []string{"tap"}},
		{path: "test/golemnet", imports: []string{"runtime/network"}},
		{path: "test/bench", testImports: []string{"runtime/network"}},
		{path: "vsock", imports: []string{"runtime/api"}},
		{path: "runtime/cli", imports: []string{"vsock/agent"}},
		{path: "netcfg", imports: []string{"tap"}},
		{path: "runtime/network", imports: []string{"test/privtest"}},
		{path: "test/lab", imports: []string{"runtime/cli"}},
		{path: "runtime/cli", imports: []string{"cmd/gvpn-runtime"}},
	} {
		if v := violations([]pkg{bad}); len(v) == 0 {
			t.Errorf("%s importing %v (tests: %v) passes the rules; it must not", bad.path, bad.imports, bad.testImports)
		}
	}
	good := []pkg{
		{path: "runtime/sandbox/vm", imports: []string{"runtime/sandbox", "runtime/link", "netcfg", "vsock"}},
		{path: "runtime/network", testImports: []string{"runtime/sandbox/netns", "test/privtest"}},
		{path: "tap", testImports: []string{"test/privtest", "netcfg/nsthread"}},
		{path: "cmd/gvpn-runtime", imports: []string{"runtime/cli", "runtime/sandbox/netns"}},
	}
	for _, p := range good {
		if v := violations([]pkg{p}); len(v) > 0 {
			t.Errorf("a valid import is reported: %v", v)
		}
	}
}
