//go:build linux

package netns

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRootFSCheckNamesTheBadField(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "image")
	if err := os.WriteFile(file, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		r     RootFS
		field string // "" means valid
	}{
		{RootFS{Dir: dir}, ""},
		{RootFS{Image: file}, ""},
		{RootFS{Image: file, Size: 4096}, ""},
		{RootFS{Image: file, Size: 512}, ""},
		{RootFS{Image: file, Size: 4000}, ""}, // the device ends at 4096
		{RootFS{}, "neither"},
		{RootFS{Dir: dir, Image: file}, "both"},
		{RootFS{Dir: dir, Size: 512}, "RootFS.Size"},
		{RootFS{Dir: file}, "RootFS.Dir"},
		{RootFS{Dir: filepath.Join(dir, "none")}, "RootFS.Dir"},
		{RootFS{Image: dir}, "RootFS.Image"},
		{RootFS{Image: filepath.Join(dir, "none")}, "RootFS.Image"},
		{RootFS{Image: file, Size: 4097}, "RootFS.Size"}, // would end at 4608
		{RootFS{Image: file, Size: 8192}, "RootFS.Size"},
		{RootFS{Image: file, Size: -512}, "RootFS.Size"},
	} {
		err := c.r.check()
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%+v: %v", c.r, err)
		case c.field != "" && (!errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), c.field)):
			t.Errorf("%+v: %v, want ErrBadConfig naming %s", c.r, err, c.field)
		}
	}
}

func TestUserNamespaceFilterJumpsStayInside(t *testing.T) {
	prog := userNamespaceFilter()
	if prog == nil {
		t.Skip("no filter for this architecture")
	}
	for i, ins := range prog {
		if ins.Code&0x07 == 0x05 && ins.Code != 0x05 { // BPF_JMP, conditional
			for _, off := range []uint8{ins.Jt, ins.Jf} {
				if i+1+int(off) >= len(prog) {
					t.Errorf("instruction %d jumps past the end (%d of %d)", i, i+1+int(off), len(prog))
				}
			}
		}
	}
	if last := prog[len(prog)-1]; last.Code != 0x06 { // BPF_RET
		t.Errorf("the filter does not end in a return: %+v", last)
	}
}

func FuzzParseShimArgs(f *testing.F) {
	f.Add("host", "65534", "65534", "/", "sh", "sh")
	f.Add("userns=1610612736", "0", "0", "/golem/work", "/bin/sh", "sh")
	f.Add("root", "root", "root", "/", "id", "id")
	f.Add("userns=", "1", "1", "/", "x", "x")
	f.Add("userns=4294967295", "1", "1", "/", "x", "x")
	f.Fuzz(func(t *testing.T, mode, uid, gid, dir, bin, arg0 string) {
		spec, err := parseShimArgs([]string{mode, uid, gid, dir, bin, arg0})
		if err != nil {
			return
		}
		if !spec.root && (spec.uid < 0 || spec.gid < 0 || spec.uid == 0 && !spec.userns) {
			t.Errorf("accepted user %d:%d in mode %q", spec.uid, spec.gid, mode)
		}
		if spec.userns && (spec.ids == 0 || uint64(spec.ids)+IDRangeSize > 1<<32) {
			t.Errorf("accepted range base %d", spec.ids)
		}
		if spec.dir != dir || spec.bin != bin || len(spec.argv) != 1 {
			t.Errorf("args moved: %+v", spec)
		}
	})
}

func TestCheckIDRange(t *testing.T) {
	etc := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(etc, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("passwd", "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")
	write("group", "root:x:0:\nwheel:x:10:alice\n")
	write("subuid", "alice:100000:65536\n")
	if err := CheckIDRange(etc); err != nil {
		t.Fatalf("ordinary host: %v", err)
	}
	if err := CheckIDRange(filepath.Join(etc, "none")); err != nil {
		t.Fatalf("no files: %v", err)
	}
	write("passwd", "root:x:0:0:root:/root:/bin/sh\nsquatter:x:1610612800:100::/:/bin/sh\n")
	write("subgid", "bob:1610000000:1000000\nbroken:line\n")
	err := CheckIDRange(etc)
	if err == nil {
		t.Fatal("a user and a subordinate range inside the payload ids were not reported")
	}
	for _, want := range []string{"passwd squatter (id 1610612800", "subgid bob (id 1610000000, 1000000 ids)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	write("subgid", "bob:1609000000:1000000\n")         // ends just below the first payload id
	write("passwd", "last:x:1879048192:1::/:/bin/sh\n") // 0x70000000, just past the end
	if err := CheckIDRange(etc); err != nil {
		t.Fatalf("entries next to the range: %v", err)
	}
}
