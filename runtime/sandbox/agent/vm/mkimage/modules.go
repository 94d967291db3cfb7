package main

import (
	"bytes"
	"debug/elf"
	"fmt"
	"strings"
)

// guestModules are the kernel modules the guest needs and Debian's kernel
// builds as modules: the virtio PCI transport, virtio-serial ports (the
// bridge), 9p over virtio (volumes), squashfs, overlay and virtio-blk (the
// task package as root), tun (vpn0), and virtio vsock (the bridge where
// the host has vhost-vsock). Their dependencies are added from the modules'
// own .modinfo.
var guestModules = []string{
	"virtio_pci", "virtio_console", "virtio_blk",
	"9pnet_virtio", "9p",
	"squashfs", "overlay",
	"tun",
	"vmw_vsock_virtio_transport",
}

// dependsOf reads the "depends=" list from a module's .modinfo section.
func dependsOf(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := strings.CutPrefix(string(kv), "depends="); ok {
			if v == "" {
				return nil, nil
			}
			return strings.Split(v, ","), nil
		}
	}
	return nil, nil
}

// loadOrder returns want and everything it depends on, each module after
// its dependencies. mods maps a module name (with "_", as modinfo writes
// it) to its .ko bytes.
func loadOrder(want []string, mods map[string][]byte) ([]string, error) {
	var (
		order []string
		state = map[string]int{} // 1 visiting, 2 done
		visit func(name, from string) error
	)
	visit = func(name, from string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		ko, ok := mods[name]
		if !ok {
			if from == "" {
				return fmt.Errorf("module %s is not in the kernel package (built in?)", name)
			}
			return fmt.Errorf("module %s (needed by %s) is not in the kernel package", name, from)
		}
		state[name] = 1
		deps, err := dependsOf(ko)
		if err != nil {
			return fmt.Errorf("module %s: %w", name, err)
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, name)
		return nil
	}
	for _, w := range want {
		if err := visit(w, ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleName turns a module file name into the name modinfo uses.
func moduleName(file string) string {
	n := strings.TrimSuffix(file, ".ko")
	return strings.ReplaceAll(n, "-", "_")
}
