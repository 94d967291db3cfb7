package netns

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
)

// DefaultPrefix is the netns name prefix used when Config.NamePrefix (or the
// prefix argument of NameFor, Cleanup, List) is empty.
const DefaultPrefix = "gvpn-"

// NameFor returns the network namespace name of the sandbox for workdir:
// prefix (DefaultPrefix when empty) followed by the first 12 hex digits of
// the SHA-256 of workdir's absolute, cleaned path. The same workdir always
// yields the same name, so a sandbox left behind by a crashed runtime is
// found again; different workdirs yield different names.
func NameFor(prefix, workdir string) string {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	abs, err := filepath.Abs(workdir)
	if err != nil {
		abs = filepath.Clean(workdir)
	}
	sum := sha256.Sum256([]byte(abs))
	return prefix + hex.EncodeToString(sum[:6])
}
