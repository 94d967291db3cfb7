//go:build tools

package deps

import (
	_ "github.com/gopacket/gopacket/layers"
	_ "github.com/mdlayher/vsock"
	_ "github.com/sirupsen/logrus"
	_ "github.com/songgao/water"
	_ "github.com/vishvananda/netlink"
	_ "github.com/vishvananda/netns"
	_ "go.uber.org/goleak"
	_ "golang.org/x/sys/unix"
	_ "google.golang.org/protobuf/encoding/protodelim"
)
