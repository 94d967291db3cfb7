// Package nsthread runs code on an OS thread switched into another network
// namespace. Namespaces belong to threads, not processes, so anything that
// must happen "inside" a namespace — opening /dev/net/tun, writing a
// per-namespace sysctl — runs on a locked thread that enters it and leaves
// again.
package nsthread

import (
	"fmt"
	"runtime"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netns"
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
	errc := make(chan error, 1)
	go func() { errc <- switchedRun(ns, fn) }()
	return <-errc
}

func switchedRun(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current network namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread() // setns failed: the thread did not move
		return fmt.Errorf("enter network namespace: %w", err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Stay locked: the thread dies with this goroutine. fn's result
		// is still valid.
		logrus.WithError(err).Error("cannot restore the thread's network namespace; discarding the thread")
		return ferr
	}
	runtime.UnlockOSThread()
	return ferr
}
