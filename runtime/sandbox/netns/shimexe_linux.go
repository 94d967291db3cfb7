//go:build linux

package netns

import (
	"debug/elf"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// A payload process starts as this executable (the shim, see
// MaybeRunShim), executed inside the payload's root. With an image that
// root has none of the host's libraries, so the executable must be linked
// statically, as gvpn-runtime is (CGO_ENABLED=0). A program linked
// dynamically (a test binary built with the race detector, which needs
// cgo) names a static one with UseShimBinary.
var (
	shimMu     sync.Mutex
	shimBinary *os.File // nil: /proc/self/exe
)

// UseShimBinary makes sandboxes with an image start their shim from path,
// a statically linked program whose main calls MaybeRunShim first, instead
// of the current executable. For programs that are linked dynamically,
// such as tests built with -race; gvpn-runtime does not need it.
func UseShimBinary(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("shim binary: %w", err)
	}
	if dynamic(f) {
		f.Close()
		return fmt.Errorf("shim binary %s is linked dynamically", path)
	}
	shimMu.Lock()
	defer shimMu.Unlock()
	if shimBinary != nil {
		shimBinary.Close()
	}
	shimBinary = f
	return nil
}

// imageShim returns the file to execute the shim from in an image's root
// (nil: /proc/self/exe), or an error when there is none that can run
// there.
func imageShim() (*os.File, error) {
	shimMu.Lock()
	defer shimMu.Unlock()
	if shimBinary != nil {
		return shimBinary, nil
	}
	if selfDynamic() {
		return nil, fmt.Errorf("%w: RootFS: this executable is linked dynamically, so its shim cannot run in an image's root (build it with CGO_ENABLED=0, or see UseShimBinary)", ErrBadConfig)
	}
	return nil, nil
}

var selfDynamic = sync.OnceValue(func() bool {
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return true
	}
	defer f.Close()
	return dynamic(f)
})

// dynamic reports whether an ELF executable asks for an interpreter (the
// dynamic loader); unreadable counts as dynamic.
func dynamic(f *os.File) bool {
	e, err := elf.NewFile(f)
	if err != nil {
		return true
	}
	for _, p := range e.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}
