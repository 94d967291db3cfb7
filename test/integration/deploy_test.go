package integration

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gvpn/gvpn/test/privtest"
)

// TestDeployOnAFullDiskTellsTheRequestorNothingOfTheHost: the ExeUnit
// forwards deploy's stdout and stderr to the requestor. On a full disk the
// log file cannot be written either; deploy must still print only its JSON,
// naming no host path, and nothing on stderr (where the logging library
// reports its own write errors by default).
func TestDeployOnAFullDiskTellsTheRequestorNothingOfTheHost(t *testing.T) {
	privtest.RequireRoot(t)
	disk := t.TempDir()
	if err := unix.Mount("tmpfs", disk, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("cannot mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(disk, unix.MNT_DETACH) })
	workdir := filepath.Join(disk, "activity")
	if err := os.Mkdir(workdir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Fill the file system.
	f, err := os.Create(filepath.Join(disk, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()

	out, stderr, code := runCLI(t, "--workdir", workdir, "--sandbox-prefix", testPrefix, "deploy", "--")
	if stderr != "" {
		t.Errorf("deploy on a full disk wrote to stderr, which reaches the requestor: %q", stderr)
	}
	if strings.Contains(out, disk) {
		t.Errorf("deploy's stdout names a host path: %q", out)
	}
	var res struct {
		Valid map[string]string `json:"valid"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("deploy stdout is not one JSON object: %q", out)
	}
	if code == 0 || res.Valid["Err"] == "" {
		t.Errorf("deploy on a full disk: exit %d, %q; want a failure", code, out)
	}
}
