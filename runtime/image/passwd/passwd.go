// Package passwd resolves an image's User setting ("name", "uid",
// "uid:gid", "name:group", "uid:group", "name:gid") to numeric ids with the
// image's own /etc/passwd and /etc/group, never the host's. It imports
// nothing of gvpn, so gvpn-agent resolves a user in its guest with the same
// rules the runtime applies to an image on the host.
package passwd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
)

// User is a resolved user: the ids a process runs with inside the image,
// and the supplementary groups /etc/group gives it.
type User struct {
	UID, GID uint32
	Groups   []uint32
}

// maxFile bounds what is read of /etc/passwd or /etc/group.
const maxFile = 4 << 20

// Resolve resolves spec in root, the image's file system (paths
// "etc/passwd" and "etc/group" in it). "" is root, as in Docker. A number
// needs no entry in /etc/passwd (its gid is then the passwd entry's, or 0
// when there is none, as in Docker); a name must have one. Errors name what was
// not found.
func Resolve(root fs.FS, spec string) (User, error) {
	if spec == "" {
		spec = "0"
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" || (hasGroup && groupPart == "") || strings.ContainsAny(spec, "\x00\n") {
		return User{}, fmt.Errorf("user %q: want name, uid, uid:gid or name:group", spec)
	}
	users, uerr := readDB(root, "etc/passwd")
	var u User
	var name string
	if id, err := parseID(userPart); err == nil {
		u.UID = id // gid 0 unless /etc/passwd says otherwise, as in Docker
		for _, e := range users {
			if e[2] == userPart {
				name = e[0]
				if gid, err := parseID(e[3]); err == nil {
					u.GID = gid
				}
				break
			}
		}
	} else {
		e, err := find(users, uerr, "/etc/passwd", "user", userPart)
		if err != nil {
			return User{}, fmt.Errorf("user %q: %w", spec, err)
		}
		uid, err1 := parseID(e[2])
		gid, err2 := parseID(e[3])
		if err := errors.Join(err1, err2); err != nil {
			return User{}, fmt.Errorf("user %q: the image's /etc/passwd entry: %v", spec, err)
		}
		u.UID, u.GID, name = uid, gid, e[0]
	}
	groups, gerr := readDB(root, "etc/group")
	if hasGroup {
		if id, err := parseID(groupPart); err == nil {
			u.GID = id
		} else {
			e, err := find(groups, gerr, "/etc/group", "group", groupPart)
			if err != nil {
				return User{}, fmt.Errorf("user %q: %w", spec, err)
			}
			if u.GID, err = parseID(e[2]); err != nil {
				return User{}, fmt.Errorf("user %q: the image's /etc/group entry: %v", spec, err)
			}
		}
	}
	// Supplementary groups: those that list the user by name.
	if name != "" {
		for _, e := range groups {
			for _, m := range strings.Split(e[3], ",") {
				if m == name {
					if gid, err := parseID(e[2]); err == nil && gid != u.GID {
						u.Groups = append(u.Groups, gid)
					}
				}
			}
		}
	}
	return u, nil
}

// find returns the entry of db (read with readErr) whose first field is
// name; file and what name the database and the kind of entry in errors.
func find(db [][]string, readErr error, file, what, name string) ([]string, error) {
	if readErr != nil {
		return nil, fmt.Errorf("the image's %s: %w", file, readErr)
	}
	for _, e := range db {
		if e[0] == name {
			return e, nil
		}
	}
	return nil, fmt.Errorf("no %s %q in the image's %s", what, name, file)
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not an id", s)
	}
	return uint32(n), nil
}

// readDB reads a colon-separated database, each entry padded to at least 4
// fields; comments and malformed lines are skipped.
func readDB(root fs.FS, name string) ([][]string, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	read := 0
	for sc.Scan() {
		line := sc.Bytes()
		read += len(line) + 1
		if read > maxFile {
			return nil, fmt.Errorf("%s is over %d bytes", name, maxFile)
		}
		if len(line) == 0 || line[0] == '#' || bytes.Count(line, []byte(":")) < 2 {
			continue
		}
		e := strings.Split(string(line), ":")
		for len(e) < 4 {
			e = append(e, "")
		}
		out = append(out, e)
	}
	return out, sc.Err()
}
