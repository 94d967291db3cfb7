package privtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BinDirEnv names a directory that already holds the gvpn binaries (as
// `make build` or the Docker test image leaves them). When it is set,
// Binaries uses them instead of building, so that prebuilt test binaries
// run where there is no Go toolchain.
const BinDirEnv = "GVPN_TEST_BINDIR"

// Binaries returns a directory holding the named commands of ./cmd
// ("gvpn-runtime", "gvpn-agent", "gvpn-lab"), next to each other as after
// `make build`, and a function that removes what it built. Without
// BinDirEnv it builds them into a fresh directory (readable by everyone,
// so a test may run them as another user), with the race detector when
// race is set, else static (CGO_ENABLED=0) as `make build` makes them: a
// runtime whose sandbox has an image as its root runs its shim there, with
// none of the host's libraries. It is meant for TestMain, before any test
// runs.
func Binaries(race bool, cmds ...string) (dir string, cleanup func(), err error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		for _, c := range cmds {
			if _, err := os.Stat(filepath.Join(dir, c)); err != nil {
				return "", nil, fmt.Errorf("%s=%s: %w", BinDirEnv, dir, err)
			}
		}
		return dir, func() {}, nil
	}
	dir, err = os.MkdirTemp("", "gvpn-test-bin-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	if err := os.Chmod(dir, 0o755); err != nil {
		cleanup()
		return "", nil, err
	}
	for _, c := range cmds {
		args := []string{"build", "-o", filepath.Join(dir, c)}
		if race {
			args = append(args, "-race")
		}
		build := exec.Command("go", append(args, "github.com/gvpn/gvpn/cmd/"+c)...)
		if !race {
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
		if out, err := build.CombinedOutput(); err != nil {
			cleanup()
			return "", nil, fmt.Errorf("go build %s (set %s to use prebuilt binaries): %v\n%s", c, BinDirEnv, err, out)
		}
	}
	return dir, cleanup, nil
}

// Main is the TestMain of a suite that runs gvpn binaries: it gets the
// named commands with Binaries (race-enabled), hands their directory to
// found before any test runs, runs the tests, removes what it built and
// exits with the tests' code. It exits 1, saying why, when the binaries
// cannot be had.
func Main(m *testing.M, found func(dir string), cmds ...string) {
	run(m, true, found, cmds)
}

// MainStatic is Main with static binaries, as `make build` makes them,
// for a suite whose runtime runs its sandbox's shim inside an image's
// root, which has none of the host's libraries (the race detector needs
// them).
func MainStatic(m *testing.M, found func(dir string), cmds ...string) {
	run(m, false, found, cmds)
}

func run(m *testing.M, race bool, found func(dir string), cmds []string) {
	dir, cleanup, err := Binaries(race, cmds...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	found(dir)
	code := m.Run()
	cleanup()
	os.Exit(code)
}
