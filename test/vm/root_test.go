package vm

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gvpn/gvpn/test/privtest"
)

// debianTop are the packages of the test's task package, with everything
// they depend on: base files, a shell, coreutils, grep, and the payload's
// network tools.
var debianTop = []string{"base-files", "dash", "coreutils", "grep", "iproute2", "iputils-ping", "curl", "libc-bin"}

// debianRoot returns a squashfs image of a small Debian root made of
// debianTop and their dependencies, built on first use and cached as
// debian-root.squashfs beside the guest image.
//
// It is made the way a task package's root is, from Debian's own .debs:
// apt-get download fetches them (in parallel, from the host's mirror) and
// dpkg-deb unpacks them; no maintainer script runs, so the few files they
// would write (/bin/sh, /etc/passwd, the linker cache) are written here.
// debootstrap makes the same kind of root, but it installs package by
// package and takes several minutes on a loaded CI machine; this takes
// well under one.
func debianRoot(t *testing.T) string {
	t.Helper()
	for _, c := range []string{"apt-get", "apt-cache", "dpkg-deb", "mksquashfs", "chroot"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is not installed (make vm-deps installs squashfs-tools; apt and dpkg are Debian's)", c)
		}
	}
	dir, _ := filepath.Abs(privtest.VMDir())
	img := filepath.Join(dir, "debian-root.squashfs")
	if _, err := os.Stat(img); err == nil {
		return img
	}
	t.Logf("building %s from Debian packages (once; cached)", img)
	run := func(cwd, name string, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = cwd
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(stderr.Bytes()))
		}
		return out
	}
	deps := run("", "apt-cache", append([]string{"depends", "--recurse", "--no-recommends", "--no-suggests",
		"--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"}, debianTop...)...)
	var pkgs []string
	sc := bufio.NewScanner(bytes.NewReader(deps))
	for sc.Scan() {
		l := sc.Text()
		// Package names start a line; dependency lines are indented,
		// virtual packages are <in brackets>, other architectures :arch.
		if l == "" || l[0] == ' ' || l[0] == '<' || strings.Contains(l, ":") {
			continue
		}
		pkgs = append(pkgs, l)
	}
	sort.Strings(pkgs)
	pkgs = compactStrings(pkgs)

	debs := filepath.Join(dir, "debian-root-debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		t.Fatal(err)
	}
	run(debs, "apt-get", append([]string{"download", "-qq"}, pkgs...)...)
	tmp, err := os.MkdirTemp(dir, "debian-root-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	files, _ := filepath.Glob(filepath.Join(debs, "*.deb"))
	for _, f := range files {
		run("", "dpkg-deb", "-x", f, root)
	}
	// What the maintainer scripts would have done.
	for _, d := range []string{"etc", "tmp", "root", "proc", "sys", "dev", "run", "var/tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("dash", filepath.Join(root, "bin", "sh")); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
		"etc/hosts":  "127.0.0.1\tlocalhost\n",
	} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run("", "chroot", root, "/sbin/ldconfig")
	for _, d := range []string{"usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info"} {
		os.RemoveAll(filepath.Join(root, d))
	}
	run("", "mksquashfs", root, img+".tmp", "-noappend", "-quiet", "-all-root")
	if err := os.Rename(img+".tmp", img); err != nil {
		t.Fatal(err)
	}
	return img
}

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func tail(b []byte) []byte {
	if len(b) > 4000 {
		return b[len(b)-4000:]
	}
	return b
}
