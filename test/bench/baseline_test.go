package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRecordedCommit(t *testing.T) {
	// The report in the repository records the commit it measured, a
	// clean one of this repository's history: make bench's default
	// baseline. (The kept bench-docker section has a "Measured" line of
	// its own, without a commit.)
	md, err := os.ReadFile("../../docs/BENCHMARKS.md")
	if err != nil {
		t.Fatal(err)
	}
	c, dirty, ok := recordedCommit(md)
	if !ok || dirty {
		t.Fatalf("docs/BENCHMARKS.md: commit %q dirty=%v ok=%v, want a clean commit", c, dirty, ok)
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Logf("no git: commit %s not looked up", c)
	} else if out, err := exec.Command("git", "rev-parse", "--verify", "--quiet", c+"^{commit}").CombinedOutput(); err != nil {
		t.Errorf("docs/BENCHMARKS.md records commit %s, which is not in this repository: %v %s", c, err, out)
	}

	for _, tc := range []struct {
		in, commit string
		dirty, ok  bool
	}{
		{measuredLine("2026-12-06 04:00 UTC", "0701e7c"), "0701e7c", false, true},
		{"# x\n\n" + measuredLine("2026-12-06 04:00 UTC", "0701e7c-dirty") + "\nMeasured 2026 on commit abcdef0.\n", "0701e7c", true, true},
		{measuredLine("2026-12-06 04:00 UTC", "0701e7c4a7e3a8b0d6f1c2e9b8a7d6c5e4f3a2b1"), "0701e7c4a7e3a8b0d6f1c2e9b8a7d6c5e4f3a2b1", false, true},
		{measuredLine("2026-12-01 23:53 UTC", ""), "", false, false},
		{"Measured 2026-12-02 00:19 UTC with `make bench-docker`, on commit abcdef0 of the lab.\n", "", false, false},
		{"Measured x on commit main.\n", "", false, false},  // a branch is not a recorded commit
		{"Measured x on commit abc12.\n", "", false, false}, // too short to be a --short hash
		{"", "", false, false},
	} {
		c, dirty, ok := recordedCommit([]byte(tc.in))
		if c != tc.commit || dirty != tc.dirty || ok != tc.ok {
			t.Errorf("%q: %q dirty=%v ok=%v, want %q %v %v", tc.in, c, dirty, ok, tc.commit, tc.dirty, tc.ok)
		}
	}
}

// gitRepo makes a repository with two commits of a module holding the
// baseline's binaries as tiny programs that print which commit they are.
// It returns the directory and the two short commits.
func gitRepo(t *testing.T) (dir, first, second string) {
	t.Helper()
	for _, tool := range []string{"git", "go", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not in PATH: %v", tool, err)
		}
	}
	dir = t.TempDir()
	ctx := context.Background()
	run := func(args ...string) string {
		t.Helper()
		out, err := git(ctx, dir, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	program := func(word string) string {
		return "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"" + word + "\") }\n"
	}
	run("init", "-q")
	run("config", "user.email", "bench@test")
	run("config", "user.name", "bench test")
	write("go.mod", "module example.com/tiny\n\ngo 1.22\n")
	write("docs/BENCHMARKS.md", "# x\n")
	for _, b := range baselineBinaries {
		write("cmd/"+b+"/main.go", program("first "+b))
	}
	run("add", ".")
	run("commit", "-q", "-m", "first")
	first = run("rev-parse", "--short", "HEAD")
	write("cmd/gvpn-runtime/main.go", program("second gvpn-runtime"))
	run("commit", "-q", "-am", "second")
	second = run("rev-parse", "--short", "HEAD")
	return dir, first, second
}

func TestTreeCommit(t *testing.T) {
	dir, _, head := gitRepo(t)
	ctx := context.Background()
	report := filepath.Join(dir, "docs", "BENCHMARKS.md")
	check := func(want string) {
		t.Helper()
		if got, err := treeCommit(ctx, dir, report); err != nil || got != want {
			t.Errorf("treeCommit = %q, %v; want %q", got, err, want)
		}
	}
	check(head)
	// A previous run's rewritten report and untracked files are not a
	// change to what is measured.
	if err := os.WriteFile(report, []byte("# rewritten\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	check(head)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/tiny\n\ngo 1.23\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check(head + "-dirty")
	if _, err := treeCommit(ctx, t.TempDir(), ""); err == nil {
		t.Error("treeCommit outside a repository: no error")
	}
}

func TestResolveBase(t *testing.T) {
	dir, first, second := gitRepo(t)
	ctx := context.Background()
	report := filepath.Join(dir, "docs", "BENCHMARKS.md")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(report, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	if c, _, err := resolveBase(ctx, dir, "HEAD~1", report); err != nil || c != first {
		t.Errorf("HEAD~1: %q, %v; want %s", c, err, first)
	}
	write(measuredLine("2026-12-06 04:00 UTC", second+"-dirty"))
	if c, note, err := resolveBase(ctx, dir, recordedBase, report); err != nil || c != second || !strings.Contains(note, "dirty") {
		t.Errorf("recorded dirty: %q, %q, %v; want %s and a note on the dirty tree", c, note, err, second)
	}

	for _, tc := range []struct {
		name, base, report, md, want string
	}{
		{"unknown revision", "no-such-branch", report, "", `baseline "no-such-branch" is not a commit`},
		{"unknown recorded commit", recordedBase, report, measuredLine("x", "1234567"), `baseline "1234567" is not a commit`},
		{"nothing recorded", recordedBase, report, "# old report\n\nMeasured yesterday.\n", "records no commit"},
		{"no report", recordedBase, filepath.Join(dir, "missing.md"), "", "missing.md"},
		{"no -out", recordedBase, "", "", "there is no -out"},
		{"an option", "--all", report, "", "not a revision"},
	} {
		if tc.md != "" {
			write(tc.md)
		}
		_, _, err := resolveBase(ctx, dir, tc.base, tc.report)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

func TestBuildBaseline(t *testing.T) {
	dir, first, _ := gitRepo(t)
	ctx := context.Background()
	tmpBefore := gvbTemp(t)

	bin, cleanup, err := buildBaseline(ctx, dir, first)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range baselineBinaries {
		out, err := exec.Command(filepath.Join(bin, b)).Output()
		if want := "first " + b + "\n"; err != nil || string(out) != want {
			t.Errorf("%s printed %q, %v; want %q (the first commit's program)", b, out, err, want)
		}
	}
	cleanup()
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Errorf("after cleanup, %s: %v", bin, err)
	}
	if after := gvbTemp(t); len(after) != len(tmpBefore) {
		t.Errorf("temporary directories before %v, after %v", tmpBefore, after)
	}
	if wt, _ := git(ctx, dir, "worktree", "list"); strings.Count(wt, "\n") != 0 {
		t.Errorf("worktrees left in the repository:\n%s", wt)
	}

	// A commit whose binaries do not build fails with the compiler's words
	// and leaves nothing behind.
	if err := os.WriteFile(filepath.Join(dir, "cmd", "gvpn-agent", "main.go"), []byte("package main\n\nfunc main() { undefinedCall() }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := git(ctx, dir, "commit", "-q", "-am", "broken"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := buildBaseline(ctx, dir, "HEAD"); err == nil || !strings.Contains(err.Error(), "undefinedCall") {
		t.Errorf("broken commit: %v, want the compiler's error", err)
	}
	if after := gvbTemp(t); len(after) != len(tmpBefore) {
		t.Errorf("after a failed build: temporary directories before %v, after %v", tmpBefore, after)
	}
}

// gvbTemp lists buildBaseline's temporary directories.
func gvbTemp(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(os.TempDir(), "gvb-base-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
