package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// This file holds the git side of the comparison with a baseline: which
// commit a run measured, which commit a BENCHMARKS.md says it measured, and
// building another commit's binaries. It needs git and go, not root.

// recordedBase is the -base value that means "the commit the -out file
// records".
const recordedBase = "recorded"

// measuredLine is the line of the report that names the measured commit;
// recordedCommit reads it back.
func measuredLine(date, commit string) string {
	if commit == "" {
		return fmt.Sprintf("Measured %s.\n", date)
	}
	return fmt.Sprintf("Measured %s on commit %s.\n", date, commit)
}

var measuredRE = regexp.MustCompile(`(?m)^Measured [^\n]* on commit ([0-9a-f]{7,40})(-dirty)?\.$`)

// recordedCommit returns the commit a BENCHMARKS.md says it measured
// (its first "Measured … on commit X." line) and whether that tree was
// dirty; ok is false when it records none.
func recordedCommit(md []byte) (commit string, dirty, ok bool) {
	m := measuredRE.FindSubmatch(md)
	if m == nil {
		return "", false, false
	}
	return string(m[1]), len(m[2]) > 0, true
}

// git runs git in dir and returns its trimmed stdout; a failure carries
// git's stderr.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// treeCommit returns the short commit of the work tree at dir, with
// "-dirty" when a tracked file differs from it. The report file itself
// (ignore, a path relative to dir or absolute; "" for none) does not
// count: a previous run rewrote it, and it is not what is measured.
func treeCommit(ctx context.Context, dir, ignore string) (string, error) {
	head, err := git(ctx, dir, "rev-parse", "--short", "HEAD")
	if err != nil {
		return "", err
	}
	args := []string{"status", "--porcelain", "--untracked-files=no", "--", "."}
	if ignore != "" {
		abs, err := filepath.Abs(ignore)
		if err != nil {
			return "", err
		}
		args = append(args, ":(exclude)"+abs)
	}
	status, err := git(ctx, dir, args...)
	if err != nil {
		return "", err
	}
	if status != "" {
		head += "-dirty"
	}
	return head, nil
}

// resolveBase turns -base into a commit of the repository at dir: the
// commit the file at out records for "recorded", else the revision named.
// A note says what was resolved and how, for the progress log.
func resolveBase(ctx context.Context, dir, base, out string) (commit, note string, err error) {
	rev := base
	if base == recordedBase {
		if out == "" {
			return "", "", errors.New("-base recorded reads the commit the -out file records, and there is no -out")
		}
		md, err := os.ReadFile(out)
		if err != nil {
			return "", "", fmt.Errorf("-base recorded: %w (name a revision instead: make bench BENCH_BASE=<rev>; BENCH_BASE= skips the comparison)", err)
		}
		c, dirty, ok := recordedCommit(md)
		if !ok {
			return "", "", fmt.Errorf("-base recorded: %s records no commit (\"Measured … on commit X.\"); name one: make bench BENCH_BASE=<rev>, or BENCH_BASE= to skip the comparison", out)
		}
		rev, note = c, fmt.Sprintf("the commit %s records", out)
		if dirty {
			note += " (its run was of a dirty tree: the baseline is the commit as committed)"
		}
	}
	if strings.HasPrefix(rev, "-") {
		return "", "", fmt.Errorf("baseline %q is not a revision", rev)
	}
	full, err := git(ctx, dir, "rev-parse", "--verify", "--quiet", rev+"^{commit}")
	if err != nil {
		return "", "", fmt.Errorf("baseline %q is not a commit of the repository at %s (fetch it, or name another: make bench BENCH_BASE=<rev>; BENCH_BASE= skips the comparison): %w", rev, dir, err)
	}
	short, err := git(ctx, dir, "rev-parse", "--short", full)
	if err != nil {
		return "", "", err
	}
	if note == "" {
		note = fmt.Sprintf("-base %s", base)
	}
	return short, note, nil
}

// baselineBinaries are the programs a baseline's testbeds run.
var baselineBinaries = []string{"gvpn-runtime", "gvpn-agent"}

// buildBaseline extracts commit from the repository at dir (git archive:
// the repository is only read) into a temporary directory and builds
// baselineBinaries there as `make build` does (static, trimmed, stripped).
// It returns the directory holding the binaries and a cleanup that removes
// everything it made; on error it has removed it already.
func buildBaseline(ctx context.Context, dir, commit string) (binDir string, cleanup func(), err error) {
	tmp, err := os.MkdirTemp("", "gvb-base-")
	if err != nil {
		return "", nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	src, binDir := filepath.Join(tmp, "src"), filepath.Join(tmp, "bin")
	if err := os.Mkdir(src, 0o755); err != nil {
		return "", nil, err
	}
	if err := extract(ctx, dir, commit, src); err != nil {
		return "", nil, err
	}
	args := []string{"build", "-trimpath", "-ldflags", "-s -w", "-o", binDir + "/"}
	for _, b := range baselineBinaries {
		args = append(args, "./cmd/"+b)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("building %v of commit %s: %w: %s", baselineBinaries, commit, err, bytes.TrimSpace(out))
	}
	return binDir, func() { os.RemoveAll(tmp) }, nil
}

// extract writes the tree of commit into dst: git archive into a tar file
// beside dst, then tar -x.
func extract(ctx context.Context, dir, commit, dst string) error {
	tarball := dst + ".tar"
	defer os.Remove(tarball)
	if _, err := git(ctx, dir, "archive", "--format=tar", "-o", tarball, commit); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "tar", "-x", "-f", tarball, "-C", dst).CombinedOutput(); err != nil {
		return fmt.Errorf("tar -x of commit %s: %w: %s", commit, err, bytes.TrimSpace(out))
	}
	return nil
}
