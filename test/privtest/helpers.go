package privtest

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// Context returns a context that ends after d or when the test ends.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitFor polls cond until it holds, failing the test, saying what it
// waited for, after a deadline generous enough for a loaded machine (it
// bounds a wait; it asserts nothing about how long things take).
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// OpenFDs returns how many file descriptors the test process has open, to
// check that a teardown closed everything it opened.
func OpenFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Log returns a debug-level logger that writes into the test's log, so that
// a failing test shows what the code under test said.
func Log(t testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(Writer(t))
	l.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(l)
}

// Writer returns an io.Writer that writes each write into the test's log.
func Writer(t testing.TB) io.Writer { return testWriter{t} }

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
