// Package nsthread runs code on an OS thread switched into another network
// namespace. Namespaces belong to threads, not processes, so anything that
// must happen "inside" a namespace — opening /dev/net/tun, writing a
// per-namespace sysctl — runs on a locked thread that enters it and leaves
// again. Creating a named namespace (NewNamed, like `ip netns add`) is the
// same discipline: a thread unshares into the new namespace, binds it to a
// name and comes back.
package nsthread

import (
	"fmt"
	"runtime"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread switched into ns, or directly when ns is
// negative (netns.None()). It uses a fresh goroutine so that, if the thread
// cannot be switched back, the goroutine can end while still locked: the Go
// runtime then destroys the thread instead of reusing it in the wrong
// namespace. Everything Do opens is closed before it returns.
func Do(ns netns.NsHandle, fn func() error) error {
	if ns < 0 {
		return fn()
	}
	return onThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter network namespace: %w", err)
		}
		return nil
	}, func(int) error { return fn() })
}

// onFreshNetnsThread runs fn on a locked thread that has just unshared into
// a brand-new network namespace; fn gets the thread's id so it can name
// the namespace (/proc/self/task/TID/ns/net) before the thread leaves it.
// The namespace lives on only if fn keeps a reference to it.
func onFreshNetnsThread(fn func(tid int) error) error {
	return onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare network namespace: %w", err)
		}
		return nil
	}, fn)
}

// onThread locks a fresh goroutine to its thread, runs enter (which moves
// the thread into some namespace; on error the thread did not move), then
// fn, then switches the thread back to its original namespace.
func onThread(enter func() error, fn func(tid int) error) error {
	errc := make(chan error, 1)
	go func() { errc <- switchedRun(enter, fn) }()
	return <-errc
}

func switchedRun(enter func() error, fn func(tid int) error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current network namespace: %w", err)
	}
	defer orig.Close()
	if err := enter(); err != nil {
		runtime.UnlockOSThread() // the thread did not move
		return err
	}
	ferr := fn(unix.Gettid())
	if err := netns.Set(orig); err != nil {
		// Stay locked: the thread dies with this goroutine. fn's result
		// is still valid.
		logrus.WithError(err).Error("cannot restore the thread's network namespace; discarding the thread")
		return ferr
	}
	runtime.UnlockOSThread()
	return ferr
}
