// Package golemnet is a local stand-in for the Golem Net, for integration
// tests and the gvpn-lab tool: a Hub gives each simulated provider node the
// UDP data socket its ExeUnit would have, and moves Ethernet frames between
// the nodes' runtimes with the ExeUnit's routing rules (docs/protocol.md
// §6), optional faults (latency, loss, cut) and per-node counters.
//
// The hub needs no privileges: everything is UDP on 127.0.0.1. It moves
// frames in batches (recvmmsg, sendmmsg) and sends runs of same-size frames
// for one runtime as UDP GSO messages; the kernel splits them, so a runtime
// still receives one datagram per frame — unless it turned UDP_GRO on, in
// which case it gets them coalesced, as from any GSO sender.
//
// The routing function is portable; the hub itself is Linux-only.
package golemnet
