package dockerlab

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestMirrorIn(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"Types: deb\nURIs: http://deb.debian.org/debian-security\n\nTypes: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n": "http://mirror.example/debian",
		"# comment\ndeb [arch=amd64] http://ftp.example/debian bookworm main\n":                                                         "http://ftp.example/debian",
		"deb http://security.debian.org/debian-security bookworm-security main\n":                                                       "",
		"": "",
	}
	for content, want := range cases {
		p := filepath.Join(dir, "sources")
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := mirrorIn(p); got != want {
			t.Errorf("mirrorIn(%q) = %q, want %q", content, got, want)
		}
	}
	if mirrorIn(filepath.Join(dir, "missing")) != "" {
		t.Error("a missing file gave a mirror")
	}
}

func TestComplaint(t *testing.T) {
	for stderr, want := range map[string]string{
		"DEPRECATED: The legacy builder is deprecated\n\nThe command '/bin/sh -c false' returned a non-zero code: 1\n": "The command '/bin/sh -c false' returned a non-zero code: 1",
		"docker: Error response from daemon: Conflict.\nSee 'docker run --help'.\n":                                    "docker: Error response from daemon: Conflict.",
		"first\nlast\n": "last",
		"":              "",
	} {
		if got := complaint(stderr); got != want {
			t.Errorf("complaint(%q) = %q, want %q", stderr, got, want)
		}
	}
	e := &Error{Args: []string{"run", "-d", "--name", "x", "img", "cmd"}, Stderr: "docker: Error response from daemon: no\n"}
	if got := e.Error(); got != "docker run … cmd: docker: Error response from daemon: no" {
		t.Errorf("Error() = %q", got)
	}
}

func TestHashOfSeparatesParts(t *testing.T) {
	if hashOf([]byte("ab"), []byte("c")) == hashOf([]byte("a"), []byte("bc")) {
		t.Error("parts run together")
	}
	if a, b := hashOf([]byte("x")), hashOf([]byte("x")); a != b || len(a) != 12 {
		t.Errorf("hashOf: %q %q", a, b)
	}
	if !slices.Equal(sortedCopy([]string{"b", "a"}), []string{"a", "b"}) {
		t.Error("sortedCopy")
	}
}

func TestPrivilegedArgs(t *testing.T) {
	args, note := PrivilegedArgs()
	if note == "" {
		if !slices.Equal(args, []string{"--privileged"}) {
			t.Errorf("args %v without a note", args)
		}
		return
	}
	// A host without some capability: every one it has, unconfined.
	if !slices.Contains(args, "ALL") || !slices.Contains(args, "--cap-drop") || !slices.Contains(args, "/dev/net/tun") ||
		slices.Contains(args, "--privileged") || !strings.Contains(note, "lacks") {
		t.Errorf("args %v note %q", args, note)
	}
}

func FuzzMirrorOf(f *testing.F) {
	f.Add("Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n")
	f.Add("deb [arch=amd64] http://ftp.example/debian bookworm main\n")
	f.Add("deb http://security.debian.org/debian-security bookworm-security main\n")
	f.Fuzz(func(t *testing.T, content string) {
		m := mirrorOf(strings.NewReader(content))
		if m != "" && (!strings.HasPrefix(m, "http") || strings.Contains(m, "security") || !strings.Contains(content, m)) {
			t.Fatalf("mirrorOf(%q) = %q", content, m)
		}
	})
}
