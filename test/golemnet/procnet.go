package golemnet

import (
	"bytes"
	"fmt"
	"strings"
)

// TCPListening reports whether the kernel socket table text procNetTCP
// (the format of /proc/net/tcp and /proc/net/tcp6, possibly several
// concatenated) has a socket in LISTEN state on port.
func TCPListening(procNetTCP []byte, port uint16) bool {
	want := fmt.Sprintf(":%04X", port)
	for line := range bytes.Lines(procNetTCP) {
		f := strings.Fields(string(line))
		// sl local_address rem_address st ...
		if len(f) < 4 || f[3] != "0A" {
			continue
		}
		if strings.HasSuffix(f[1], want) {
			return true
		}
	}
	return false
}
