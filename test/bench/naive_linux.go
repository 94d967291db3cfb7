package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netns"

	"github.com/gvpn/gvpn/netcfg"
	"github.com/gvpn/gvpn/runtime/link"
	"github.com/gvpn/gvpn/tap"
)

// naiveBed is the naive-pump baseline: a TAP in each namespace, made and
// addressed exactly as the runtime makes its own (tap.Create, netcfg.Apply),
// joined inside this process by the simplest pump there is: per direction
// one goroutine that reads one frame and writes it to the other TAP. No
// socket, no hub, no filter, batch size 1. Comparing it with veth shows what
// the TAP path alone costs; comparing gvpn with it shows what the endpoint,
// the hub and the filters add.
type naiveBed struct {
	*nsPair
	taps   [2]*tap.TAP
	frames [2]atomic.Uint64 // frames moved A→B and B→A
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error // first pump fault other than the TAPs closing
}

func setupNaive(ctx context.Context, cfg *config, res *scenarioResult) (tb testbed, err error) {
	p, err := newNSPair(ctx, cfg, "n", res)
	if err != nil {
		return nil, err
	}
	b := &naiveBed{nsPair: p}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	// What the process-wide logger showed before: warnings (a failed
	// rollback step) on stderr.
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	for i, ip := range []string{addrA, addrB} {
		h, err := netns.GetFromName(p.ns[i])
		if err != nil {
			return nil, fmt.Errorf("open netns %s: %w", p.ns[i], err)
		}
		t, err := tap.Create(h, tap.Config{})
		if err == nil {
			b.taps[i] = t
			var n netcfg.Network
			if n, err = netcfg.ParseNetwork(vpnNet, vpnMsk, "", ip); err == nil {
				err = netcfg.Apply(h, netcfg.LinkConfig{Name: t.Name(), Net: n, MTU: mtu, Log: log})
			}
		}
		h.Close()
		if err != nil {
			return nil, fmt.Errorf("tap in %s: %w", p.ns[i], err)
		}
	}
	b.wg.Add(2)
	go b.pump(b.taps[nodeA], b.taps[nodeB], &b.frames[0])
	go b.pump(b.taps[nodeB], b.taps[nodeA], &b.frames[1])
	return b, nil
}

// pump copies frames from one TAP to the other until they close: one read
// and one write per frame, one reused buffer, nothing else.
func (b *naiveBed) pump(from, to *tap.TAP, frames *atomic.Uint64) {
	defer b.wg.Done()
	buf := make([]byte, link.BufSize)
	in, sizes, out := [][]byte{buf}, []int{0}, [][]byte{nil}
	for {
		n, err := from.Read(in, sizes, 0)
		if err != nil {
			if !link.IsClosed(err) {
				b.fail(err)
			}
			return
		}
		if n != 1 || sizes[0] > len(buf) {
			continue
		}
		out[0] = buf[:sizes[0]]
		if _, err := to.Write(out, 0); err != nil {
			if link.IsClosed(err) {
				return
			}
			continue // the kernel refused this one frame; the next may pass
		}
		frames.Add(1)
	}
}

func (b *naiveBed) fail(err error) {
	b.errMu.Lock()
	defer b.errMu.Unlock()
	if b.err == nil {
		b.err = err
	}
}

func (b *naiveBed) ServerIP() string { return addrB }
func (b *naiveBed) LinkName() string { return netcfg.DefaultName }

// Sample implements testbed: the pump runs in this process, so the
// process's CPU is the pump's (the other goroutines sleep during a run).
func (b *naiveBed) Sample() (sample, error) {
	b.errMu.Lock()
	err := b.err
	b.errMu.Unlock()
	if err != nil {
		return sample{}, fmt.Errorf("naive pump stopped: %w", err)
	}
	cpu, err := processCPU(os.Getpid())
	if err != nil {
		return sample{}, err
	}
	return sample{
		CPU:    []roleCPU{{Role: "pump (in the bench process)", Seconds: cpu}},
		Frames: b.frames[0].Load() + b.frames[1].Load(),
	}, nil
}

// Close implements testbed: the TAPs first (which ends the pump goroutines
// and deletes the devices), then the commands and the namespaces.
func (b *naiveBed) Close() error {
	var errs []error
	for i, t := range b.taps {
		if t != nil {
			if err := t.Close(); err != nil {
				errs = append(errs, err)
			}
			b.taps[i] = nil
		}
	}
	b.wg.Wait()
	errs = append(errs, b.close())
	return errors.Join(errs...)
}
