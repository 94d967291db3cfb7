package nsthread_test

import (
	"errors"
	"os"
	"testing"

	"github.com/vishvananda/netns"
	"go.uber.org/goleak"

	"github.com/gvpn/gvpn/netcfg/nsthread"
	"github.com/gvpn/gvpn/test/privtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func threadNS(t *testing.T) string {
	// thread-self: namespaces belong to threads.
	s, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDoRunsInsideTheNamespaceAndComesBack(t *testing.T) {
	_, h := privtest.NewNetns(t, "gvt-nst-")
	target := ""
	if err := nsthread.Do(h, func() error { target = threadNS(t); return nil }); err != nil {
		t.Fatal(err)
	}
	var own string
	nsthread.Do(netns.None(), func() error { own = threadNS(t); return nil })
	if target == "" || target == own {
		t.Fatalf("fn ran in %q, the caller's namespace is %q", target, own)
	}
	for range 20 { // no thread came back in the wrong namespace
		if got := threadNS(t); got != own {
			t.Fatalf("a thread was left in %s", got)
		}
	}
	sentinel := errors.New("from fn")
	if err := nsthread.Do(h, func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Fatalf("Do returned %v, want fn's error", err)
	}
}
