// Package docker tests the lab in Docker containers, as root, against the
// machine's own engine: every provider node a container of its own (the
// ExeUnit stand-in and a real gvpn-runtime), the hub another, frames
// crossing a Docker network as UDP; faults are real (network disconnect,
// pause, kill, restart). The images are built offline the way `make
// images` builds them. Without an engine the tests skip and say why.
package docker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/test/dockerlab"
	"github.com/gvpn/gvpn/test/privtest"
)

var (
	labBin string
	// image is the lab image of this run; "" when the tests skip.
	image string
	// skipReason says why there is no image.
	skipReason string
	// buildErr is a failed image build: every test fails with it.
	buildErr error
	// dangling are the dangling images before the suite.
	dangling []string
)

var docker = dockerlab.CLI{}

// BinDirEnv names a directory with the gvpn binaries for the images (bin/
// after make build); without it the suite builds them.
const BinDirEnv = "GVPN_DOCKER_BINDIR"

func TestMain(m *testing.M) {
	code := run(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	switch {
	case os.Geteuid() != 0:
		skipReason = "needs root to drive the Docker engine and debootstrap; run `sudo make test`"
	default:
		if err := docker.Ping(ctx); err != nil {
			skipReason = err.Error()
		}
	}
	if skipReason != "" {
		return m.Run()
	}
	out, _ := docker.Run(ctx, "images", "-q", "--no-trunc", "-f", "dangling=true")
	dangling = lines(out)
	// The images hold binaries without the race detector, as make build
	// makes them: they build faster, and make test passes bin/ itself
	// (BinDirEnv), so that the suite uses the image make images made.
	dir := os.Getenv(BinDirEnv)
	if dir == "" {
		var cleanup func()
		var err error
		if dir, cleanup, err = privtest.Binaries(false, dockerlab.LabBinaries...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer cleanup()
	}
	labBin = filepath.Join(dir, "gvpn-lab")
	t0 := time.Now()
	im, err := dockerlab.Build(ctx, docker, dockerlab.BuildConfig{BinDir: dir, Dockerfile: "../../Dockerfile", Progress: os.Stderr})
	if err != nil {
		buildErr = err
	} else {
		image = im.Lab
		fmt.Fprintf(os.Stderr, "images ready in %s: %s, %s (built %v)\n", time.Since(t0).Round(time.Second), im.Base, im.Lab, im.Built)
	}
	code := m.Run()
	if err == nil && slices.Contains(im.Built, im.Lab) {
		// The suite's own binaries made this image: it goes with the
		// suite. The base stays, as make images' cache.
		if _, err := docker.Run(context.Background(), "rmi", im.Lab); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	out, _ = docker.Run(context.Background(), "images", "-q", "--no-trunc", "-f", "dangling=true")
	for _, id := range lines(out) {
		if !slices.Contains(dangling, id) {
			fmt.Fprintf(os.Stderr, "the suite left a dangling image: %s\n", id)
			code = 1
		}
	}
	return code
}

// requireImage skips without an engine and fails without an image.
func requireImage(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip("skipped: " + skipReason)
	}
	if buildErr != nil {
		t.Fatalf("building the images: %v", buildErr)
	}
}

func lines(s string) []string {
	var out []string
	for _, l := range splitLines(s) {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}
