// Command mkimage builds the guest of gvpn-runtime's VM sandbox from Debian
// packages: bin/vm/vmlinuz (Debian's kernel) and bin/vm/initrd.img (the
// kernel's virtio modules, busybox-static, the static gvpn-agent and a
// small init). `make vm-image` runs it.
//
// The output is reproducible: the same .debs, agent and init give the same
// bytes (sorted archive, time zero, owner root). It is cached: the packages
// are downloaded once into the cache directory, and nothing is written when
// the inputs' digest matches the one recorded beside the image.
package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed init.sh
var initScript []byte

// format changes when the image layout changes, so that a new builder
// rebuilds an image made by an old one from the same inputs.
const format = "gvpn-vm-image 1"

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mkimage: "+format+"\n", args...)
}

func main() {
	var (
		cache   = flag.String("cache", "bin/vm/debs", "directory of the downloaded .deb files (kept between builds)")
		agent   = flag.String("agent", "bin/gvpn-agent", "the static gvpn-agent binary to put in the guest")
		out     = flag.String("out", "bin/vm", "output directory: vmlinuz, initrd.img, manifest.txt")
		kernel  = flag.String("kernel-package", "linux-image-amd64", "Debian kernel package (a metapackage is followed to the real one)")
		busybox = flag.String("busybox-package", "busybox-static", "Debian package with a static /bin/busybox")
	)
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: go run ./runtime/sandbox/agent/vm/mkimage [flags]\n\nBuilds the VM sandbox's guest kernel and initramfs from Debian packages.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := build(*cache, *agent, *out, *kernel, *busybox); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func build(cache, agent, out, kernelPkg, busyboxPkg string) error {
	kpkg, err := realPackage(kernelPkg, "linux-image-")
	if err != nil {
		return err
	}
	kdeb, err := fetchDeb(cache, kpkg)
	if err != nil {
		return err
	}
	bdeb, err := fetchDeb(cache, busyboxPkg)
	if err != nil {
		return err
	}
	agentBin, err := os.ReadFile(agent)
	if err != nil {
		return fmt.Errorf("the agent binary (make build): %w", err)
	}
	digest, err := inputsDigest(kdeb, bdeb, agentBin)
	if err != nil {
		return err
	}
	stamp := filepath.Join(out, ".inputs")
	if old, err := os.ReadFile(stamp); err == nil && string(old) == digest && exists(filepath.Join(out, "vmlinuz")) && exists(filepath.Join(out, "initrd.img")) {
		progress("%s is up to date", out)
		return nil
	}

	progress("building from %s and %s", filepath.Base(kdeb), filepath.Base(bdeb))
	var (
		vmlinuz []byte
		kver    string
		mods    = map[string][]byte{}
	)
	err = readDeb(kdeb, func(p string, r io.Reader) error {
		switch {
		case strings.HasPrefix(p, "boot/vmlinuz-"):
			kver = strings.TrimPrefix(p, "boot/vmlinuz-")
			b, err := io.ReadAll(r)
			vmlinuz = b
			return err
		case strings.HasPrefix(p, "lib/modules/") && strings.HasSuffix(p, ".ko"):
			b, err := io.ReadAll(r)
			mods[moduleName(path.Base(p))] = b
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if vmlinuz == nil {
		return fmt.Errorf("%s has no /boot/vmlinuz-*", kdeb)
	}
	order, err := loadOrder(guestModules, mods)
	if err != nil {
		return err
	}
	var bb []byte
	err = readDeb(bdeb, func(p string, r io.Reader) error {
		if p == "bin/busybox" {
			b, err := io.ReadAll(r)
			bb = b
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if bb == nil {
		return fmt.Errorf("%s has no /bin/busybox", bdeb)
	}
	applets, err := busyboxApplets(bb)
	if err != nil {
		return err
	}

	a := newArchive()
	for _, d := range []string{"dev", "proc", "sys", "tmp", "root", "mnt", "run", "golem", "etc", "usr/lib", "var/tmp"} {
		a.dir(d)
	}
	a.entries["tmp"] = entry{path: "tmp", mode: modeDir | 0o1777}
	a.charDev("dev/console", 0o600, 5, 1)
	a.charDev("dev/null", 0o666, 1, 3)
	a.file("bin/busybox", 0o755, bb)
	for _, ap := range applets {
		if ap != "bin/busybox" {
			a.symlink(ap, "/bin/busybox")
		}
	}
	a.file("init", 0o755, initScript)
	a.file("usr/bin/gvpn-agent", 0o755, agentBin)
	for _, m := range order {
		a.file("lib/modules/"+m+".ko", 0o644, mods[m])
	}
	a.file("etc/gvpn/modules", 0o644, []byte(strings.Join(order, "\n")+"\n"))
	a.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	a.file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	a.file("etc/hosts", 0o644, []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"))
	a.file("etc/gvpn/kernel-release", 0o644, []byte(kver+"\n"))

	var cpio bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&cpio, gzip.BestCompression) // no name, no time: reproducible
	if err := a.writeTo(zw); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	manifest := fmt.Sprintf("%s\nkernel package: %s\nkernel release: %s\nbusybox package: %s\nagent sha256: %x\nmodules: %s\ninputs: %s\n",
		format, filepath.Base(kdeb), kver, filepath.Base(bdeb), sha256.Sum256(agentBin), strings.Join(order, " "), digest)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"vmlinuz", vmlinuz}, {"initrd.img", cpio.Bytes()}, {"manifest.txt", []byte(manifest)}, {".inputs", []byte(digest)}} {
		if err := writeAtomic(filepath.Join(out, f.name), f.data); err != nil {
			return err
		}
	}
	progress("wrote %s/vmlinuz (%s, %d KiB) and %s/initrd.img (%d KiB, %d modules)", out, kver, len(vmlinuz)/1024, out, cpio.Len()/1024, len(order))
	return nil
}

// inputsDigest identifies everything the image is made of.
func inputsDigest(kdeb, bdeb string, agent []byte) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", format, strings.Join(guestModules, ","))
	h.Write(initScript)
	h.Write(agent)
	for _, p := range []string{kdeb, bdeb} {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\n", filepath.Base(p))
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// busyboxApplets asks the static busybox (it runs on the build host too)
// where each of its applets belongs.
func busyboxApplets(bb []byte) ([]string, error) {
	f, err := os.CreateTemp("", "busybox-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(bb)
	f.Close()
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(f.Name(), 0o755); err != nil {
		return nil, err
	}
	out, err := exec.Command(f.Name(), "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list-full: %w", err)
	}
	list := strings.Fields(string(out))
	sort.Strings(list)
	return list, nil
}

func writeAtomic(name string, data []byte) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
