package logs

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestNew(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.WithField("k", "v").Warn("shown")
	var m map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &m); err != nil || m["msg"] != "shown" || m["k"] != "v" {
		t.Fatalf("log %q: %v", buf.String(), err)
	}
	if logrus.GetLevel() != logrus.WarnLevel {
		t.Errorf("standard logger at %v, want warn", logrus.GetLevel())
	}
	if _, err := New(&buf, "loud", "text"); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Errorf("bad level: %v", err)
	}
	if _, err := New(&buf, "info", "xml"); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Errorf("bad format: %v", err)
	}
}
