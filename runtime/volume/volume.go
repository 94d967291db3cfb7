// Package volume is the list of an activity's volumes: the places inside
// the payload's view of the file system that it may write, and the ones the
// ExeUnit reaches for `container:` transfers.
//
// deploy turns the default volume and the ExeUnit's --volume-override into a
// List (Plan), creates the directories in the workdir (Prepare), prints the
// host volumes as the deploy output's "vols", and stores the List for start.
// A sandbox then mounts each volume at its Path: the netns sandbox by bind
// mounts, a VM sandbox as shares. The ExeUnit maps a container path under a
// host volume's Path to <workdir>/<Name>/..., so Name is a plain directory
// name in the workdir.
package volume

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
)

// DefaultPath is the volume every activity gets, like the /golem/work of
// Golem's own images.
const DefaultPath = "/golem/work"

// Kind says what backs a volume.
type Kind string

const (
	// Host is a directory in the workdir, shared with the ExeUnit (the
	// only kind listed in deploy's "vols").
	Host Kind = "host"
	// RAM is a memory file system of Size bytes, private to the payload.
	RAM Kind = "ram"
	// Storage is a directory in the workdir that the ExeUnit does not
	// list for transfers; Size is the requestor's wish and is not enforced
	// by the netns sandbox.
	Storage Kind = "storage"
)

// Volume is one place the payload may write.
type Volume struct {
	// Name is the directory in the workdir (Host, Storage); empty for RAM.
	Name string `json:"name,omitempty"`
	// Path is where the payload sees it: absolute, clean, not "/".
	Path string `json:"path"`
	Kind Kind   `json:"kind"`
	// Size in bytes, for RAM (0 = the sandbox's default) and Storage.
	Size int64 `json:"size,omitempty"`
}

// List is an activity's volumes, sorted by Path, so that a volume nested in
// another (/in and /in/dst) comes after it and is mounted over it.
type List []Volume

// Vol is one entry of deploy's "vols" output, as the ExeUnit reads it.
type Vol struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// Vols returns the host volumes in the form of deploy's "vols" (never nil,
// so that it prints as []).
func (l List) Vols() []Vol {
	out := []Vol{}
	for _, v := range l {
		if v.Kind == Host {
			out = append(out, Vol{Name: v.Name, Path: v.Path})
		}
	}
	return out
}

// NameFor is the workdir directory of the volume at path: "vol-" and 16 hex
// digits of its SHA-256, so a deploy run twice names it the same.
func NameFor(p string) string {
	sum := sha256.Sum256([]byte(p))
	return "vol-" + hex.EncodeToString(sum[:8])
}

// Plan returns the activity's volumes: the default volume at DefaultPath
// plus what override (the --volume-override JSON, may be empty) asks for.
// An override for DefaultPath replaces the default. Errors name the path
// and what is wrong with it.
func Plan(override string) (List, error) {
	byPath := map[string]Volume{DefaultPath: {Name: NameFor(DefaultPath), Path: DefaultPath, Kind: Host}}
	if strings.TrimSpace(override) != "" {
		extra, err := ParseOverride(override)
		if err != nil {
			return nil, err
		}
		for _, v := range extra {
			byPath[v.Path] = v
		}
	}
	l := make(List, 0, len(byPath))
	for _, v := range byPath {
		l = append(l, v)
	}
	sort.Slice(l, func(i, j int) bool { return l[i].Path < l[j].Path })
	return l, nil
}

// DefaultRAMSize is the size of a RAM volume that names none.
const DefaultRAMSize = 64 << 20

// DefaultRAMLimit bounds all RAM volumes of an activity together when the
// agreement states no memory (no --mem-gib): a memory file system's pages
// belong to no process, so the OOM killer cannot free them by killing the
// payload; only a size limit keeps the host's memory safe.
const DefaultRAMLimit = 1 << 30

// CheckRAM refuses RAM volumes that would together take more than limit
// bytes of memory (a volume without a size counts as DefaultRAMSize); what
// says where limit comes from. The error names the volume that goes over.
func (l List) CheckRAM(limit int64, what string) error {
	var total int64
	for _, v := range l {
		if v.Kind != RAM {
			continue
		}
		size := v.Size
		if size <= 0 {
			size = DefaultRAMSize
		}
		total += size
		switch {
		case size > limit:
			return fmt.Errorf("--volume-override: volume %q: ram size %d bytes is more than the activity's memory, %d bytes (%s)", v.Path, size, limit, what)
		case total > limit:
			return fmt.Errorf("--volume-override: volume %q: with it the ram volumes take %d bytes, more than the activity's memory, %d bytes (%s)", v.Path, total, limit, what)
		}
	}
	return nil
}

// WithImage adds the volumes an image declares (its config's Volumes) to l
// as host volumes, as ya-runtime-vm lists a GVMI's volumes: a path l has
// already (the default volume, or the --volume-override's own kind for it)
// is kept as it is, and so is a path the sandbox provides itself (/tmp,
// /etc/...), which is returned in skipped instead. A path that is not
// absolute and clean is an error naming it.
func (l List) WithImage(paths []string) (out List, skipped []string, err error) {
	have := make(map[string]bool, len(l))
	for _, v := range l {
		have[v.Path] = true
	}
	out = append(List(nil), l...)
	for _, p := range paths {
		if have[p] {
			continue
		}
		v, err := hostVolume(p)
		if err != nil {
			if isReserved(p) {
				skipped = append(skipped, p)
				continue
			}
			return nil, nil, fmt.Errorf("the image's Volumes: %s", strings.TrimPrefix(err.Error(), "--volume-override: "))
		}
		have[p] = true
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, skipped, nil
}

func isReserved(p string) bool {
	for _, r := range reserved {
		if p == r || strings.HasPrefix(p, r+"/") {
			return true
		}
	}
	return false
}

// maxPath bounds a volume path; the kernel's PATH_MAX is 4096.
const maxPath = 1024

// ParseOverride decodes the ExeUnit's --volume-override: the Deploy
// command's volumes, either a list of paths (each a host volume) or a map
// of path to mount spec, {"host":{}}, {"ram":{"size":"1GiB"}} or
// {"storage":{"size":"10GiB"}}.
func ParseOverride(s string) (List, error) {
	var paths []string
	if err := json.Unmarshal([]byte(s), &paths); err == nil {
		l := make(List, 0, len(paths))
		for _, p := range paths {
			v, err := hostVolume(p)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	}
	var specs map[string]map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &specs); err != nil {
		return nil, fmt.Errorf("--volume-override: not a list of paths nor a map of path to mount spec: %v", err)
	}
	l := make(List, 0, len(specs))
	for p, spec := range specs {
		if len(spec) != 1 {
			return nil, fmt.Errorf("--volume-override: volume %q: want exactly one of host, ram, storage", p)
		}
		for kind, body := range spec {
			v, err := specVolume(p, Kind(kind), body)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
	}
	return l, nil
}

func hostVolume(p string) (Volume, error) {
	if err := checkPath(p); err != nil {
		return Volume{}, err
	}
	return Volume{Name: NameFor(p), Path: p, Kind: Host}, nil
}

func specVolume(p string, kind Kind, body json.RawMessage) (Volume, error) {
	if err := checkPath(p); err != nil {
		return Volume{}, err
	}
	var sized struct {
		Size json.RawMessage `json:"size"`
	}
	if err := json.Unmarshal(body, &sized); err != nil {
		return Volume{}, fmt.Errorf("--volume-override: volume %q: %s spec: %v", p, kind, err)
	}
	switch kind {
	case Host:
		return Volume{Name: NameFor(p), Path: p, Kind: Host}, nil
	case RAM, Storage:
		size, err := parseSize(sized.Size)
		if err != nil {
			return Volume{}, fmt.Errorf("--volume-override: volume %q: %s size: %v", p, kind, err)
		}
		v := Volume{Path: p, Kind: kind, Size: size}
		if kind == Storage {
			v.Name = NameFor(p)
		}
		return v, nil
	}
	return Volume{}, fmt.Errorf("--volume-override: volume %q: unknown kind %q (want host, ram or storage)", p, kind)
}

// reserved are paths the sandbox provides itself; a volume there would
// hide them.
var reserved = []string{"/proc", "/sys", "/dev", "/etc", "/tmp"}

func checkPath(p string) error {
	switch {
	case p == "" || p[0] != '/':
		return fmt.Errorf("--volume-override: volume path %q is not absolute", p)
	case len(p) > maxPath:
		return fmt.Errorf("--volume-override: volume path of %d bytes is too long (at most %d)", len(p), maxPath)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("--volume-override: volume path %q contains NUL", p)
	case path.Clean(p) != p:
		return fmt.Errorf("--volume-override: volume path %q is not clean (want %q)", p, path.Clean(p))
	case p == "/":
		return errors.New(`--volume-override: a volume cannot be "/"`)
	}
	if isReserved(p) {
		return fmt.Errorf("--volume-override: volume path %q is inside one of %s, which the sandbox provides itself", p, strings.Join(reserved, ", "))
	}
	return nil
}

// sizeUnits are the units a requestor's size may carry (what Golem's
// byte-size strings use), case-insensitive.
var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "ki": 1 << 10, "kib": 1 << 10,
	"m": 1e6, "mb": 1e6, "mi": 1 << 20, "mib": 1 << 20,
	"g": 1e9, "gb": 1e9, "gi": 1 << 30, "gib": 1 << 30,
	"t": 1e12, "tb": 1e12, "ti": 1 << 40, "tib": 1 << 40,
}

// maxSize bounds a size so that it fits an int64 with room.
const maxSize = 1 << 60

// parseSize reads a size: a JSON number of bytes or a string such as
// "512MiB", "1.5 GB", "1gi". Absent means 0.
func parseSize(raw json.RawMessage) (int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		s = string(raw) // a bare number
	}
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	f, err := strconv.ParseFloat(num, 64)
	mult, ok := sizeUnits[unit]
	if err != nil || !ok || f < 0 {
		return 0, fmt.Errorf("%q is not a size (e.g. 512MiB, 2GB, 1073741824)", s)
	}
	if f*mult > maxSize {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int64(f * mult), nil
}
