package labcli

import (
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/gvpn/gvpn/runtime/image"
	"github.com/gvpn/gvpn/test/golemnet"
)

const mkimageUsage = `gvpn-lab mkimage — make a GVMI, the task package a requestor's demand names,
offline and without Docker.

gvmkit-build turns a Docker image into a GVMI: a squashfs of the image's files
followed by its settings (Env, WorkingDir, User, Volumes). This makes the same
from a directory, or from the host's static busybox alone (--busybox: sh, ip,
wget, sha256sum, httpd and every other applet, what gvpn-lab demo --image
needs). The result is read back with the runtime's own reader before it is
kept. It needs mksquashfs (squashfs-tools) and, for --busybox, busybox-static.

Usage:
  gvpn-lab mkimage --out FILE (--root DIR | --busybox) [--env KEY=VALUE]...
                   [--workdir DIR] [--user USER] [--volume PATH]...

Examples:
  gvpn-lab mkimage --busybox --out demo.gvmi
  sudo gvpn-lab demo --image demo.gvmi        # every node deploys it, as the ExeUnit does
  gvpn-lab mkimage --root ./rootfs --env PATH=/usr/bin:/bin --workdir /app \
                   --user app --volume /data --out app.gvmi
  gvpn-runtime -w /tmp/act --task-package app.gvmi deploy --   # what deploy makes of it

Flags:
`

func mkimageCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("mkimage", mkimageUsage, stdout)
	out := fs.String("out", "", "the GVMI `file` to write (required)")
	root := fs.String("root", "", "the `directory` whose files the image holds, owners as they are")
	busybox := fs.Bool("busybox", false, "the image is the host's static busybox with its applets (instead of --root)")
	var env, vols multiFlag
	fs.Var(&env, "env", "a `KEY=VALUE` every payload process starts with (repeatable; default PATH=/bin with --busybox)")
	workdir := fs.String("workdir", "", "the absolute `directory` processes start in")
	user := fs.String("user", "", "who processes run as: a `user` name or uid[:gid] of the image (default root)")
	fs.Var(&vols, "volume", "an absolute `path` the image declares a volume: deploy lists it (repeatable)")
	if _, code, ok := parseFlags(fs, args, stderr, 0); !ok {
		return code
	}
	switch {
	case *out == "":
		return fail(stderr, "mkimage", usagef("--out is required (see gvpn-lab mkimage --help)"))
	case (*root == "") == !*busybox:
		return fail(stderr, "mkimage", usagef("give one of --root DIR and --busybox"))
	}
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fail(stderr, "mkimage", usagef("--env %q is not KEY=VALUE", kv))
		}
	}
	if *workdir != "" && !path.IsAbs(*workdir) {
		return fail(stderr, "mkimage", usagef("--workdir %q is not an absolute path", *workdir))
	}
	cfg := image.Config{Env: env, WorkingDir: *workdir, User: *user}
	for _, v := range vols {
		if !path.IsAbs(v) {
			return fail(stderr, "mkimage", usagef("--volume %q is not an absolute path", v))
		}
		if cfg.Volumes == nil {
			cfg.Volumes = map[string]struct{}{}
		}
		cfg.Volumes[path.Clean(v)] = struct{}{}
	}
	dir := *root
	if *busybox {
		tmp, err := os.MkdirTemp("", "gvpn-mkimage-")
		if err != nil {
			return fail(stderr, "mkimage", err)
		}
		defer os.RemoveAll(tmp)
		if err := golemnet.BusyboxRoot(tmp); err != nil {
			return fail(stderr, "mkimage", err)
		}
		dir = tmp
		if len(cfg.Env) == 0 {
			cfg.Env = []string{"PATH=/bin"}
		}
		cfg.Cmd = []string{"/bin/sh"}
	} else if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fail(stderr, "mkimage", usagef("--root %q is not a directory", dir))
	}
	im, err := golemnet.MakeGVMI(dir, *out, cfg)
	if err != nil {
		return fail(stderr, "mkimage", err)
	}
	fi, _ := os.Stat(im.Path)
	fmt.Fprintf(stdout, "gvpn-lab mkimage: wrote %s (%s, %.1f MB): env %s, workdir %s, user %s, volumes %s\n",
		im.Path, im.Format, float64(fi.Size())/1e6, orNone(strings.Join(im.Config.Env, " ")),
		orNone(im.Config.WorkingDir), orDefault(im.Config.User, "root"), orNone(strings.Join(im.Config.VolumePaths(), " ")))
	return 0
}

func orNone(s string) string { return orDefault(s, "none") }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
