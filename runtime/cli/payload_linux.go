package cli

import (
	"errors"
	"fmt"
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
func payloadUser(o *Options) (netns.User, bool, error) {
	if o.PayloadRoot {
		return netns.User{}, true, nil
	}
	spec := strings.TrimSpace(o.PayloadUser)
	if spec == "" {
		return netns.Nobody, false, nil
	}
	u, err := lookupUser(spec)
	if err != nil {
		return netns.User{}, false, fmt.Errorf("--payload-user %q: %w", o.PayloadUser, err)
	}
	if u.UID == 0 || u.GID == 0 {
		return netns.User{}, false, fmt.Errorf("--payload-user %q is root (uid or gid 0); payloads run as root only with --payload-root", o.PayloadUser)
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

// describePayload says in a log field who payloads run as.
func describePayload(u netns.User, root bool) string {
	if root {
		return "ROOT (--payload-root: unsafe, the payload has the runtime's privileges)"
	}
	return fmt.Sprintf("uid %d gid %d, no capabilities", u.UID, u.GID)
}

// warnRoot logs, loudly, that payloads run as root.
func warnRoot(log *logrus.Entry) {
	log.Warn("--payload-root: payload processes run as root with the runtime's capabilities; a requestor's code can take over this machine. Use only for payloads you trust.")
}
