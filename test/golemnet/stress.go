package golemnet

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"syscall"
	"time"

	"github.com/gvpn/gvpn/runtime/limits"
)

// CPUBurners starts n endless shell loops in eu's payload (each as busy as
// one CPU can be) and returns a func that kills them.
func CPUBurners(ctx context.Context, eu *ExeUnit, n int) (stop func() error, err error) {
	var pids []uint64
	stop = func() error {
		var errs []error
		for _, pid := range pids {
			errs = append(errs, eu.KillProcess(ctx, pid, syscall.SIGKILL))
		}
		return errors.Join(errs...)
	}
	for range n {
		p, err := eu.Spawn(ctx, "/bin/sh", "-c", "while :; do :; done")
		if err != nil {
			stop()
			return nil, err
		}
		pids = append(pids, p.Pid)
	}
	return stop, nil
}

// Ping is a ping running in a payload, started by StartPing.
type Ping struct {
	proc *Proc
}

// StartPing starts `ping -c count -i interval -W 5 ip` in eu's payload.
func StartPing(ctx context.Context, eu *ExeUnit, ip string, count int, interval string) (*Ping, error) {
	p, err := eu.Spawn(ctx, "/bin/ping", "-c", fmt.Sprint(count), "-i", interval, "-W", "5", ip)
	if err != nil {
		return nil, err
	}
	return &Ping{proc: p}, nil
}

// Lossless waits for the ping to end and fails unless every reply came.
func (p *Ping) Lossless(ctx context.Context) error {
	res, err := p.proc.Wait(ctx)
	if err != nil {
		return err
	}
	if res.ReturnCode != 0 || !strings.Contains(string(res.Stdout), " 0% packet loss") {
		return fmt.Errorf("ping lost replies (exit %d):\n%s%s", res.ReturnCode, res.Stdout, res.Stderr)
	}
	return nil
}

// CheckCPUQuota runs twice as many CPU burners as cores in eu's payload
// for d, measures from the activity's cgroup (group, see package limits)
// how many CPUs they used, and kills them. It fails when they got more
// than cores by a generous margin (the quota is enforced per 100 ms
// period) or nothing at all (they are not in the group). It returns the
// measured rate.
func CheckCPUQuota(ctx context.Context, eu *ExeUnit, group string, cores float64, d time.Duration) (float64, error) {
	stop, err := CPUBurners(ctx, eu, 2*int(math.Ceil(cores)))
	if err != nil {
		return 0, err
	}
	rate, err := limits.CPURate(group, d)
	if serr := stop(); err == nil {
		err = serr
	}
	if err != nil {
		return rate, err
	}
	if rate > cores*1.3 || rate <= 0 {
		return rate, fmt.Errorf("burners used %.2f CPUs with a quota of %g", rate, cores)
	}
	return rate, nil
}

// CheckMemoryLimit runs a memory hog of 400 MiB in eu's payload (GNU or
// busybox tail -c keeps that much): with a smaller memory limit it must be
// SIGKILLed inside the activity's cgroup (group), which counts the kill,
// and the runtime must answer Hello afterwards.
func CheckMemoryLimit(ctx context.Context, eu *ExeUnit, group string) error {
	out, err := eu.Output(ctx, "/bin/sh", "-c", "head -c 600M /dev/zero | tail -c 400M >/dev/null; echo rc=$?")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "rc=137") {
		return fmt.Errorf("memory hog: %q, want it SIGKILLed", out)
	}
	if _, err := eu.Hello(ctx, "0.1"); err != nil {
		return fmt.Errorf("the runtime does not answer Hello after the OOM kill: %w", err)
	}
	if u, err := limits.UsageOf(group); err != nil || u.OOMKills == 0 {
		return fmt.Errorf("no OOM kill counted: %+v %v", u, err)
	}
	return nil
}

// CheckPidsLimit runs a fork bomb (300 sleepers of 3 s) in eu's payload:
// it must stop with at most max processes and threads in the activity's
// cgroup (group), and the runtime must answer Hello. It returns the count.
func CheckPidsLimit(ctx context.Context, eu *ExeUnit, group string, max uint64) (uint64, error) {
	r, err := eu.Run(ctx, "/bin/sh", "-c", "i=0; while [ $i -lt 300 ]; do sleep 3 & i=$((i+1)); done 2>/dev/null; echo forked")
	if err != nil {
		return 0, err
	}
	u, err := limits.UsageOf(group)
	if err != nil {
		return 0, err
	}
	if string(r.Stdout) == "forked\n" || u.Pids > max {
		return u.Pids, fmt.Errorf("fork bomb: %q, %d pids; want it stopped at %d", r.Stdout, u.Pids, max)
	}
	if _, err := eu.Hello(ctx, "0.1"); err != nil {
		return u.Pids, fmt.Errorf("the runtime does not answer Hello after the fork bomb: %w", err)
	}
	return u.Pids, nil
}
