package netcfg

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// HostsEntryError names a hosts entry that MergeHosts refused.
type HostsEntryError struct {
	Hostname string
	IP       string
	Reason   string
}

func (e *HostsEntryError) Error() string {
	return fmt.Sprintf("invalid hosts entry %q -> %q: %s", e.Hostname, e.IP, e.Reason)
}

type hostEntry struct {
	name string
	ip   netip.Addr
}

// checkHosts validates a hostname → IP map and returns it sorted by
// hostname. The first bad entry in that order is the one reported.
func checkHosts(entries map[string]string) ([]hostEntry, error) {
	names := make([]string, 0, len(entries))
	for name := range entries {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make([]hostEntry, 0, len(names))
	seen := make(map[string]string, len(names))
	for _, name := range names {
		value := entries[name]
		if reason := checkHostname(name); reason != "" {
			return nil, &HostsEntryError{name, value, reason}
		}
		ip, err := netip.ParseAddr(value)
		if err != nil {
			return nil, &HostsEntryError{name, value, "not an IP address"}
		}
		if ip.Zone() != "" {
			return nil, &HostsEntryError{name, value, "IP address with a zone"}
		}
		// Resolvers compare names without regard to case, so "Node" and
		// "node" are one name.
		key := strings.ToLower(name)
		if other, dup := seen[key]; dup {
			return nil, &HostsEntryError{name, value, fmt.Sprintf("same name as %q", other)}
		}
		seen[key] = name
		out = append(out, hostEntry{name, ip})
	}
	return out, nil
}

// checkHostname applies RFC 1123: dot-separated labels of 1–63 letters,
// digits and hyphens, not starting or ending with a hyphen, 253 characters
// at most. It returns why name is invalid, or "".
func checkHostname(name string) string {
	if name == "" {
		return "empty hostname"
	}
	if len(name) > 253 {
		return "hostname longer than 253 characters"
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return "hostname is an IP address"
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return "hostname label empty or longer than 63 characters"
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "hostname label starts or ends with '-'"
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Sprintf("hostname contains %q", c)
			}
		}
	}
	return ""
}

// hostsLine is one line of a hosts file. A line that maps names keeps its
// parsed form so that it can be rewritten; any other line (comment, blank,
// junk) is kept byte for byte.
type hostsLine struct {
	raw     string
	ip      netip.Addr // valid only for a mapping line
	names   []string
	comment string // from '#' on
	changed bool
}

func parseHosts(data string) []hostsLine {
	if data == "" {
		return nil
	}
	raw := strings.Split(strings.TrimSuffix(data, "\n"), "\n")
	lines := make([]hostsLine, len(raw))
	for i, r := range raw {
		l := hostsLine{raw: r}
		body := r
		if j := strings.IndexByte(r, '#'); j >= 0 {
			body, l.comment = r[:j], r[j:]
		}
		if f := strings.Fields(body); len(f) >= 2 {
			if ip, err := netip.ParseAddr(f[0]); err == nil {
				l.ip, l.names = ip, f[1:]
			}
		}
		lines[i] = l
	}
	return lines
}

// mergeHosts returns data with entries merged in and whether anything
// changed. For each hostname (in the given order):
//
//   - lines that already map it to its IP are kept;
//   - a line mapping only that name to another IP gets the new IP in place
//     (the first such line, if no line had the right IP);
//   - the name is removed from any other line mapping it to another IP, so
//     that no stale address can win the resolver's first-match lookup; a
//     line left with no names keeps only its comment, if it had one;
//   - if no line maps it to its IP now, "IP<TAB>hostname" is appended.
//
// All other lines are kept byte for byte. When nothing changes, the input
// is returned as is, so merging the same entries twice gives the same bytes.
func mergeHosts(data string, entries []hostEntry) (string, bool) {
	lines := parseHosts(data)
	var added []string
	changed := false
	for _, e := range entries {
		found := false
		for i := range lines {
			l := &lines[i]
			if !l.ip.IsValid() || !hasName(l.names, e.name) {
				continue
			}
			switch {
			case l.ip == e.ip:
				found = true
			case len(l.names) == 1 && !found:
				l.ip, l.changed, found = e.ip, true, true
			default:
				l.names = dropName(l.names, e.name)
				l.changed = true
			}
		}
		if !found {
			added = append(added, e.ip.String()+"\t"+e.name)
		}
		changed = changed || !found
	}
	for _, l := range lines {
		changed = changed || l.changed
	}
	if !changed {
		return data, false
	}

	var b strings.Builder
	b.Grow(len(data) + 64*len(added))
	for _, l := range lines {
		switch {
		case !l.changed:
			b.WriteString(l.raw)
		case len(l.names) > 0:
			b.WriteString(l.ip.String() + "\t" + strings.Join(l.names, " "))
			if l.comment != "" {
				b.WriteString(" " + l.comment)
			}
		case l.comment != "":
			b.WriteString(l.comment)
		default:
			continue // the line mapped only names that moved elsewhere
		}
		b.WriteByte('\n')
	}
	for _, a := range added {
		b.WriteString(a + "\n")
	}
	return b.String(), true
}

func hasName(names []string, name string) bool {
	for _, n := range names {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

func dropName(names []string, name string) []string {
	out := names[:0:0]
	for _, n := range names {
		if !strings.EqualFold(n, name) {
			out = append(out, n)
		}
	}
	return out
}
