package cli

import (
	"flag"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/network"
	"github.com/gvpn/gvpn/runtime/sandbox"
	"github.com/gvpn/gvpn/runtime/sandbox/netns"
	"github.com/gvpn/gvpn/runtime/volume"
)

// netnsKind runs the payload on this host, in a network namespace with
// its own mount, PID, IPC and UTS namespaces (runtime/sandbox/netns).
var netnsKind = &kind{
	name:  "netns",
	about: "netns (a network namespace on this host)",
	flags: func(fs *flag.FlagSet, o *Options) {
		fs.StringVar(&o.PayloadUser, "payload-user", "nobody", "netns sandbox: who payload processes run as: a user `name`, a uid, or uid:gid\n(never root; they get no capabilities either way). A runtime that cannot switch users (not\nroot, e.g. with file capabilities) runs them as its own user unless this is given")
		fs.BoolVar(&o.PayloadRoot, "payload-root", false, "netns sandbox: UNSAFE: run payload processes as root with the runtime's capabilities;\nonly for payloads you trust (the log and `test` say so)")
		fs.BoolVar(&o.UnsafeVolumeLinks, "unsafe-volume-links", false, "netns sandbox: UNSAFE: start even when the kernel (before Linux 5.10) cannot mount the host\nvolumes nosymfollow; the ExeUnit's transfers then follow links a payload plants in them")
	},
	flagNames: []string{"payload-user", "payload-root", "unsafe-volume-links"},
	image:     imageRoot,
	volumes: func(o *Options, vols volume.List) (volume.List, error) {
		if err := netns.CheckVolumes(vols); err != nil {
			return nil, err
		}
		if err := vols.CheckRAM(ramLimit(o)); err != nil {
			return nil, err
		}
		return vols, nil
	},
	payloadOwnsVolumes: true,
	open:               openNetns,
}

// openNetns creates the namespace sandbox, in the image when deploy
// checked one.
func openNetns(o *Options, a openArgs) (sandbox.Sandbox, network.Attacher, int) {
	log, img := a.log, a.img
	u, root, err := payloadUser(o)
	if err != nil {
		log.WithError(err).Error("cannot start")
		return nil, nil, 2
	}
	if root {
		warnRoot(log)
	}
	cfg := netns.Config{Workdir: o.Workdir, Hostname: a.hostname, Log: log, NamePrefix: o.SandboxPrefix,
		User: u, Root: root, Volumes: a.vols, UnsafeVolumeLinks: o.UnsafeVolumeLinks, Limits: a.limits}
	if img != nil {
		cfg.RootFS = img.rootFS()
		cfg.Env, cfg.Dir = img.Config.Env, img.Config.WorkingDir
		if img.User != nil {
			cfg.User = *img.User
		}
	}
	sb, err := netns.Open(cfg)
	if err != nil {
		log.WithError(err).Error("cannot create the sandbox")
		return nil, nil, 1
	}
	if !o.checkEnforced(sb.Unenforced(), log) {
		sb.Close()
		return nil, nil, 1
	}
	fields := logrus.Fields{"netns": sb.Name(), "payload": describePayload(cfg.User, root), "vols": a.vols.Vols()}
	if img != nil {
		host, _ := sb.HostUser()
		fields["image"], fields["host_user"] = img.Format, fmt.Sprintf("%d:%d", host.UID, host.GID)
	}
	log.WithFields(fields).Info("sandbox ready")
	return sb, sb, 0
}
