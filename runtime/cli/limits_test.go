package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/limits"
)

func TestLimitFlags(t *testing.T) {
	oneLine(t, "--pids-limit", "--pids-limit", "-1", "offer-template")
	oneLine(t, "--mem-gib", "--mem-gib", "x", "offer-template")
	oneLine(t, "--storage-gib", "--storage-gib", "-0.5", "offer-template")
	fs, o := newFlagSet()
	if err := fs.Parse([]string{"--cpu-cores", "2", "--mem-gib", "0.25", "--storage-gib", "0.1", "--pids-limit", "64"}); err != nil {
		t.Fatal(err)
	}
	l, err := o.limits()
	if err != nil || l != (limits.Limits{CPUCores: 2, MemBytes: 1 << 28, Pids: 64, StorageBytes: 107374182}) {
		t.Fatalf("limits %+v %v", l, err)
	}
}

func TestCheckEnforced(t *testing.T) {
	var buf bytes.Buffer
	lg := logrus.New()
	lg.SetOutput(&buf)
	log := logrus.NewEntry(lg)
	un := []limits.Unenforced{{Limit: "storage", Reason: "no loop device"}}
	o := &Options{}
	if !o.checkEnforced(nil, log) || !o.checkEnforced(un, log) {
		t.Fatal("without --require-limits an unenforced limit is a warning")
	}
	if !strings.Contains(buf.String(), "level=warning") || !strings.Contains(buf.String(), "storage: no loop device") {
		t.Fatalf("log: %s", buf.String())
	}
	o.RequireLimits = true
	if o.checkEnforced(un, log) {
		t.Fatal("--require-limits accepted an unenforced limit")
	}
	if !o.checkEnforced(nil, log) {
		t.Fatal("--require-limits refused although every limit is enforced")
	}
}
