package cli

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/gvpn/gvpn/runtime/sandbox/netns"
)

// payloadUser resolves --payload-user (a user name, a uid, or uid:gid)
// and --payload-root into the netns sandbox's payload identity. Root is
// possible only through --payload-root, so that a typo or "0" in the
// descriptor cannot hand a requestor the machine.
//
// A runtime that cannot switch users (not root, e.g. a provider's own user
// with file capabilities) runs payloads as its own uid and gid unless
// --payload-user is given, so that the shipped descriptor works for root
// and non-root installs alike; a --payload-user it cannot apply is an
// error naming the flag.
func payloadUser(o *Options) (netns.User, bool, error) {
	if o.PayloadRoot {
		return netns.User{}, true, nil
	}
	switching := canSwitchUsers()
	self := netns.User{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	spec := strings.TrimSpace(o.PayloadUser)
	if !o.payloadUserSet && !switching {
		if self.UID == 0 || self.GID == 0 {
			return netns.User{}, false, errors.New("the runtime runs as root but without CAP_SETUID and CAP_SETGID, so it can neither switch payloads to an unprivileged user nor run them as its own (root); give it those capabilities, or run it as the provider's unprivileged user with file capabilities (docs/provider.md)")
		}
		return self, false, nil
	}
	if spec == "" {
		spec = "nobody"
	}
	u, err := lookupUser(spec)
	if err != nil {
		return netns.User{}, false, fmt.Errorf("--payload-user %q: %w", o.PayloadUser, err)
	}
	if u.UID == 0 || u.GID == 0 {
		return netns.User{}, false, fmt.Errorf("--payload-user %q is root (uid or gid 0); payloads run as root only with --payload-root", o.PayloadUser)
	}
	if !switching && u != self {
		return netns.User{}, false, fmt.Errorf("--payload-user %q (uid %d gid %d): this runtime cannot switch users (it is not root with CAP_SETUID and CAP_SETGID), so payloads can only run as its own uid %d gid %d; drop the flag (that is the default then) or run the provider as root",
			o.PayloadUser, u.UID, u.GID, self.UID, self.GID)
	}
	return u, false, nil
}

func lookupUser(spec string) (netns.User, error) {
	uidPart, gidPart, hasGID := strings.Cut(spec, ":")
	uid, err := strconv.ParseUint(uidPart, 10, 32)
	if err != nil {
		// A name: its uid and primary group from the user database.
		pw, lerr := user.Lookup(uidPart)
		if lerr != nil {
			return netns.User{}, errors.New("no such user (give a name from /etc/passwd, a uid, or uid:gid)")
		}
		uid, _ = strconv.ParseUint(pw.Uid, 10, 32)
		if !hasGID {
			gid, _ := strconv.ParseUint(pw.Gid, 10, 32)
			return netns.User{UID: uint32(uid), GID: uint32(gid)}, nil
		}
	}
	gid := uid
	if hasGID {
		if gid, err = strconv.ParseUint(gidPart, 10, 32); err != nil {
			return netns.User{}, fmt.Errorf("group %q is not a number", gidPart)
		}
	} else if pw, lerr := user.LookupId(uidPart); lerr == nil {
		gid, _ = strconv.ParseUint(pw.Gid, 10, 32)
	}
	return netns.User{UID: uint32(uid), GID: uint32(gid)}, nil
}

// describePayload says in a log field who payloads run as, and for a
// runtime that shares its user with them, what that means.
func describePayload(u netns.User, root bool) string {
	if root {
		return "ROOT (--payload-root: unsafe, the payload has the runtime's privileges)"
	}
	if !canSwitchUsers() && int(u.UID) == os.Getuid() {
		return fmt.Sprintf("the runtime's own user (uid %d gid %d): confined by the namespaces, no_new_privs and no capabilities, "+
			"but sharing the provider user's uid, so it can read and write whatever that user can where the sandbox shows it; "+
			"for a payload user of its own run the provider as root (docs/provider.md)", u.UID, u.GID)
	}
	return fmt.Sprintf("uid %d gid %d, no capabilities", u.UID, u.GID)
}

// warnRoot logs, loudly, that payloads run as root.
func warnRoot(log *logrus.Entry) {
	log.Warn("--payload-root: payload processes run as root with the runtime's capabilities; a requestor's code can take over this machine. Use only for payloads you trust.")
}
