//go:build !linux

package vsock

import (
	"context"
	"errors"
	"net"
)

func dialPort(context.Context, string) (net.Conn, error) {
	return nil, errors.New("virtio-serial ports exist only in Linux guests")
}
