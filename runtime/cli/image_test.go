package cli

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gvpn/gvpn/runtime/image"
)

// gvmi writes a GVMI of a tiny root with the config, or skips without
// mksquashfs.
func gvmi(t *testing.T, config string) string {
	t.Helper()
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		t.Skip("mksquashfs is not installed (make vm-deps installs squashfs-tools)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(src, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\ngolem:x:1000:1000::/:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(src, "etc", "group"), []byte("root:x:0:\ngolem:x:1000:\n"), 0o644)
	sq := filepath.Join(dir, "fs")
	if b, err := exec.Command("mksquashfs", src, sq, "-noappend", "-quiet", "-no-progress").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v %s", err, b)
	}
	b, err := os.ReadFile(sq)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "image.gvmi")
	if err := os.WriteFile(p, image.AppendTrailer(b, []byte(config)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type deployOut struct {
	Valid map[string]string `json:"valid"`
	Vols  []struct {
		Name string `json:"name"`
		Path string `json:"path"`
	} `json:"vols"`
	StartMode string `json:"startMode"`
}

func deployJSON(t *testing.T, args ...string) (int, deployOut, string) {
	t.Helper()
	code, out, errOut := run(args...)
	if errOut != "" {
		t.Errorf("deploy wrote to stderr: %q", errOut)
	}
	var d deployOut
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("deploy stdout is not its JSON: %q", out)
	}
	return code, d, out
}

// TestDeployGVMI: the image's volumes are listed beside /golem/work and the
// override's, the image is recorded for start, and no host path is printed.
func TestDeployGVMI(t *testing.T) {
	pkg := gvmi(t, `{"Env":["A=1"],"WorkingDir":"/data","User":"golem","Volumes":{"/data":{},"/tmp":{}}}`)
	wd := t.TempDir()
	code, d, out := deployJSON(t, "--workdir", wd, "--task-package", pkg, "--volume-override", `["/golem/input"]`, "deploy", "--")
	if code != 0 {
		t.Fatalf("deploy: %d %s", code, out)
	}
	var paths []string
	for _, v := range d.Vols {
		paths = append(paths, v.Path)
	}
	if strings.Join(paths, " ") != "/data /golem/input /golem/work" {
		t.Errorf("vols %v, want /data /golem/input /golem/work", paths)
	}
	if strings.Contains(out, wd) || strings.Contains(out, pkg) {
		t.Errorf("deploy output names a host path: %s", out)
	}
	b, err := os.ReadFile(filepath.Join(wd, deploymentFile))
	if err != nil {
		t.Fatal(err)
	}
	var dep deployment
	if err := json.Unmarshal(b, &dep); err != nil || dep.Image == nil {
		t.Fatalf("deployment %s: %v", b, err)
	}
	if dep.Image.Format != image.FormatGVMI || dep.Image.Size%512 != 0 || dep.Image.Config.WorkingDir != "/data" {
		t.Errorf("recorded image %+v", dep.Image)
	}
	if os.Geteuid() == 0 && (dep.Image.User == nil || dep.Image.User.UID != 1000 || dep.Image.User.GID != 1000) {
		t.Errorf("image user golem resolved to %+v, want 1000:1000", dep.Image.User)
	}
}

// TestDeployRefusesCorruptPackages: each is refused with the reason, no
// host path, and nothing left in the workdir.
func TestDeployRefusesCorruptPackages(t *testing.T) {
	good := gvmi(t, `{"Env":["A=1"]}`)
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	bad := func(name string, b []byte) string {
		p := filepath.Join(t.TempDir(), name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	crc := append([]byte(nil), b...)
	crc[len(crc)-10] ^= 1
	cases := map[string]string{
		bad("crc.gvmi", crc):                 "GVMI config CRC32 mismatch",
		bad("short.gvmi", b[:300]):           "squashfs truncated",
		bad("text", []byte("hello world\n")): "not a GVMI, squashfs, OCI archive or docker save archive",
		gvmi(t, `{"User":"nobody-here"}`):    `no user "nobody-here" in the image's /etc/passwd`,
		gvmi(t, `{"Volumes":{"rel":{}}}`):    "Volumes: \"rel\" is not an absolute path",
	}
	for pkg, want := range cases {
		if strings.Contains(want, "nobody-here") && os.Geteuid() != 0 {
			continue // resolved only where a user namespace is possible
		}
		wd := t.TempDir()
		code, d, out := deployJSON(t, "--workdir", wd, "--task-package", pkg, "deploy", "--")
		if code != 1 || !strings.Contains(d.Valid["Err"], want) {
			t.Errorf("%s: exit %d, %s; want an error with %q", filepath.Base(pkg), code, out, want)
		}
		if strings.Contains(out, pkg) || strings.Contains(out, wd) {
			t.Errorf("%s: deploy output names a host path: %s", filepath.Base(pkg), out)
		}
		if _, err := os.Stat(filepath.Join(wd, deploymentFile)); err == nil {
			t.Errorf("%s: a refused deploy recorded a deployment", filepath.Base(pkg))
		}
	}
}
