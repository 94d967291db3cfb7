//go:build unix

package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Why RemoveStaleSocket keeps a socket file; errors wrap one of them.
var (
	// ErrSocketInUse: something answers on the socket, or the probe
	// could not prove that nothing does.
	ErrSocketInUse = errors.New("a process is listening on the socket")
	// ErrSocketNotOurs: the socket belongs to another user, in a
	// directory that is not ours alone.
	ErrSocketNotOurs = errors.New("the socket is not ours")
)

// StaleProbeTimeout bounds the dial with which RemoveStaleSocket checks
// whether a socket file still has a listener.
const StaleProbeTimeout = time.Second

// RemoveStaleSocket removes the unix socket file at path that a dead
// process left behind, so that a listener can bind there again. It is the
// module's one rule for it: a socket is removed only when both
//
//   - it is ours: the file belongs to our effective uid, or it sits in a
//     directory of ours that nobody else may write to (a runtime's socket
//     directory), and
//   - nobody answers on it: a dial is refused (ECONNREFUSED). Any other
//     outcome — a connection, a full backlog, a permission error, the
//     probe timing out — does not prove it dead.
//
// A missing path is fine (nil); a path that is not a socket is never
// removed. Refusals wrap ErrSocketInUse or ErrSocketNotOurs and name the
// path.
func RemoveStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; not removing it", path)
	}
	if err := ours(path, fi); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), StaleProbeTimeout)
	defer cancel()
	c, err := new(net.Dialer).DialContext(ctx, "unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: %w", path, ErrSocketInUse)
	}
	if errors.Is(err, syscall.ENOENT) {
		return nil // removed meanwhile
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: %w (probe: %v)", path, ErrSocketInUse, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// ours checks the ownership half of RemoveStaleSocket's rule.
func ours(path string, fi os.FileInfo) error {
	me := uint32(os.Geteuid())
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == me {
		return nil
	}
	dir := filepath.Dir(path)
	if di, err := os.Stat(dir); err == nil {
		if ds, ok := di.Sys().(*syscall.Stat_t); ok && ds.Uid == me && di.Mode().Perm()&0o022 == 0 {
			return nil
		}
	}
	return fmt.Errorf("%s: %w (it belongs to uid %d, in %s, which others may write to)", path, ErrSocketNotOurs, st.Uid, dir)
}
