package vm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// squashfsMagic starts every squashfs image ("hsqs", little-endian).
const squashfsMagic = 0x73717368

// CheckRoot reports whether path can be the guest's root: a squashfs image
// (the format of Golem's VM images), as a regular file, of version 4.
// deploy calls it so that a wrong task package is refused before any VM
// boots.
func CheckRoot(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("task package: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("task package: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("task package %s is not a regular file", path)
	}
	var sb [30]byte
	if _, err := io.ReadFull(f, sb[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("task package %s is not a squashfs image (only %d bytes)", path, fi.Size())
		}
		return fmt.Errorf("task package: %w", err)
	}
	if binary.LittleEndian.Uint32(sb[0:4]) != squashfsMagic {
		return fmt.Errorf("task package %s is not a squashfs image (it starts with % x; the VM sandbox boots squashfs roots, as made by mksquashfs)", path, sb[:4])
	}
	if major := binary.LittleEndian.Uint16(sb[28:30]); major != 4 {
		return fmt.Errorf("task package %s is squashfs version %d; the guest kernel reads version 4", path, major)
	}
	return nil
}
