// Package ifname holds the rule for Linux interface names, on its own so
// that tap (which netcfg's tests use) and netcfg share one rule without
// importing each other.
package ifname

import (
	"fmt"
	"strings"
)

// MaxLen is the longest interface name Linux takes (IFNAMSIZ - 1).
const MaxLen = 15

// Check returns why name cannot be a Linux interface name, or nil: it must
// be 1 to MaxLen bytes, not "." or "..", and free of '/', ':', white space
// and control characters (it becomes a path under /proc/sys/net and
// /sys/class/net).
func Check(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty")
	case len(name) > MaxLen:
		return fmt.Errorf("longer than %d bytes", MaxLen)
	case name == "." || name == "..":
		return fmt.Errorf("reserved")
	case strings.ContainsFunc(name, func(r rune) bool { return r == '/' || r == ':' || r <= ' ' || r == 0x7f }):
		return fmt.Errorf("contains '/', ':', white space or a control character")
	}
	return nil
}
