package labcli

import (
	"bytes"
	"strings"
	"testing"
)

// TestCommandTable: the usage text and the unknown-command error are made
// from the table that runs the commands, so each listed command is in both
// and each hidden one in neither.
func TestCommandTable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if Main([]string{"launch"}, &stdout, &stderr) != 2 {
		t.Fatal("unknown command: want exit 2")
	}
	usage := mainUsage()
	for _, c := range commands {
		listed := c.usage != ""
		inUsage := strings.Contains(usage, "  gvpn-lab "+c.name+" ") || strings.Contains(usage, "  gvpn-lab "+c.name+"\n")
		inError := strings.Contains(stderr.String(), " "+c.name+",") || strings.Contains(stderr.String(), " "+c.name+";")
		if inUsage != listed || inError != listed {
			t.Errorf("%s: listed %v, but in the usage text %v, in the unknown-command error %v (%q)", c.name, listed, inUsage, inError, stderr.String())
		}
	}
}
