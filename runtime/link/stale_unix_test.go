//go:build unix

package link_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/gvpn/gvpn/runtime/link"
)

// deadSocket leaves a socket file at path with no listener behind it, as a
// process that died does.
func deadSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func TestRemoveStaleSocket(t *testing.T) {
	dir := t.TempDir()

	// Ours and dead: removed.
	dead := filepath.Join(dir, "dead.sock")
	deadSocket(t, dead)
	if err := link.RemoveStaleSocket(dead); err != nil || exists(dead) {
		t.Fatalf("dead socket of ours: %v (still there: %v)", err, exists(dead))
	}
	// Missing: nothing to do.
	if err := link.RemoveStaleSocket(dead); err != nil {
		t.Fatalf("missing socket: %v", err)
	}

	// Refusal 1: somebody answers.
	live := filepath.Join(dir, "live.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := link.RemoveStaleSocket(live); !errors.Is(err, link.ErrSocketInUse) || !exists(live) {
		t.Fatalf("live socket: %v (still there: %v), want ErrSocketInUse and the file kept", err, exists(live))
	}

	// Not a socket: never removed.
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o600)
	if err := link.RemoveStaleSocket(plain); err == nil || !exists(plain) {
		t.Fatalf("plain file: %v (still there: %v)", err, exists(plain))
	}
}

// TestRemoveStaleSocketNotOurs: a dead socket of another user is kept
// unless it sits in a directory only we may write to.
func TestRemoveStaleSocketNotOurs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a socket file to another user")
	}
	const nobody = 65534
	// A shared directory (like /tmp): sticky, writable by all.
	shared := t.TempDir()
	if err := os.Chmod(shared, 0o1777); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(shared, "theirs.sock")
	deadSocket(t, theirs)
	if err := os.Lchown(theirs, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := link.RemoveStaleSocket(theirs); !errors.Is(err, link.ErrSocketNotOurs) || !exists(theirs) {
		t.Fatalf("another user's dead socket in a shared directory: %v (still there: %v), want ErrSocketNotOurs and the file kept", err, exists(theirs))
	}

	// The same in a directory of ours nobody else may write to (a
	// runtime's socket directory, where QEMU made it): ours to clean.
	private := t.TempDir()
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	inOurs := filepath.Join(private, "qemu.sock")
	deadSocket(t, inOurs)
	if err := os.Lchown(inOurs, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := link.RemoveStaleSocket(inOurs); err != nil || exists(inOurs) {
		t.Fatalf("another user's dead socket in our directory: %v (still there: %v)", err, exists(inOurs))
	}
}
