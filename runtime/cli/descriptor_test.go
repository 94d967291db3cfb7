package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// exeUnitDesc is the field set yagna's provider agent reads from a runtime
// descriptor (one element of the JSON array in its plugins directory).
// Required there: name, version (semver), supervisor-path; a counter needs
// name, description and price.
type exeUnitDesc struct {
	Name           string         `json:"name"`
	Version        string         `json:"version"`
	Description    string         `json:"description"`
	SupervisorPath string         `json:"supervisor-path"`
	RuntimePath    string         `json:"runtime-path"`
	ExtraArgs      []string       `json:"extra-args"`
	Properties     map[string]any `json:"properties"`
	Config         *struct {
		Counters map[string]struct {
			Name        *string `json:"name"`
			Description *string `json:"description"`
			Price       *bool   `json:"price"`
		} `json:"counters"`
	} `json:"config"`
}

// TestShippedDescriptor parses docs/ya-runtime-gvpn.json as the provider
// does and checks what makes golemsp and the ExeUnit accept it: the cpu and
// duration counters (golemsp prices every runtime on "CPU" and
// "Duration", resolved against the counters' names), no
// --runtime-managed-image (with it the ExeUnit never passes the requestor's
// image, which is the payload's root) and --runtime-managed-hardware
// (without it the ExeUnit passes no limits to enforce).
func TestShippedDescriptor(t *testing.T) {
	b, err := os.ReadFile("../../docs/ya-runtime-gvpn.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var descs []exeUnitDesc
	if err := dec.Decode(&descs); err != nil {
		t.Fatalf("the provider could not read the descriptor: %v", err)
	}
	if len(descs) != 1 {
		t.Fatalf("%d descriptors, want 1", len(descs))
	}
	d := descs[0]
	if d.Name != "gvpn" || d.SupervisorPath != "exe-unit" || !strings.HasSuffix(d.RuntimePath, "/gvpn-runtime") {
		t.Errorf("name %q, supervisor-path %q, runtime-path %q", d.Name, d.SupervisorPath, d.RuntimePath)
	}
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(d.Version) {
		t.Errorf("version %q is not semver, which the provider requires", d.Version)
	}
	if d.Properties == nil {
		t.Error("properties missing")
	}
	if d.Config == nil {
		t.Fatal("config.counters missing: the provider would fall back to its defaults")
	}
	want := map[string]string{"golem.usage.cpu_sec": "cpu", "golem.usage.duration_sec": "duration"}
	for prop, name := range want {
		c, ok := d.Config.Counters[prop]
		switch {
		case !ok:
			t.Errorf("counter %s missing: golemsp's preset cannot resolve %q", prop, name)
		case c.Name == nil || !strings.EqualFold(*c.Name, name) || c.Description == nil || c.Price == nil || !*c.Price:
			t.Errorf("counter %s: name, description and price:true are all required, name %q", prop, name)
		}
	}
	// extra-args are ExeUnit flags; --runtime-arg values must be flags the
	// runtime accepts.
	managed, hardware := false, false
	for _, a := range d.ExtraArgs {
		switch {
		case a == "--runtime-managed-image":
			managed = true
		case a == "--cap-handoff" || a == "--runtime-managed-hardware":
			hardware = true
		case strings.HasPrefix(a, "--runtime-arg="):
			if code, _, errOut := run(strings.TrimPrefix(a, "--runtime-arg="), "offer-template"); code != 0 {
				t.Errorf("extra-arg %s: the runtime refuses it: %s", a, errOut)
			}
			// One descriptor for root and non-root installs: a payload
			// user fits only one of them (a non-root runtime runs payloads
			// as itself, a root one as nobody, each by default).
			if strings.HasPrefix(a, "--runtime-arg=--payload-user") || strings.HasPrefix(a, "--runtime-arg=--payload-root") {
				t.Errorf("extra-arg %s: the shipped descriptor must work for root and non-root providers alike", a)
			}
		default:
			t.Errorf("extra-arg %q is not an ExeUnit flag gvpn expects", a)
		}
	}
	if managed {
		t.Error("extra-args have --runtime-managed-image: the ExeUnit would never pass the requestor's image (--task-package)")
	}
	if !hardware {
		t.Error("extra-args lack --runtime-managed-hardware: the ExeUnit would not pass the agreement's --cpu-cores, --mem-gib and --storage-gib, and the payload would run unlimited")
	}
}
