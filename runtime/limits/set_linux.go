//go:build linux

package limits

import (
	"errors"
)

// Set is what one activity holds: its group and, with a storage limit, its
// disk, and the limits the host could not enforce. Every sandbox kind opens
// one; its methods tolerate a missing group or disk.
type Set struct {
	Limits     Limits
	Group      *Group // nil: no controller usable
	Disk       *Disk  // nil: no storage limit, no directory for it, or no disk possible
	Unenforced []Unenforced
}

// Open makes the activity's group /gvpn/name with l and, when l has
// storage and dirs (workdir-relative, existing) is not empty, the disk in
// workdir with dirs on it. What the host cannot enforce is listed in
// Unenforced. On error nothing is left.
func Open(name, workdir string, l Limits, dirs []string) (*Set, error) {
	s := &Set{Limits: l}
	if l.StorageBytes > 0 && len(dirs) > 0 {
		d, err := OpenDisk(name, workdir, l.StorageBytes)
		switch {
		case errors.Is(err, ErrNoDisk):
			s.Unenforced = append(s.Unenforced, Unenforced{Limit: "storage", Reason: err.Error()})
		case err != nil:
			return nil, err
		default:
			s.Disk = d
			for _, rel := range dirs {
				if err := d.Bind(rel); err != nil {
					d.Close()
					return nil, err
				}
			}
		}
	}
	g, un, err := New(name, l)
	if err != nil {
		if s.Disk != nil {
			s.Disk.Close()
		}
		return nil, err
	}
	s.Group = g
	s.Unenforced = append(s.Unenforced, un...)
	return s, nil
}

// Usage is what the group's processes used so far (zero without a group)
// and the bytes on the disk.
func (s *Set) Usage() (Usage, error) {
	var u Usage
	var errs []error
	if s.Group != nil {
		var err error
		u, err = s.Group.Usage()
		errs = append(errs, err)
	}
	if s.Disk != nil {
		n, err := s.Disk.Used()
		u.DiskBytes = n
		errs = append(errs, err)
	}
	return u, errors.Join(errs...)
}

// Close reads the final usage (ok false when there was nothing to measure
// or it could not be read), then removes the group, killing what is left
// in it, and the disk. It is idempotent.
func (s *Set) Close() (final Usage, ok bool, err error) {
	if s.Group == nil && s.Disk == nil {
		return Usage{}, false, nil
	}
	final, uerr := s.Usage()
	var errs []error
	if s.Group != nil {
		errs = append(errs, s.Group.Remove())
	}
	if s.Disk != nil {
		errs = append(errs, s.Disk.Close())
	}
	return final, uerr == nil, errors.Join(errs...)
}
