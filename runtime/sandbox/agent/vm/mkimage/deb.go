package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// realPackage follows a Debian metapackage (linux-image-amd64) to the
// package it depends on (linux-image-6.1.0-NN-amd64); other names are
// returned as they are.
func realPackage(name, prefix string) (string, error) {
	out, err := aptOutput("apt-cache", "depends", "--important", name)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], prefix) && f[1] != name {
			return f[1], nil
		}
	}
	return name, nil
}

// aptOutput runs an apt tool, and once more after apt-get update when the
// package lists are missing (a fresh machine).
func aptOutput(name string, args ...string) ([]byte, error) {
	out, err := exec.Command(name, args...).Output()
	if err == nil {
		return out, nil
	}
	progress("%s %s failed (%v); running apt-get update", name, strings.Join(args, " "), err)
	if uerr := exec.Command("apt-get", "update", "-qq").Run(); uerr != nil {
		return nil, fmt.Errorf("apt-get update: %w", uerr)
	}
	out, err = exec.Command(name, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, ee.Stderr)
		}
		return nil, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return out, nil
}

// fetchDeb returns the cached .deb of pkg in dir, downloading it with
// apt-get download when there is none. A cached one is used whatever
// version the archive has now: the image changes only when the cache is
// cleared (make clean), which keeps it reproducible.
func fetchDeb(dir, pkg string) (string, error) {
	if p, ok := cachedDeb(dir, pkg); ok {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	progress("downloading %s", pkg)
	cmd := exec.Command("apt-get", "download", "-qq", pkg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		progress("apt-get download %s failed (%v: %s); running apt-get update", pkg, err, bytes.TrimSpace(out))
		if uerr := exec.Command("apt-get", "update", "-qq").Run(); uerr != nil {
			return "", fmt.Errorf("apt-get update: %w", uerr)
		}
		cmd := exec.Command("apt-get", "download", "-qq", pkg)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get download %s: %w: %s", pkg, err, bytes.TrimSpace(out))
		}
	}
	if p, ok := cachedDeb(dir, pkg); ok {
		return p, nil
	}
	return "", fmt.Errorf("apt-get download %s left no %s_*.deb in %s", pkg, pkg, dir)
}

func cachedDeb(dir, pkg string) (string, bool) {
	m, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(m) == 0 {
		return "", false
	}
	sort.Strings(m)
	return m[len(m)-1], true
}

// readDeb calls fn for every regular file in the data of a .deb, with its
// path (without the leading "./") and a reader of its contents.
func readDeb(deb string, fn func(path string, r io.Reader) error) error {
	cmd := exec.Command("dpkg-deb", "--fsys-tarfile", deb)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dpkg-deb (install the dpkg package): %w", err)
	}
	tr := tar.NewReader(out)
	var ferr error
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			ferr = fmt.Errorf("%s: %w", deb, err)
			break
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if err := fn(strings.TrimPrefix(h.Name, "./"), tr); err != nil {
			ferr = err
			break
		}
	}
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil && ferr == nil {
		ferr = fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", deb, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return ferr
}
