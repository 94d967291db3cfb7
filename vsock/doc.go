// Package vsock is the bridge between gvpn-runtime on the host and
// gvpn-agent inside the payload VM or container.
//
// A bridge has an address (Addr): vsock://CID:PORT for a VM, unix:///path
// for a container that sees the socket through a bind-mounted directory.
// The runtime listens, the agent dials, and they hold two connections:
//
//   - the data connection, at the address itself, carries Ethernet frames
//     as a 4-byte big-endian length followed by the frame (DataLink). It is
//     the framing of QEMU's -netdev stream, so a VM with a virtio-net NIC can
//     attach to it with no agent at all;
//   - the control connection, at Addr.Control(), carries JSON messages with
//     the same 4-byte big-endian length prefix (ControlConn): configuration
//     of the agent's interface, and later the payload's processes.
//
// The agent keeps its data connection with a Redialer, which re-dials with
// capped, jittered exponential backoff and drops (and counts) the frames
// written while it is disconnected, so the TAP behind it never stalls.
//
// The wire format is specified in docs/bridge.md.
package vsock
