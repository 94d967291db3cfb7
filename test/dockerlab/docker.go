// Package dockerlab builds the gvpn lab's Docker images offline and drives
// the Docker engine for the lab in containers: networks, containers,
// labels, faults and cleanup.
//
// It speaks to the engine through the docker CLI (os/exec), not the Go
// SDK: the CLI is what a user of the lab has and reads from anyway, its
// error messages are the ones users know, and the SDK would pull dozens of
// modules into a test tool for a handful of calls.
package dockerlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// Labels every container and network of a lab carries, so that anyone can
// find or remove them with `docker ps --filter label=…`.
const (
	// LabelLab holds the lab's id.
	LabelLab = "gvpn.lab"
	// LabelNode holds the node's name ("hub" for the Golem Net stand-in).
	LabelNode = "gvpn.node"
	// LabelRole says what a container is: node, hub or payload.
	LabelRole = "gvpn.role"
	// LabelImage marks the images the lab builds: base or lab.
	LabelImage = "gvpn.image"
)

// ErrNoEngine: no Docker engine answers.
var ErrNoEngine = errors.New("no Docker engine answers")

// CLI runs docker commands.
type CLI struct {
	// Bin is the docker binary; empty means "docker" in PATH.
	Bin string
	// Log, if set, gets every command line before it runs.
	Log io.Writer
}

func (c CLI) bin() string {
	if c.Bin == "" {
		return "docker"
	}
	return c.Bin
}

// Error is a docker command that failed; Stderr is what docker said.
type Error struct {
	Args   []string
	Stderr string
	Err    error
}

func (e *Error) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = e.Err.Error()
	}
	msg = complaint(msg)
	// The command line of a docker run is long: its subcommand and its
	// last argument name it.
	what := strings.Join(e.Args, " ")
	if len(e.Args) > 3 {
		what = e.Args[0] + " … " + e.Args[len(e.Args)-1]
	}
	return fmt.Sprintf("docker %s: %s", what, msg)
}

func (e *Error) Unwrap() error { return e.Err }

// complaint picks the line of docker's stderr that says what went wrong:
// the first that mentions an error (docker prints notices and hints around
// it), else the last.
func complaint(stderr string) string {
	ls := lines(stderr)
	for _, l := range ls {
		lower := strings.ToLower(l)
		if strings.Contains(lower, "error") || strings.Contains(lower, "non-zero code") {
			return l
		}
	}
	if len(ls) == 0 {
		return ""
	}
	return ls[len(ls)-1]
}

// Run runs docker with args and returns its stdout, trimmed.
func (c CLI) Run(ctx context.Context, args ...string) (string, error) {
	return c.RunIn(ctx, nil, args...)
}

// RunIn is Run with stdin.
func (c CLI) RunIn(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, "+ docker %s\n", strings.Join(args, " "))
	}
	cmd := exec.CommandContext(ctx, c.bin(), args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return "", fmt.Errorf("%w: the docker CLI is not installed (%v)", ErrNoEngine, err)
		}
		return out.String(), &Error{Args: args, Stderr: errb.String(), Err: err}
	}
	return strings.TrimSpace(out.String()), nil
}

// Ping checks that an engine answers, and says why not.
func (c CLI) Ping(ctx context.Context) error {
	v, err := c.Run(ctx, "version", "--format", "{{.Server.Version}}")
	if err != nil {
		if errors.Is(err, ErrNoEngine) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrNoEngine, err)
	}
	if v == "" {
		return fmt.Errorf("%w: docker version printed no server version", ErrNoEngine)
	}
	return nil
}

// lines splits docker's one-per-line output.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Exists reports whether the image, container or network ref exists.
func (c CLI) Exists(ctx context.Context, kind, ref string) bool {
	_, err := c.Run(ctx, kind, "inspect", "--format", "{{.Id}}", ref)
	return err == nil
}

// RemoveLabeled removes every container (running or not) and then every
// network that carries label (KEY=VALUE), and returns how many of each.
func (c CLI) RemoveLabeled(ctx context.Context, label string) (containers, networks int, err error) {
	out, err := c.Run(ctx, "ps", "-aq", "--filter", "label="+label)
	if err != nil {
		return 0, 0, err
	}
	var errs []error
	if ids := lines(out); len(ids) > 0 {
		if _, err := c.Run(ctx, append([]string{"rm", "-f", "-v"}, ids...)...); err != nil {
			errs = append(errs, err)
		} else {
			containers = len(ids)
		}
	}
	out, err = c.Run(ctx, "network", "ls", "-q", "--filter", "label="+label)
	if err != nil {
		return containers, 0, errors.Join(append(errs, err)...)
	}
	for _, id := range lines(out) {
		if _, err := c.Run(ctx, "network", "rm", id); err != nil {
			errs = append(errs, err)
		} else {
			networks++
		}
	}
	return containers, networks, errors.Join(errs...)
}

// Labeled lists the names of the containers and networks carrying label.
func (c CLI) Labeled(ctx context.Context, label string) (containers, networks []string, err error) {
	out, err := c.Run(ctx, "ps", "-a", "--format", "{{.Names}}", "--filter", "label="+label)
	if err != nil {
		return nil, nil, err
	}
	containers = lines(out)
	out, err = c.Run(ctx, "network", "ls", "--format", "{{.Name}}", "--filter", "label="+label)
	if err != nil {
		return containers, nil, err
	}
	return containers, lines(out), nil
}
