//go:build !linux

package vsock

import mdvsock "github.com/mdlayher/vsock"

// tuneVsock does nothing: AF_VSOCK is Linux-only here.
func tuneVsock(*mdvsock.Conn) {}
