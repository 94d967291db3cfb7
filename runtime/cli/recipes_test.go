package cli

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// exeUnitTaskPackage is the demand property yagna's ExeUnit reads the task
// package from, for every runtime (exe-unit's agreement parsing:
// /demand/properties/golem/srv/comp/task_package); it downloads the image it
// names ("hash:sha3:<hash>:<url>") and passes it as --task-package.
const exeUnitTaskPackage = "golem.srv.comp.task_package"

// sdkNames are the SDK constants the recipes may use for property keys, with
// their values in the SDKs (yapapi.props.inf).
var sdkNames = map[string]string{
	"inf.INF_RUNTIME_NAME": "golem.runtime.name",
}

// offerProps are the properties a provider's offer for gvpn carries that a
// demand can select it by: golem.runtime.name is the descriptor's name
// (ya-provider sets it), golem.runtime.capabilities what offer-template
// prints.
func offerProps(t *testing.T) map[string]any {
	t.Helper()
	descs := readDescriptor(t)
	code, out, errOut := run("offer-template")
	if code != 0 {
		t.Fatalf("offer-template: exit %d: %s", code, errOut)
	}
	var tmpl struct {
		Properties map[string]any `json:"properties"`
	}
	if err := json.Unmarshal([]byte(out), &tmpl); err != nil {
		t.Fatalf("offer-template: %v", err)
	}
	props := map[string]any{"golem.runtime.name": descs[0].Name}
	for k, v := range tmpl.Properties {
		props[k] = v
	}
	return props
}

func readDescriptor(t *testing.T) []exeUnitDesc {
	t.Helper()
	b, err := os.ReadFile("../../docs/ya-runtime-gvpn.json")
	if err != nil {
		t.Fatal(err)
	}
	var descs []exeUnitDesc
	if err := json.Unmarshal(b, &descs); err != nil || len(descs) != 1 {
		t.Fatalf("docs/ya-runtime-gvpn.json: %v (%d descriptors)", err, len(descs))
	}
	return descs
}

// matches says whether the offer satisfies one "(key=value)" constraint the
// way the market does: equal to a plain property, contained in a list.
func matches(offer map[string]any, key, value string) bool {
	switch v := offer[key].(type) {
	case string:
		return v == value
	case []any:
		return slices.ContainsFunc(v, func(e any) bool { s, ok := e.(string); return ok && s == value })
	}
	return false
}

// one returns the single submatch of re in src, or fails naming what.
func one(t *testing.T, file, what string, re *regexp.Regexp, src string) string {
	t.Helper()
	m := re.FindStringSubmatch(src)
	if m == nil {
		t.Fatalf("%s: no %s (want a match for %s)", file, what, re)
	}
	return m[1]
}

// stringList parses a Python or JavaScript list of string literals.
func stringList(t *testing.T, file, lit string) []string {
	t.Helper()
	var out []string
	if err := json.Unmarshal([]byte(lit), &out); err != nil {
		t.Fatalf("%s: %s is not a list of strings: %v", file, lit, err)
	}
	return out
}

// TestRequestorRecipes checks that the requestor recipes under
// docs/requestor/ select gvpn: the constraints each SDK builds from them
// match what offer-template and the descriptor advertise, and the image goes
// in the property the ExeUnit reads. yapapi serialises a constraint field as
// (key=value), one per element of a list; golem-js adds (golem.runtime.name=
// <runtime.name>) and one (golem.runtime.capabilities=<cap>) per capability,
// and sends imageHash/imageUrl as golem.srv.comp.task_package.
func TestRequestorRecipes(t *testing.T) {
	offer := offerProps(t)
	check := func(file, sdk string, constraints [][2]string) {
		t.Helper()
		for _, c := range constraints {
			if !matches(offer, c[0], c[1]) {
				t.Errorf("%s: %s demands (%s=%s), which gvpn's offer %v does not satisfy", file, sdk, c[0], c[1], offer)
			}
		}
		if len(constraints) < 2 {
			t.Errorf("%s: %d constraints; a demand for gvpn needs its runtime name and the vpn capability", file, len(constraints))
		}
	}

	const py = "../../docs/requestor/gvpn_http.py"
	b, err := os.ReadFile(py)
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	runtime := one(t, py, "RUNTIME_NAME", regexp.MustCompile(`(?m)^RUNTIME_NAME = "([^"]+)"$`), src)
	caps := stringList(t, py, one(t, py, "CAPABILITIES", regexp.MustCompile(`(?m)^CAPABILITIES = (\[.*\])$`), src))
	pkg := one(t, py, "TASK_PACKAGE", regexp.MustCompile(`(?m)^TASK_PACKAGE = "([^"]+)"$`), src)
	runtimeKey := one(t, py, "the runtime constraint", regexp.MustCompile(`constraint\(([\w.]+), default=RUNTIME_NAME\)`), src)
	capsKey := one(t, py, "the capabilities constraint", regexp.MustCompile(`constraint\(\s*"([^"]+)", default_factory=lambda: list\(CAPABILITIES\)`), src)
	if k, ok := sdkNames[runtimeKey]; ok {
		runtimeKey = k
	}
	if !strings.Contains(src, "prop(TASK_PACKAGE)") {
		t.Errorf("%s: the payload does not set TASK_PACKAGE as a property", py)
	}
	if pkg != exeUnitTaskPackage {
		t.Errorf("%s: the image goes in %q; the ExeUnit reads %q", py, pkg, exeUnitTaskPackage)
	}
	pyConstraints := [][2]string{{runtimeKey, runtime}}
	for _, c := range caps {
		pyConstraints = append(pyConstraints, [2]string{capsKey, c})
	}
	check(py, "yapapi", pyConstraints)

	const js = "../../docs/requestor/gvpn-http.mjs"
	if b, err = os.ReadFile(js); err != nil {
		t.Fatal(err)
	}
	src = string(b)
	jsRuntime := one(t, js, "RUNTIME", regexp.MustCompile(`(?m)^const RUNTIME = \{ name: "([^"]+)" \};$`), src)
	jsCaps := stringList(t, js, one(t, js, "CAPABILITIES", regexp.MustCompile(`(?m)^const CAPABILITIES = (\[.*\]);$`), src))
	for _, want := range []string{"runtime: RUNTIME,", "capabilities: CAPABILITIES,", "imageHash,"} {
		if !strings.Contains(src, want) {
			t.Errorf("%s: the workload lacks %q", js, want)
		}
	}
	jsConstraints := [][2]string{{"golem.runtime.name", jsRuntime}}
	for _, c := range jsCaps {
		jsConstraints = append(jsConstraints, [2]string{"golem.runtime.capabilities", c})
	}
	check(js, "golem-js", jsConstraints)
}

// TestRequestorRecipesParse compiles the recipes and every Python and
// JavaScript block of the requestor and provider docs with the real
// toolchains, where they are installed.
func TestRequestorRecipesParse(t *testing.T) {
	pyFiles, _ := filepath.Glob("../../docs/requestor/*.py")
	jsFiles, _ := filepath.Glob("../../docs/requestor/*.mjs")
	if len(pyFiles) == 0 || len(jsFiles) == 0 {
		t.Fatalf("no recipes in docs/requestor (python %v, javascript %v)", pyFiles, jsFiles)
	}
	tmp := t.TempDir()
	for _, doc := range []string{"../../docs/requestor.md", "../../docs/provider.md", "../../README.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for i, block := range fencedBlocks(string(b)) {
			var ext string
			switch block.lang {
			case "python":
				ext = ".py"
			case "js", "javascript":
				ext = ".mjs"
			default:
				continue
			}
			p := filepath.Join(tmp, strings.TrimSuffix(filepath.Base(doc), ".md")+"-block"+string(rune('a'+i))+ext)
			if err := os.WriteFile(p, []byte(block.text), 0o644); err != nil {
				t.Fatal(err)
			}
			if ext == ".py" {
				pyFiles = append(pyFiles, p)
			} else {
				jsFiles = append(jsFiles, p)
			}
		}
	}
	for _, tool := range []struct {
		bin   string
		args  []string
		files []string
	}{
		{"python3", []string{"-m", "py_compile"}, pyFiles},
		{"node", []string{"--check"}, jsFiles},
	} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			t.Logf("%s is not installed: %v not checked", tool.bin, tool.files)
			continue
		}
		for _, f := range tool.files {
			cmd := exec.Command(tool.bin, append(tool.args, f)...)
			cmd.Env = append(os.Environ(), "PYTHONPYCACHEPREFIX="+tmp) // no __pycache__ in docs/
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s %s: %v\n%s", tool.bin, f, err, out)
			}
		}
	}
}

type fenced struct{ lang, text string }

// fencedBlocks returns the ``` blocks of a Markdown text with their info
// strings.
func fencedBlocks(md string) []fenced {
	var out []fenced
	var cur *fenced
	for _, line := range strings.Split(md, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			cur = &fenced{lang: strings.TrimPrefix(trimmed, "```")}
		case cur != nil && trimmed == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	return out
}

// TestProviderPreset checks docs/gvpn-preset.sh, the preset a provider adds
// for gvpn: named after the runtime and using it (what golemsp counts as
// configured, so that it does not reprice every runtime), and pricing
// exactly the descriptor's priced counters by names ya-provider resolves
// (a counter's name or property, or "Init price").
func TestProviderPreset(t *testing.T) {
	const script = "../../docs/gvpn-preset.sh"
	b, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	if sh, err := exec.LookPath("sh"); err == nil {
		if out, err := exec.Command(sh, "-n", script).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v %s", script, err, out)
		}
	}
	src := strings.ReplaceAll(string(b), "\\\n", " ")
	create := one(t, script, "ya-provider preset create", regexp.MustCompile(`(?m)^ya-provider preset create (.*)$`), src)
	d := readDescriptor(t)[0]
	if name := one(t, script, "--preset-name", regexp.MustCompile(`--preset-name (\S+)`), create); name != d.Name {
		t.Errorf("preset name %q: golemsp looks for a preset named after the runtime, %q", name, d.Name)
	}
	if eu := one(t, script, "--exe-unit", regexp.MustCompile(`--exe-unit (\S+)`), create); eu != d.Name {
		t.Errorf("--exe-unit %q, want the descriptor's name %q", eu, d.Name)
	}
	if !strings.Contains(src, "ya-provider preset activate "+d.Name) {
		t.Errorf("%s does not activate the preset", script)
	}
	priced := map[string]bool{}
	for _, m := range regexp.MustCompile(`--price "?([^="]+)=`).FindAllStringSubmatch(create, -1) {
		name := m[1]
		if name == "Init price" || strings.EqualFold(name, "initial") {
			continue
		}
		found := false
		for prop, c := range d.Config.Counters {
			if prop == name || (c.Name != nil && strings.EqualFold(*c.Name, name)) {
				priced[prop], found = true, true
			}
		}
		if !found {
			t.Errorf("--price %s: the descriptor has no such counter, ya-provider refuses it", name)
		}
	}
	for prop, c := range d.Config.Counters {
		if c.Price != nil && *c.Price && !priced[prop] {
			t.Errorf("the descriptor prices counter %s, the preset sets no price for it", prop)
		}
	}
}
