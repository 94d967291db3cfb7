package labcli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/gvpn/gvpn/test/dockerlab"
)

const imagesUsage = `gvpn-lab images — build the Docker lab's images offline (make images runs this).

Usage:
  gvpn-lab images [--bin DIR] [--dockerfile FILE] [--cache-dir DIR]

Two images, each tagged by the content that made it and reused while that
content is unchanged:
  gvpn-base:<hash>  a Debian root file system made with debootstrap (minbase
                    plus iproute2, iputils-ping, iperf3, curl) and imported
                    with docker import; the tarball is cached in --cache-dir
                    by its package list, so only the first build downloads
  gvpn-lab:<hash>   the Dockerfile's stage "lab" FROM that base: the static
                    binaries of make build (gvpn-runtime, gvpn-agent, gvpn-lab)
No registry is needed. The last line on stdout is the lab image's tag.

Examples:
  sudo make images
  sudo bin/gvpn-lab images --bin bin --dockerfile Dockerfile

Flags:
`

// imageFlags say where the lab image comes from; up --docker and demo
// --docker build it (or reuse it) with the same code as images.
type imageFlags struct {
	bin, dockerfile, cacheDir string
}

func (f *imageFlags) add(fs *cmdFlags) {
	fs.StringVar(&f.bin, "bin", "", "`dir` with the binaries for the image (default: gvpn-lab's own directory)")
	fs.StringVar(&f.dockerfile, "dockerfile", "", "the project's Dockerfile (default: ./Dockerfile, else next to the bin dir)")
	fs.StringVar(&f.cacheDir, "cache-dir", dockerlab.DefaultCacheDir, "`dir` caching the debootstrap root file system")
}

// config fills in the defaults.
func (f *imageFlags) config(progress io.Writer) (dockerlab.BuildConfig, error) {
	cfg := dockerlab.BuildConfig{BinDir: f.bin, Dockerfile: f.dockerfile, CacheDir: f.cacheDir, Progress: progress}
	if cfg.BinDir == "" {
		self, err := os.Executable()
		if err != nil {
			return cfg, err
		}
		cfg.BinDir = filepath.Dir(self)
	}
	for _, b := range dockerlab.LabBinaries {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, b)); err != nil {
			return cfg, usagef("--bin %s has no %s (run make build, or pass --bin)", cfg.BinDir, b)
		}
	}
	if cfg.Dockerfile == "" {
		for _, p := range []string{"Dockerfile", filepath.Join(cfg.BinDir, "..", "Dockerfile")} {
			if _, err := os.Stat(p); err == nil {
				cfg.Dockerfile = p
				break
			}
		}
		if cfg.Dockerfile == "" {
			return cfg, usagef("no Dockerfile here nor next to %s (run from the project, or pass --dockerfile)", cfg.BinDir)
		}
	}
	return cfg, nil
}

func imagesCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("images", imagesUsage, stdout)
	var f imageFlags
	f.add(fs)
	if _, code, ok := parseFlags(fs, args, stderr, 0); !ok {
		return code
	}
	cfg, err := f.config(stderr)
	if err != nil {
		return fail(stderr, "images", err)
	}
	if err := requireRoot("debootstrap and the Docker engine need root"); err != nil {
		return fail(stderr, "images", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	t0 := time.Now()
	im, err := dockerlab.Build(ctx, dockerlab.CLI{}, cfg)
	if err != nil {
		return fail(stderr, "images", err)
	}
	fmt.Fprintf(stderr, "gvpn-lab images: ready in %s (built: %d of 2)\n", time.Since(t0).Round(100*time.Millisecond), len(im.Built))
	fmt.Fprintln(stdout, im.Base)
	fmt.Fprintln(stdout, im.Lab)
	return 0
}
