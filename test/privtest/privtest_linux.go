// Package privtest holds the helpers that privileged tests share: a skip with
// a clear reason when the test cannot run here, and throwaway network
// namespaces that are removed when the test ends.
package privtest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/gvpn/gvpn/netcfg/nsthread"
)

// RequireRoot skips t unless the process can create TAP devices and network
// namespaces: it must run as root and /dev/net/tun must exist.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create TAP devices and network namespaces; run `sudo make test`")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("skipped: /dev/net/tun is not available: %v", err)
	}
}

// UniqueName returns prefix followed by 8 random hex digits. Names of test
// namespaces and links are made with it so that parallel tests and leftover
// objects from a crashed run never collide.
func UniqueName(prefix string) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b[:])
}

// NewNetns creates a named network namespace (visible to `ip netns`) whose
// name starts with prefix, and removes it when the test ends. The calling
// goroutine's namespace is left as it was.
func NewNetns(t testing.TB, prefix string) (name string, h netns.NsHandle) {
	t.Helper()
	RequireRoot(t)
	name = UniqueName(prefix)
	h, err := nsthread.NewNamed(name)
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		h.Close()
		if err := nsthread.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return name, h
}

// NewNetnsWithHosts is NewNetns for a namespace that stands for a
// payload's own machine: it also has its own hosts file, which `ip netns
// exec` binds over /etc/hosts there (/etc/netns/NAME/hosts, holding only
// localhost at first), removed with the namespace. It returns the
// namespace's name and the hosts file's path.
func NewNetnsWithHosts(t testing.TB, prefix string) (name, hosts string) {
	t.Helper()
	name, _ = NewNetns(t, prefix)
	dir := filepath.Join("/etc/netns", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(dir)
		os.Remove("/etc/netns") // only if empty: others may use it
	})
	hosts = filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1\tlocalhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return name, hosts
}
