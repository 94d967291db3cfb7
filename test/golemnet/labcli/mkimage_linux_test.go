package labcli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gvpn/gvpn/runtime/image"
)

func TestMkimageRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "x.gvmi")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--busybox"}, "--out is required"},
		{[]string{"--out", out}, "give one of --root DIR and --busybox"},
		{[]string{"--out", out, "--busybox", "--root", dir}, "give one of --root DIR and --busybox"},
		{[]string{"--out", out, "--root", file}, "is not a directory"},
		{[]string{"--out", out, "--root", dir, "--volume", "data"}, `--volume "data" is not an absolute path`},
		{[]string{"--out", out, "--root", dir, "extra"}, `unexpected argument "extra"`},
		{[]string{"--out", out, "--root", dir, "--workdir", "app"}, `--workdir "app" is not an absolute path`},
		{[]string{"--out", out, "--root", dir, "--env", "=x"}, `--env "=x" is not KEY=VALUE`},
	} {
		var stdout, stderr bytes.Buffer
		if code := Main(append([]string{"mkimage"}, c.args...), &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("mkimage %q: exit %d, stderr %q; want 2 and %q", c.args, code, stderr.String(), c.want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused mkimage left %s: %v", out, err)
	}
}

// The package mkimage writes is one the runtime's reader opens as a GVMI
// with the settings given, and a setting it would refuse leaves nothing.
func TestMkimageWritesWhatTheRuntimeReads(t *testing.T) {
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		t.Skip("mksquashfs is not installed (make vm-deps installs squashfs-tools)")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "app", "marker"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "app.gvmi")
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"mkimage", "--root", root, "--out", out, "--env", "PATH=/bin", "--env", "A=b c",
		"--workdir", "/app", "--user", "1000:1000", "--volume", "/data", "--volume", "/cache/"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "wrote "+out+" (gvmi") {
		t.Errorf("summary %q", stdout.String())
	}
	im, err := image.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	want := image.Config{Env: []string{"PATH=/bin", "A=b c"}, WorkingDir: "/app", User: "1000:1000",
		Volumes: map[string]struct{}{"/data": {}, "/cache": {}}}
	if im.Format != image.FormatGVMI || !reflect.DeepEqual(im.Config, want) {
		t.Errorf("read back %s %+v, want gvmi %+v", im.Format, im.Config, want)
	}

	// What the flags do not check, the runtime's reader refuses, and
	// nothing is left.
	bad := filepath.Join(dir, "bad.gvmi")
	stderr.Reset()
	if code := Main([]string{"mkimage", "--root", root, "--out", bad, "--env", "A=b\x00c"}, &stdout, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "Env[0]") {
		t.Errorf("an env entry with NUL: exit %d, %q; want 1 and the runtime's reason", code, stderr.String())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "bad.gvmi*")); len(left) > 0 {
		t.Errorf("a refused image left %v", left)
	}
}
