package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// archive is an image read from a tar: `docker save` output or an OCI
// layout.
type archive interface {
	image() v1.Image
}

type v1Archive struct{ img v1.Image }

func (a v1Archive) image() v1.Image { return a.img }

// openArchive reads the tar at p through to its end (a truncated tar is
// refused here), then opens the image it holds.
func openArchive(p string) (*Image, error) {
	names, err := tarNames(p)
	if err != nil {
		return nil, err
	}
	var (
		img    v1.Image
		format Format
	)
	switch {
	case names["manifest.json"]:
		format = FormatDockerArchive
		img, err = tarball.ImageFromPath(p, nil)
	case names["oci-layout"] && names["index.json"]:
		format = FormatOCI
		img, err = ociImage(p)
	default:
		return nil, fmt.Errorf("%w: a tar without manifest.json (docker save) or oci-layout and index.json (OCI)", ErrUnknownFormat)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", format, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("%s: image config: %w", format, err)
	}
	if _, err := img.Layers(); err != nil {
		return nil, fmt.Errorf("%s: layers: %w", format, err)
	}
	raw, _ := json.Marshal(cf.Config)
	c, err := parseConfig("image config", raw)
	if err != nil {
		return nil, err
	}
	return &Image{Path: p, Format: format, Config: c, archive: v1Archive{img}}, nil
}

// tarNames reads the whole tar and returns the cleaned names of its
// regular files. Anything that is not a complete tar is an error.
func tarNames(p string) (map[string]bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	names := map[string]bool{}
	entries := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if entries > 0 && errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("tar truncated after %d entries", entries)
			}
			return nil, fmt.Errorf("%w (%v)", ErrUnknownFormat, err)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return nil, fmt.Errorf("tar truncated or corrupt in %q: %v", h.Name, err)
		}
		entries++
		if h.Typeflag == tar.TypeReg {
			names[path.Clean(h.Name)] = true
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: no files in it", ErrUnknownFormat)
	}
	return names, nil
}

// tarEntry returns the content of the regular file name in the tar at p.
// The OCI layout is read this way, straight from the archive, rather than
// unpacked to a temporary directory for go-containerregistry's layout
// package: no second copy of the layers on the provider's disk, and no
// temporary directory to clean up after a failed deploy.
func tarEntry(p, name string) (io.ReadCloser, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, err
	}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			f.Close()
			if errors.Is(err, io.EOF) {
				return nil, 0, fmt.Errorf("%s is missing", name)
			}
			return nil, 0, err
		}
		if h.Typeflag == tar.TypeReg && path.Clean(h.Name) == name {
			return struct {
				io.Reader
				io.Closer
			}{tr, f}, h.Size, nil
		}
	}
}

func tarBytes(p, name string) ([]byte, error) {
	rc, n, err := tarEntry(p, name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if n > maxConfig*4 {
		return nil, fmt.Errorf("%s: %d bytes is too large for metadata", name, n)
	}
	return io.ReadAll(rc)
}

func blobName(h v1.Hash) string { return path.Join("blobs", h.Algorithm, h.Hex) }

// ociImage opens the image of the OCI layout in the tar at p: the
// index's manifest for linux and this machine's architecture, or its only
// manifest (nested indexes are followed).
func ociImage(p string) (v1.Image, error) {
	b, err := tarBytes(p, "index.json")
	if err != nil {
		return nil, err
	}
	for depth := 0; depth < 4; depth++ {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("index: %w", err)
		}
		d, err := pickManifest(idx.Manifests)
		if err != nil {
			return nil, err
		}
		raw, err := tarBytes(p, blobName(d.Digest))
		if err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		if got, _, _ := v1.SHA256(bytes.NewReader(raw)); got != d.Digest {
			return nil, fmt.Errorf("manifest %s: digest mismatch (content is %s)", d.Digest, got)
		}
		if d.MediaType.IsIndex() {
			b = raw
			continue
		}
		return partial.CompressedToImage(&ociCore{path: p, manifest: raw, mediaType: d.MediaType})
	}
	return nil, errors.New("index: nested too deep")
}

func pickManifest(ds []v1.Descriptor) (v1.Descriptor, error) {
	if len(ds) == 0 {
		return v1.Descriptor{}, errors.New("index lists no manifest")
	}
	if len(ds) == 1 {
		return ds[0], nil
	}
	for _, d := range ds {
		if d.Platform != nil && d.Platform.OS == "linux" && d.Platform.Architecture == runtime.GOARCH {
			return d, nil
		}
	}
	return v1.Descriptor{}, fmt.Errorf("index lists %d manifests, none for linux/%s", len(ds), runtime.GOARCH)
}

// ociCore is an image of an OCI layout in a tar, for
// partial.CompressedToImage.
type ociCore struct {
	path      string
	manifest  []byte
	mediaType types.MediaType
}

func (c *ociCore) RawManifest() ([]byte, error)        { return c.manifest, nil }
func (c *ociCore) MediaType() (types.MediaType, error) { return c.mediaType, nil }
func (c *ociCore) RawConfigFile() ([]byte, error)      { return c.blob(c.configDigest) }
func (c *ociCore) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	return &ociBlob{core: c, digest: h}, nil
}

func (c *ociCore) configDigest() (v1.Hash, error) {
	m, err := v1.ParseManifest(bytes.NewReader(c.manifest))
	if err != nil {
		return v1.Hash{}, err
	}
	return m.Config.Digest, nil
}

func (c *ociCore) blob(digest func() (v1.Hash, error)) ([]byte, error) {
	h, err := digest()
	if err != nil {
		return nil, err
	}
	return tarBytes(c.path, blobName(h))
}

// ociBlob is one layer of an ociCore, read from the tar when asked.
type ociBlob struct {
	core   *ociCore
	digest v1.Hash
}

func (b *ociBlob) Digest() (v1.Hash, error) { return b.digest, nil }

// Compressed reads the layer and fails at its end if the bytes do not
// have the layer's digest: a corrupt layer is refused, not extracted.
func (b *ociBlob) Compressed() (io.ReadCloser, error) {
	rc, _, err := tarEntry(b.core.path, blobName(b.digest))
	if err != nil {
		return nil, err
	}
	return &verified{rc: rc, want: b.digest, h: sha256.New()}, nil
}

// verified checks, at EOF, that what was read has the digest want.
type verified struct {
	rc   io.ReadCloser
	want v1.Hash
	h    hash.Hash
}

func (v *verified) Read(p []byte) (int, error) {
	n, err := v.rc.Read(p)
	v.h.Write(p[:n])
	if errors.Is(err, io.EOF) {
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want.Hex {
			return n, fmt.Errorf("layer %s: digest mismatch (content is sha256:%s)", v.want, got)
		}
	}
	return n, err
}

func (v *verified) Close() error { return v.rc.Close() }
func (b *ociBlob) Size() (int64, error) {
	rc, n, err := tarEntry(b.core.path, blobName(b.digest))
	if err != nil {
		return 0, err
	}
	rc.Close()
	return n, nil
}
func (b *ociBlob) MediaType() (types.MediaType, error) {
	m, err := v1.ParseManifest(bytes.NewReader(b.core.manifest))
	if err != nil {
		return "", err
	}
	for _, l := range m.Layers {
		if l.Digest == b.digest {
			return l.MediaType, nil
		}
	}
	return "", fmt.Errorf("layer %s is not in the manifest", b.digest)
}
