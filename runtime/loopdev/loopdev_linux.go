// Package loopdev attaches a regular file to a read-only loop block device,
// so that a file system image in it (a squashfs, the front part of a
// GVMI) can be mounted.
//
// The device is attached with LO_FLAGS_AUTOCLEAR: the kernel detaches it
// by itself once the last reference goes, that is once the caller has
// closed the Device and the last mount of the file system on it is gone
// (for a mount made in a private mount namespace: when that namespace
// dies). Nothing has to clean it up after a crash.
package loopdev

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Device is an attached loop device. The caller mounts Path and then
// closes the Device; with autoclear the device outlives Close exactly as
// long as a mount uses it.
type Device struct {
	// Path is the device node, /dev/loopN.
	Path string
	f    *os.File
}

// attempts bounds the retries when another process takes the free device
// that LOOP_CTL_GET_FREE named before this one could configure it.
const attempts = 16

// Attach attaches the first size bytes of backing (all of it when size is
// 0) to a free loop device, read-only and with autoclear. size must be a
// multiple of 512 (the loop driver's sector) and at most the file's size;
// backing may be closed when Attach returns.
func Attach(backing *os.File, size int64) (*Device, error) {
	fi, err := backing.Stat()
	if err != nil {
		return nil, fmt.Errorf("loop: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("loop: %s is not a regular file", backing.Name())
	}
	switch {
	case size < 0 || size > fi.Size():
		return nil, fmt.Errorf("loop: size %d outside the file's %d bytes", size, fi.Size())
	case size%512 != 0:
		return nil, fmt.Errorf("loop: size %d is not a multiple of 512", size)
	}
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: %w", err)
	}
	defer ctl.Close()
	var last error
	for range attempts {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop: find a free device: %w", err)
		}
		path := "/dev/loop" + strconv.Itoa(n)
		dev, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("loop: %w", err)
		}
		err = configure(int(dev.Fd()), int(backing.Fd()), size)
		if err == nil {
			return &Device{Path: path, f: dev}, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("loop: attach %s to %s: %w", backing.Name(), path, err)
		}
		last = err // another process took it first
	}
	return nil, fmt.Errorf("loop: no free device after %d attempts: %w", attempts, last)
}

// configure sets the device up in one step (LOOP_CONFIGURE, Linux 5.8),
// or in the two older steps where the kernel lacks it.
func configure(dev, backing int, size int64) error {
	info := unix.LoopInfo64{
		Flags:     unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR,
		Sizelimit: uint64(size),
	}
	err := unix.IoctlLoopConfigure(dev, &unix.LoopConfig{Fd: uint32(backing), Info: info})
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return err
	}
	// LOOP_SET_FD attaches read-only because backing is open read-only.
	if err := unix.IoctlSetInt(dev, unix.LOOP_SET_FD, backing); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(dev, &info); err != nil {
		_ = unix.IoctlSetInt(dev, unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}

// Close drops this process's reference. Without a mount on it the device
// is detached at once; with one, when the file system is unmounted.
func (d *Device) Close() error {
	if d == nil || d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}
