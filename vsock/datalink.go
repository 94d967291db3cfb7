package vsock

import (
	"net"

	"github.com/gvpn/gvpn/runtime/link"
)

// DataLink returns the frame link of a bridge data connection: every frame
// travels as a 4-byte big-endian length followed by the frame bytes
// (link.PrefixU32BE, the framing of QEMU's -netdev stream). The link owns
// conn and closes it on Close.
//
// What the reader enforces is link.Stream's: a frame longer than the
// caller's buffer is skipped and reported by its size; a declared length
// above link.MaxDeclared is link.ErrDesync, after which the connection must
// be dropped.
func DataLink(conn net.Conn) link.Link {
	return link.NewStream(conn, link.PrefixU32BE)
}
