package image

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// mksquashfs makes a squashfs of a small tree and returns its bytes.
func mksquashfs(t *testing.T) []byte {
	t.Helper()
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		t.Skip("mksquashfs is not installed (make vm-deps installs squashfs-tools)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "root")
	must(t, os.MkdirAll(filepath.Join(src, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "marker"), []byte("hello\n"), 0o644))
	out := filepath.Join(dir, "fs.squashfs")
	if b, err := exec.Command("mksquashfs", src, out, "-noappend", "-quiet", "-no-progress").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	must(t, err)
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pkg")
	must(t, os.WriteFile(p, b, 0o644))
	return p
}

func wantErr(t *testing.T, b []byte, want string) {
	t.Helper()
	p := write(t, b)
	_, err := Open(p)
	if err == nil {
		t.Fatalf("Open accepted a package that should fail with %q", want)
	}
	if !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "task package "+p+": ") {
		t.Fatalf("error %q, want it to start with the path and contain %q", err, want)
	}
}

const testConfig = `{"Env":["A=1","PATH=/bin"],"WorkingDir":"/work","User":"1000:1000","Volumes":{"/data":{}},"Entrypoint":null,"Cmd":["sh"]}`

func TestSquashfsAndGVMI(t *testing.T) {
	sq := mksquashfs(t)
	sb, err := ReadSuperblock(bytes.NewReader(sq), int64(len(sq)))
	must(t, err)

	im, err := Open(write(t, sq))
	must(t, err)
	if im.Format != FormatSquashfs || im.SquashfsSize != sb.BytesUsed || !im.Format.Squashfs() {
		t.Fatalf("plain squashfs: %+v, bytes_used %d", im, sb.BytesUsed)
	}

	gvmi := AppendTrailer(append([]byte(nil), sq...), []byte(testConfig))
	im, err = Open(write(t, gvmi))
	must(t, err)
	if im.Format != FormatGVMI || im.SquashfsSize != sb.BytesUsed {
		t.Fatalf("GVMI: %+v", im)
	}
	c := im.Config
	if strings.Join(c.Env, ",") != "A=1,PATH=/bin" || c.WorkingDir != "/work" || c.User != "1000:1000" ||
		strings.Join(c.VolumePaths(), ",") != "/data" || strings.Join(c.Cmd, ",") != "sh" {
		t.Fatalf("GVMI config: %+v", c)
	}
}

func TestCorruptPackagesAreRefused(t *testing.T) {
	sq := mksquashfs(t)
	gvmi := AppendTrailer(append([]byte(nil), sq...), []byte(testConfig))
	n := len(gvmi)

	badCRC := append([]byte(nil), gvmi...)
	badCRC[n-8-5] ^= 0x20 // a byte of the JSON
	wantErr(t, badCRC, "GVMI config CRC32 mismatch (stored 0x")

	badDigits := append([]byte(nil), gvmi...)
	copy(badDigits[n-8:], "0000x123")
	wantErr(t, badDigits, `config length "0000x123" is not 8 decimal digits`)

	tooLong := append([]byte(nil), gvmi...)
	copy(tooLong[n-8:], "00999999")
	wantErr(t, tooLong, "config length 999999 does not fit")

	badJSON := AppendTrailer(append([]byte(nil), sq...), []byte(`{"Env":[1]}`))
	wantErr(t, badJSON, "GVMI config is not valid JSON")

	badEnv := AppendTrailer(append([]byte(nil), sq...), []byte(`{"Env":["NOEQUALS"]}`))
	wantErr(t, badEnv, `GVMI config: Env[0] "NOEQUALS" is not KEY=value`)

	sb, _ := ReadSuperblock(bytes.NewReader(sq), int64(len(sq)))
	wantErr(t, sq[:sb.BytesUsed-100], "squashfs truncated: the superblock says")
	wantErr(t, sq[:50], "squashfs truncated: 50 bytes")

	wantErr(t, []byte("#!/bin/sh\necho not an image\n"), ErrUnknownFormat.Error())
	wantErr(t, []byte{}, ErrUnknownFormat.Error())
}

// layerTar is a layer with a file, a directory, a symlink and a hard link.
func layerTar(t *testing.T, extra ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		must(t, tw.WriteHeader(h))
		if h.Size > 0 {
			_, err := io.WriteString(tw, body)
			must(t, err)
		}
	}
	add(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, "root:x:0:0::/root:/bin/sh\ngolem:x:1000:1000::/home:/bin/sh\n")
	add(&tar.Header{Name: "ro/", Typeflag: tar.TypeDir, Mode: 0o555}, "")
	add(&tar.Header{Name: "ro/marker", Typeflag: tar.TypeReg, Mode: 0o4755}, "marker\n")
	add(&tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/ro/marker"}, "")
	add(&tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "ro/marker"}, "")
	add(&tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}, "")
	for _, h := range extra {
		add(h, "x")
	}
	must(t, tw.Close())
	return buf.Bytes()
}

func testImage(t *testing.T, layer []byte) v1.Image {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil })
	must(t, err)
	img, err := mutate.AppendLayers(empty.Image, l)
	must(t, err)
	var c v1.Config
	must(t, json.Unmarshal([]byte(testConfig), &c))
	img, err = mutate.Config(img, c)
	must(t, err)
	return img
}

// dockerArchive writes img as `docker save` would.
func dockerArchive(t *testing.T, img v1.Image) string {
	p := filepath.Join(t.TempDir(), "image.tar")
	must(t, tarball.WriteToFile(p, nil, img))
	return p
}

// ociArchive writes img as an OCI layout in a tar.
func ociArchive(t *testing.T, img v1.Image) string {
	dir := filepath.Join(t.TempDir(), "layout")
	lp, err := layout.Write(dir, empty.Index)
	must(t, err)
	must(t, lp.AppendImage(img))
	p := filepath.Join(t.TempDir(), "oci.tar")
	out, err := exec.Command("tar", "-C", dir, "-cf", p, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	return p
}

func TestArchives(t *testing.T) {
	img := testImage(t, layerTar(t))
	for name, p := range map[string]string{"docker": dockerArchive(t, img), "oci": ociArchive(t, img)} {
		t.Run(name, func(t *testing.T) {
			im, err := Open(p)
			must(t, err)
			want := map[string]Format{"docker": FormatDockerArchive, "oci": FormatOCI}[name]
			if im.Format != want || im.Format.Squashfs() {
				t.Fatalf("format %s, want %s", im.Format, want)
			}
			if im.Config.WorkingDir != "/work" || strings.Join(im.Config.VolumePaths(), ",") != "/data" || im.Config.User != "1000:1000" {
				t.Fatalf("config %+v", im.Config)
			}
			dir := filepath.Join(t.TempDir(), "rootfs")
			must(t, im.Extract(dir, 0))
			b, err := os.ReadFile(filepath.Join(dir, "hard"))
			if err != nil || string(b) != "marker\n" {
				t.Fatalf("hard link: %q %v", b, err)
			}
			if l, err := os.Readlink(filepath.Join(dir, "link")); err != nil || l != "/ro/marker" {
				t.Fatalf("symlink: %q %v", l, err)
			}
			fi, err := os.Stat(filepath.Join(dir, "ro", "marker"))
			must(t, err)
			if fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
				t.Fatalf("marker mode %v", fi.Mode())
			}
			if fi, err := os.Stat(filepath.Join(dir, "ro")); err != nil || fi.Mode().Perm() != 0o555 {
				t.Fatalf("ro dir: %v %v", fi, err)
			}
			if _, err := os.Lstat(filepath.Join(dir, "dev", "null")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("device node extracted: %v", err)
			}
		})
	}
}

func TestHostileArchives(t *testing.T) {
	outside := t.TempDir()
	cases := map[string][]*tar.Header{
		"dotdot":         {{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o644}},
		"through-link":   {{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside}, {Name: "out/escape", Typeflag: tar.TypeReg, Mode: 0o644}},
		"hardlink-out":   {{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}, {Name: "../escape", Typeflag: tar.TypeReg}},
		"hardlink-links": {{Name: "s", Typeflag: tar.TypeSymlink, Linkname: outside + "/f"}, {Name: "h2", Typeflag: tar.TypeLink, Linkname: "s"}},
	}
	must(t, os.WriteFile(filepath.Join(outside, "f"), []byte("host"), 0o644))
	for name, extra := range cases {
		t.Run(name, func(t *testing.T) {
			layer := layerTar(t, extra...)
			// gvpn's own untar refuses each of them...
			root, err := os.OpenRoot(t.TempDir())
			must(t, err)
			defer root.Close()
			if err := untar(root, bytes.NewReader(layer), false, 0); err == nil {
				t.Error("untar accepted a hostile layer")
			}
			// ...and go-containerregistry's flattening refuses or drops
			// them before: either way nothing lands outside the root.
			im, err := Open(dockerArchive(t, testImage(t, layer)))
			if err == nil {
				_ = im.Extract(filepath.Join(t.TempDir(), "rootfs"), 0)
			}
			if _, err := os.Lstat(filepath.Join(outside, "escape")); err == nil {
				t.Fatal("a file was written outside the root")
			}
			if b, _ := os.ReadFile(filepath.Join(outside, "f")); string(b) != "host" {
				t.Fatalf("the file outside was changed: %q", b)
			}
		})
	}
}

func TestTruncatedArchivesAreRefused(t *testing.T) {
	img := testImage(t, layerTar(t))
	for _, p := range []string{dockerArchive(t, img), ociArchive(t, img)} {
		b, err := os.ReadFile(p)
		must(t, err)
		wantErr(t, b[:len(b)/2+100], "truncated")
	}
}

func TestCorruptOCILayerIsRefused(t *testing.T) {
	p := ociArchive(t, testImage(t, layerTar(t)))
	im, err := Open(p)
	must(t, err)
	layers, err := im.archive.image().Layers()
	must(t, err)
	d, err := layers[0].Digest()
	must(t, err)
	// Rewrite the tar with one byte of the layer blob changed.
	b, err := os.ReadFile(p)
	must(t, err)
	var out bytes.Buffer
	tr, tw := tar.NewReader(bytes.NewReader(b)), tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		must(t, err)
		body, err := io.ReadAll(tr)
		must(t, err)
		if strings.HasSuffix(h.Name, d.Hex) {
			body[len(body)/2] ^= 0xff
		}
		must(t, tw.WriteHeader(h))
		_, err = tw.Write(body)
		must(t, err)
	}
	must(t, tw.Close())
	bad := write(t, out.Bytes())
	im, err = Open(bad)
	if err == nil {
		err = im.Extract(filepath.Join(t.TempDir(), "rootfs"), 0)
	}
	if err == nil || !strings.Contains(err.Error(), "digest mismatch") && !strings.Contains(err.Error(), "gzip") && !strings.Contains(err.Error(), "flate") {
		t.Fatalf("corrupt layer: %v", err)
	}
}

func TestExtractSquashfsIsNotAnArchive(t *testing.T) {
	im, err := Open(write(t, mksquashfs(t)))
	must(t, err)
	if err := im.Extract(t.TempDir(), 0); !errors.Is(err, ErrNotArchive) {
		t.Fatalf("Extract of a squashfs: %v", err)
	}
}

func TestExtractLimit(t *testing.T) {
	im, err := Open(dockerArchive(t, testImage(t, layerTar(t))))
	must(t, err)
	if err := im.Extract(filepath.Join(t.TempDir(), "rootfs"), 20); err == nil || !strings.Contains(err.Error(), "over the 20-byte limit") {
		t.Fatalf("a 20-byte limit: %v", err)
	}
	must(t, im.Extract(filepath.Join(t.TempDir(), "rootfs"), 1<<20))
}
