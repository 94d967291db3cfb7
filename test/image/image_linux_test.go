package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/gvpn/gvpn/runtime/image"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/test/golemnet"
	"github.com/gvpn/gvpn/test/privtest"
)

// The image every package of this suite holds: busybox, a marker file,
// a user "golem" and these settings.
const (
	markerText = "gvpn image marker 7f3a"
	imageUID   = 1000
	imageGID   = 1001
	workDir    = "/app"
	envLine    = "GREETING=hello from the image"
)

// imageConfig is the container config of the test image, as gvmkit-build
// writes it into a GVMI.
var imageConfig = image.Config{
	Env:        []string{"PATH=/bin", envLine},
	WorkingDir: workDir,
	User:       "golem",
	Volumes:    map[string]struct{}{"/data": {}},
	Cmd:        []string{"/bin/sh"},
}

// makeRoot writes the image's tree: busybox with the applets the test
// runs, /etc/passwd and /etc/group, the marker, the working directory and
// the volume's mount point.
func makeRoot(t *testing.T) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox is not installed (make vm-deps installs busybox-static)")
	}
	if out, _ := exec.Command("file", "-L", bb).Output(); len(out) > 0 && !bytes.Contains(out, []byte("statically linked")) {
		t.Skipf("%s is not static (install busybox-static)", bb)
	}
	root := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{"bin", "etc", "app", "data", "golem/work", "proc", "sys", "dev", "tmp"} {
		must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	b, err := os.ReadFile(bb)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(root, "bin", "busybox"), b, 0o755))
	for _, a := range []string{"sh", "cat", "id", "pwd", "env", "sleep", "ls", "echo"} {
		must(t, os.Symlink("busybox", filepath.Join(root, "bin", a)))
	}
	must(t, os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte(fmt.Sprintf("root:x:0:0:root:/root:/bin/sh\ngolem:x:%d:%d::/app:/bin/sh\n", imageUID, imageGID)), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "etc", "group"), []byte(fmt.Sprintf("root:x:0:\ngolem:x:%d:\n", imageGID)), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "marker"), []byte(markerText+"\n"), 0o644))
	must(t, os.Chmod(filepath.Join(root, "tmp"), 0o1777))
	// The image's user owns its working directory, as a Dockerfile's
	// chown would make it.
	must(t, os.Chown(filepath.Join(root, "app"), imageUID, imageGID))
	return root
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// makeGVMI is what gvmkit-build makes, offline (gvpn-lab mkimage --root):
// mksquashfs of the root, then the config trailer.
func makeGVMI(t *testing.T, root string) string {
	t.Helper()
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		t.Skip("mksquashfs is not installed (make vm-deps installs squashfs-tools)")
	}
	p := filepath.Join(t.TempDir(), "test.gvmi")
	_, err := golemnet.MakeGVMI(root, p, imageConfig)
	must(t, err)
	return p
}

// makeDockerSave imports a tar of the root into the Docker engine with the
// config and saves it; it skips when no engine answers.
func makeDockerSave(t *testing.T, root string) string {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker is not installed: no OCI archive can be made offline")
	}
	if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		t.Skipf("no Docker engine answers (%v: %s): no OCI archive can be made offline", err, bytes.TrimSpace(out))
	}
	dir := t.TempDir()
	rootTar := filepath.Join(dir, "root.tar")
	if out, err := exec.Command("tar", "--numeric-owner", "-C", root, "-cf", rootTar, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	tag := fmt.Sprintf("gvpn-image-test:%d", os.Getpid())
	args := []string{"import"}
	for _, c := range []string{"ENV PATH=/bin", `ENV GREETING="hello from the image"`, "WORKDIR " + workDir, "USER golem", "VOLUME /data", `CMD ["/bin/sh"]`} {
		args = append(args, "--change", c)
	}
	args = append(args, rootTar, tag)
	if out, err := exec.Command("docker", args...).CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", tag).Run() })
	p := filepath.Join(dir, "image.tar")
	if out, err := exec.Command("docker", "save", "-o", p, tag).CombinedOutput(); err != nil {
		t.Fatalf("docker save: %v %s", err, out)
	}
	return p
}

// ociArchive turns a docker save archive into an OCI image layout in a
// tar, as `skopeo copy docker-archive:… oci-archive:…` would: Docker
// before 25 saves no layout of its own.
func ociArchive(t *testing.T, dockerSave string) string {
	t.Helper()
	img, err := tarball.ImageFromPath(dockerSave, nil)
	must(t, err)
	dir := filepath.Join(t.TempDir(), "layout")
	lp, err := layout.Write(dir, empty.Index)
	must(t, err)
	must(t, lp.AppendImage(img))
	out := filepath.Join(t.TempDir(), "oci.tar")
	if b, err := exec.Command("tar", "-C", dir, "-cf", out, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, b)
	}
	return out
}

// TestImagePayload: a GVMI and an OCI archive, each deployed and started
// as the ExeUnit does, are the payload's root with the image's settings,
// in a user namespace; broken packages are refused at deploy. (Two nodes
// talking over the VPN from inside an image is the contract every kind
// keeps: test/contract's image kind.)
func TestImagePayload(t *testing.T) {
	privtest.RequireRoot(t)
	root := makeRoot(t)
	t.Run("gvmi", func(t *testing.T) {
		pkg := makeGVMI(t, root)
		checkPackage(t, pkg)
		b, err := os.ReadFile(pkg)
		must(t, err)
		b[len(b)-8-3] ^= 0x01 // a byte of the config
		refused(t, writeFile(t, "corrupt.gvmi", b), "GVMI config CRC32 mismatch")
	})
	t.Run("docker-save", func(t *testing.T) {
		pkg := makeDockerSave(t, root)
		checkPackage(t, pkg)
		b, err := os.ReadFile(pkg)
		must(t, err)
		refused(t, writeFile(t, "truncated.tar", b[:len(b)*2/3]), "truncated")
		t.Run("oci-archive", func(t *testing.T) { checkPackage(t, ociArchive(t, pkg)) })
	})
}

func writeFile(t *testing.T, name string, b []byte) string {
	p := filepath.Join(t.TempDir(), name)
	must(t, os.WriteFile(p, b, 0o644))
	return p
}

// refused deploys pkg and wants a refusal naming want, without host paths.
func refused(t *testing.T, pkg, want string) {
	t.Helper()
	ctx := privtest.Context(t, 30*time.Second)
	wd := t.TempDir()
	res, err := golemnet.Deploy(ctx, golemnet.ExeUnitConfig{Runtime: runtimeBin, Workdir: wd, TaskPackage: pkg})
	if err == nil {
		t.Fatalf("deploy of %s succeeded", filepath.Base(pkg))
	}
	msg := res.Valid["Err"]
	if !strings.Contains(msg, want) {
		t.Fatalf("deploy of %s: %q, want a message with %q (%v)", filepath.Base(pkg), msg, want, err)
	}
	if strings.Contains(msg, pkg) || strings.Contains(msg, wd) {
		t.Errorf("the refusal names a host path: %q", msg)
	}
	t.Logf("refused at deploy: %s", msg)
}

// checkPackage runs the whole check on one package.
func checkPackage(t *testing.T, pkg string) {
	ctx := privtest.Context(t, 3*time.Minute)

	// deploy lists the image's volume beside /golem/work.
	res, err := golemnet.Deploy(ctx, golemnet.ExeUnitConfig{Runtime: runtimeBin, Workdir: t.TempDir(), TaskPackage: pkg})
	must(t, err)
	var paths []string
	for _, raw := range res.Vols {
		var v struct{ Path string }
		must(t, json.Unmarshal(raw, &v))
		paths = append(paths, v.Path)
	}
	if strings.Join(paths, " ") != "/data /golem/work" {
		t.Errorf("deploy vols %v, want /data and /golem/work", paths)
	}

	lab, err := golemnet.NewLab(ctx, golemnet.LabConfig{Runtime: runtimeBin, Nodes: 1, TaskPackage: pkg,
		SandboxPrefix: privtest.UniqueName("gvpn-img-"), Log: privtest.Log(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	a := lab.Nodes()[0]
	sh := func(node string, script string) string {
		t.Helper()
		r, err := lab.Exec(ctx, node, "sh", "-c", script)
		if err != nil {
			t.Fatalf("%s: %s: %v", node, script, err)
		}
		if r.ReturnCode != 0 {
			t.Fatalf("%s: %s: exit %d: %s%s", node, script, r.ReturnCode, r.Stdout, r.Stderr)
		}
		return string(r.Stdout)
	}

	// The payload sees the image: its marker, its env, its working
	// directory, its user.
	out := sh(a.Name, `cat /marker; echo "$GREETING"; pwd; id -u; id -g`)
	want := fmt.Sprintf("%s\n%s\n%s\n%d\n%d\n", markerText, strings.TrimPrefix(envLine, "GREETING="), workDir, imageUID, imageGID)
	if out != want {
		t.Errorf("in the image: %q, want %q", out, want)
	}
	if r, err := lab.Exec(ctx, a.Name, "env"); err != nil || !strings.Contains(string(r.Stdout), envLine) {
		t.Errorf("env in the image: %q %v", r.Stdout, err)
	}
	// The host's secrets are not there.
	if r, err := lab.Exec(ctx, a.Name, "cat", "/etc/shadow"); err != nil || r.ReturnCode == 0 {
		t.Errorf("/etc/shadow is readable in the image: exit %d %q %v", r.ReturnCode, r.Stdout, err)
	}
	// What the payload writes goes to its own layer: the package and the
	// tree deploy extracted stay as they were. (The image's user writes
	// in its working directory, which it owns in the image.)
	pkgSum := fileSum(t, pkg)
	sh(a.Name, `echo changed > `+workDir+`/written && cat `+workDir+`/written`)
	if fileSum(t, pkg) != pkgSum {
		t.Error("the payload changed the task package")
	}
	rootfs := filepath.Join(a.Workdir, "gvpn-image", "rootfs")
	if _, err := os.Stat(rootfs); err == nil {
		if fi, err := os.Stat(filepath.Dir(rootfs)); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("the extracted image's directory: %v %v, want mode 0700", fi.Mode(), err)
		}
		if _, err := os.Stat(filepath.Join(rootfs, workDir, "written")); err == nil {
			t.Error("the payload wrote into the extracted image")
		}
	}

	// The host sees an unprivileged id for the image's user.
	token := strconv.Itoa(100000 + os.Getpid()%800000)
	sleeper, err := lab.Spawn(ctx, a.Name, "sleep", token)
	must(t, err)
	uid, err := hostUIDOf("sleep", token)
	if err != nil {
		t.Error(err)
	} else if uid == 0 || uid == imageUID || uid < netns.IDRangeSize {
		t.Errorf("the image's user %d is host uid %d, want one of the sandbox's own range", imageUID, uid)
	} else {
		t.Logf("image uid %d is host uid %d", imageUID, uid)
	}
	_ = a.ExeUnit.KillProcess(ctx, sleeper.Pid, 9)
	sleeper.Wait(ctx)
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	return sha256.Sum256(b)
}

// hostUIDOf finds the host process running argv0 with arg and returns its
// real uid as the host sees it.
func hostUIDOf(argv0, arg string) (int, error) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err != nil {
				continue
			}
			cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil || !bytes.Equal(bytes.TrimRight(cmd, "\x00"), []byte(argv0+"\x00"+arg)) {
				continue
			}
			st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
			if err != nil {
				continue
			}
			for _, l := range strings.Split(string(st), "\n") {
				if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
					return strconv.Atoi(f[1])
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("no host process %s %s", argv0, arg)
}
