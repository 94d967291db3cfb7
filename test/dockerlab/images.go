package dockerlab

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Image names; the tag is the content that made the image.
const (
	BaseRepo = "gvpn-base"
	LabRepo  = "gvpn-lab"
)

// BasePackages are the Debian packages of the base root file system: what
// the nodes, the hub and the payloads run (ip, ping, iperf3, curl; sh,
// cat and sha256sum come with every Debian).
var BasePackages = []string{"iproute2", "iputils-ping", "iperf3", "curl"}

// LabBinaries are the gvpn commands the lab image holds.
var LabBinaries = []string{"gvpn-runtime", "gvpn-agent", "gvpn-lab"}

// DefaultCacheDir keeps the debootstrap tarballs, one per package list.
const DefaultCacheDir = "/var/cache/gvpn-lab"

// aptArchives is where apt keeps downloaded packages.
const aptArchives = "/var/cache/apt/archives"

// baseRecipe is part of the base key: change it when the way the tarball is
// made changes.
const baseRecipe = "debootstrap minbase, docs/man/locales/apt lists trimmed, v1"

// BuildConfig says what to build the images from.
type BuildConfig struct {
	// BinDir holds the LabBinaries (as `make build` leaves them in bin/).
	BinDir string
	// Dockerfile is the project's Dockerfile; its stage "lab" is built.
	Dockerfile string
	// CacheDir keeps debootstrap tarballs; empty means DefaultCacheDir.
	CacheDir string
	// Suite and Mirror are debootstrap's; empty means this machine's
	// Debian release and its APT mirror (else bookworm, deb.debian.org).
	Suite, Mirror string
	// Progress gets one line per step (and debootstrap's output); nil
	// discards it.
	Progress io.Writer
}

// Images are the tags of the lab's images.
type Images struct {
	Base, Lab string
	// Built lists the tags this call built (the others were reused).
	Built []string
}

// Build makes sure the base and lab images exist, building what is
// missing: the base from a debootstrap tarball (cached in CacheDir by its
// package list, debootstrapped when absent) with `docker import`, the lab
// image FROM it with the Dockerfile's "lab" stage and the binaries. An
// image whose tag (the hash of what made it) exists is reused. A failed
// build removes the dangling layers it left; older tags of the same
// repository are removed after a build (when no container uses them).
func Build(ctx context.Context, d CLI, cfg BuildConfig) (Images, error) {
	var im Images
	logf := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "gvpn-lab images: "+format+"\n", args...)
		}
	}
	if err := d.Ping(ctx); err != nil {
		return im, err
	}
	df, err := os.ReadFile(cfg.Dockerfile)
	if err != nil {
		return im, fmt.Errorf("Dockerfile: %w", err)
	}
	if !strings.Contains(string(df), " AS lab") {
		return im, fmt.Errorf("Dockerfile %s has no stage \"lab\"", cfg.Dockerfile)
	}
	suite, mirror := cfg.Suite, cfg.Mirror
	if suite == "" || mirror == "" {
		s, m := hostDebian()
		suite, mirror = cmp(suite, s), cmp(mirror, m)
	}
	cache := cmp(cfg.CacheDir, DefaultCacheDir)

	baseKey := hashOf([]byte(baseRecipe), []byte(suite), []byte(strings.Join(sortedCopy(BasePackages), ",")))
	im.Base = BaseRepo + ":" + baseKey
	if d.Exists(ctx, "image", im.Base) {
		logf("base %s: reused", im.Base)
	} else {
		tarball := filepath.Join(cache, "base-"+baseKey+".tar")
		if _, err := os.Stat(tarball); err != nil {
			logf("base: debootstrap %s (%s) from %s into %s — the first time only, a few minutes",
				suite, strings.Join(BasePackages, " "), mirror, tarball)
			t0 := time.Now()
			if err := debootstrap(ctx, suite, mirror, tarball, cfg.Progress); err != nil {
				return im, err
			}
			logf("base: debootstrap done in %s", time.Since(t0).Round(time.Second))
		} else {
			logf("base: cached root file system %s", tarball)
		}
		f, err := os.Open(tarball)
		if err != nil {
			return im, err
		}
		_, err = d.RunIn(ctx, f, "import",
			"--change", "LABEL "+LabelImage+"=base",
			"--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"--change", `CMD ["/bin/bash"]`,
			"--message", "gvpn base: "+baseRecipe, "-", im.Base)
		f.Close()
		if err != nil {
			return im, err
		}
		im.Built = append(im.Built, im.Base)
		logf("base %s: imported", im.Base)
	}
	baseID, err := d.Run(ctx, "image", "inspect", "--format", "{{.Id}}", im.Base)
	if err != nil {
		return im, err
	}

	parts := [][]byte{[]byte(baseID), df}
	for _, b := range LabBinaries {
		sum, err := fileHash(filepath.Join(cfg.BinDir, b))
		if err != nil {
			return im, fmt.Errorf("%w (build the binaries first: make build)", err)
		}
		parts = append(parts, []byte(b), sum)
	}
	im.Lab = LabRepo + ":" + hashOf(parts...)
	if d.Exists(ctx, "image", im.Lab) {
		logf("lab %s: reused", im.Lab)
	} else {
		logf("lab %s: docker build (stage lab FROM %s)", im.Lab, im.Base)
		if err := buildLab(ctx, d, cfg, im); err != nil {
			return im, err
		}
		im.Built = append(im.Built, im.Lab)
	}
	for _, keep := range []string{im.Base, im.Lab} {
		removeOtherTags(ctx, d, keep)
	}
	return im, nil
}

func cmp(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

func hashOf(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

func fileHash(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// hostDebian returns this machine's Debian release and APT mirror, or
// bookworm and deb.debian.org.
func hostDebian() (suite, mirror string) {
	suite, mirror = "bookworm", "http://deb.debian.org/debian"
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VERSION_CODENAME="); ok && v != "" {
				suite = strings.Trim(v, `"`)
			}
		}
	}
	for _, p := range []string{"/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"} {
		if m := mirrorIn(p); m != "" {
			return suite, m
		}
	}
	return suite, mirror
}

// mirrorIn returns the first Debian (not security) mirror URI in an APT
// sources file of either format.
func mirrorIn(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	return mirrorOf(f)
}

// mirrorOf is mirrorIn on the file's content.
func mirrorOf(r io.Reader) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		var uris []string
		switch {
		case len(fs) >= 2 && fs[0] == "URIs:":
			uris = fs[1:]
		case len(fs) >= 3 && fs[0] == "deb":
			for _, f := range fs[1:] {
				if strings.Contains(f, "://") {
					uris = append(uris, f)
					break
				}
			}
		}
		for _, u := range uris {
			if strings.HasPrefix(u, "http") && !strings.Contains(u, "security") {
				return u
			}
		}
	}
	return ""
}

// debootstrap makes the base root file system and writes it to tarball
// (atomically: a failed run leaves no tarball).
func debootstrap(ctx context.Context, suite, mirror, tarball string, progress io.Writer) error {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return errors.New("debootstrap is not installed (make images installs it; or apt-get install -y debootstrap)")
	}
	if err := os.MkdirAll(filepath.Dir(tarball), 0o755); err != nil {
		return err
	}
	root, err := os.MkdirTemp(filepath.Dir(tarball), "rootfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	out := progress
	if out == nil {
		out = io.Discard
	}
	args := []string{"--variant=minbase", "--include=" + strings.Join(BasePackages, ",")}
	// The packages this machine's apt already downloaded are not fetched
	// again, and those fetched land there for next time.
	if fi, err := os.Stat(aptArchives); err == nil && fi.IsDir() {
		args = append(args, "--cache-dir="+aptArchives)
	}
	cmd := exec.CommandContext(ctx, "debootstrap", append(args, suite, root, mirror)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debootstrap %s from %s: %w (its log: %s)", suite, mirror, err, filepath.Join(root, "debootstrap/debootstrap.log"))
	}
	// What no test reads: documentation, manuals, translations, package
	// lists and the downloaded packages.
	for _, g := range []string{"usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
		"var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/log/*.log"} {
		matches, _ := filepath.Glob(filepath.Join(root, g))
		for _, m := range matches {
			os.RemoveAll(m)
		}
	}
	tmp := tarball + ".part"
	tar := exec.CommandContext(ctx, "tar", "--numeric-owner", "--xattrs", "-C", root, "-cf", tmp, ".")
	if b, err := tar.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("tar of the root file system: %v: %s", err, b)
	}
	return os.Rename(tmp, tarball)
}

// buildLab runs `docker build --target lab` with a context holding only the
// binaries; on failure it removes the dangling images the build left.
func buildLab(ctx context.Context, d CLI, cfg BuildConfig, im Images) error {
	dir, err := os.MkdirTemp("", "gvpn-lab-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	for _, b := range LabBinaries {
		if err := copyFile(filepath.Join(cfg.BinDir, b), filepath.Join(dir, "bin", b)); err != nil {
			return err
		}
	}
	before, err := d.Run(ctx, "images", "-aq", "--no-trunc")
	if err != nil {
		return err
	}
	_, err = d.Run(ctx, "build", "--quiet", "--rm", "--force-rm", "--target", "lab",
		"--build-arg", "BASE="+im.Base, "--label", LabelImage+"=lab",
		"-t", im.Lab, "-f", cfg.Dockerfile, dir)
	if err == nil {
		return nil
	}
	// Whatever this build made and nothing tags is ours to remove.
	old := map[string]bool{}
	for _, id := range lines(before) {
		old[id] = true
	}
	if out, lerr := d.Run(context.WithoutCancel(ctx), "images", "-q", "--no-trunc", "-f", "dangling=true"); lerr == nil {
		for _, id := range lines(out) {
			if !old[id] {
				d.Run(context.WithoutCancel(ctx), "rmi", id)
			}
		}
	}
	return fmt.Errorf("building %s: %w", im.Lab, err)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// removeOtherTags removes the other tags of keep's repository: images of
// an older package list, Dockerfile or binaries. One a container still
// uses stays (docker refuses).
func removeOtherTags(ctx context.Context, d CLI, keep string) {
	repo, _, _ := strings.Cut(keep, ":")
	out, err := d.Run(ctx, "images", "--format", "{{.Repository}}:{{.Tag}}", repo)
	if err != nil {
		return
	}
	for _, t := range lines(out) {
		if t != keep {
			d.Run(ctx, "rmi", t)
		}
	}
}
