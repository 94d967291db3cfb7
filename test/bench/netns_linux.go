package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/gvpn/gvpn/netcfg/nsthread"
)

// namePrefix starts every network namespace and link this tool creates,
// including the gvpn runtimes' sandboxes (--sandbox-prefix).
const namePrefix = "gvb-"

// uniqueSuffix returns 8 random hex digits, so that names never collide
// with another run's leftovers.
func uniqueSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// nsPair is two named network namespaces driven with `ip netns exec`: the
// shared half of the veth and naive-pump testbeds.
type nsPair struct {
	cfg  *config
	ns   [2]string
	made [2]bool

	mu    sync.Mutex
	procs map[*nsProc]struct{}
}

// newNSPair creates namespaces <prefix><tag><suffix>a and …b with lo up.
// On failure it removes what it created.
func newNSPair(ctx context.Context, cfg *config, tag string, res *scenarioResult) (*nsPair, error) {
	p := &nsPair{cfg: cfg, procs: make(map[*nsProc]struct{})}
	base := namePrefix + tag + uniqueSuffix()
	for i, side := range []string{"a", "b"} {
		p.ns[i] = base + side
		if err := p.ip(ctx, "netns", "add", p.ns[i]); err != nil {
			p.close()
			return nil, err
		}
		p.made[i] = true
		res.Netns = append(res.Netns, p.ns[i])
		if err := p.ip(ctx, "-n", p.ns[i], "link", "set", "lo", "up"); err != nil {
			p.close()
			return nil, err
		}
	}
	return p, nil
}

// ip runs the ip tool on the host and fails with its output.
func (p *nsPair) ip(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, p.cfg.Tools.IP, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %v: %w: %s", args, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

func (p *nsPair) command(node int, argv []string) *exec.Cmd {
	cmd := exec.Command(p.cfg.Tools.IP, append([]string{"netns", "exec", p.ns[node]}, argv...)...)
	// Own process group: a terminal's Ctrl-C reaches only this tool, which
	// then stops its children itself, in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// Run implements testbed.
func (p *nsPair) Run(ctx context.Context, node int, argv ...string) (cmdResult, error) {
	var stdout, stderr bytes.Buffer
	cmd := p.command(node, argv)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	proc, err := p.start(cmd)
	if err != nil {
		return cmdResult{}, err
	}
	defer proc.Stop()
	if err := proc.Wait(ctx); err != nil {
		return cmdResult{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), RC: -1}, err
	}
	return cmdResult{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), RC: proc.cmd.ProcessState.ExitCode()}, nil
}

// Start implements testbed.
func (p *nsPair) Start(_ context.Context, node int, argv ...string) (background, error) {
	return p.start(p.command(node, argv))
}

func (p *nsPair) start(cmd *exec.Cmd) (*nsProc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	proc := &nsProc{cmd: cmd, done: make(chan struct{}), pair: p}
	p.mu.Lock()
	p.procs[proc] = struct{}{}
	p.mu.Unlock()
	go func() {
		cmd.Wait()
		close(proc.done)
	}()
	return proc, nil
}

// close stops every command still running and deletes the namespaces
// (which takes their links with them).
func (p *nsPair) close() error {
	p.mu.Lock()
	procs := make([]*nsProc, 0, len(p.procs))
	for pr := range p.procs {
		procs = append(procs, pr)
	}
	p.mu.Unlock()
	for _, pr := range procs {
		pr.Stop()
	}
	var errs []error
	for i, name := range p.ns {
		if !p.made[i] {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := p.ip(ctx, "netns", "del", name); err != nil {
			errs = append(errs, err)
		}
		cancel()
		if _, err := os.Lstat(filepath.Join(nsthread.RunDir, name)); !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("netns %s still exists", name))
		}
		p.made[i] = false
	}
	return errors.Join(errs...)
}

// nsProc is a command started in a namespace.
type nsProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	pair *nsPair
	once sync.Once
}

// Wait implements background.
func (pr *nsProc) Wait(ctx context.Context) error {
	select {
	case <-pr.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s still running: %w", pr.cmd.Args[3:], ctx.Err())
	}
}

// Stop implements background: SIGKILL to the command's own process group
// (`ip netns exec` execs the command, so that group is the command and
// whatever it forked), then wait.
func (pr *nsProc) Stop() {
	pr.once.Do(func() {
		select {
		case <-pr.done:
		default:
			syscall.Kill(-pr.cmd.Process.Pid, syscall.SIGKILL)
			<-pr.done
		}
		pr.pair.mu.Lock()
		delete(pr.pair.procs, pr)
		pr.pair.mu.Unlock()
	})
}
