// Package servertest starts PRIVATE servers for tests and benchmarks that disturb their
// infrastructure: a PostgreSQL cluster (initdb/pg_ctl from `pg_config --bindir`) and a
// redis-server, each on a free loopback port in a temp dir of its own, that can be restarted,
// stopped, frozen (SIGSTOP) and thawed; a loopback TCP proxy that can be cut like a network
// partition; and CPU hogs. Nothing here ever touches the shared servers on 5432/6379.
//
// Every constructor has two forms: StartX returns the server and an error and the caller
// Closes it (cmd/bench), and X(t, ...) fails or skips t and registers the Close with
// t.Cleanup. Every wait is bounded.
package servertest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// ErrTimeout is returned (wrapped) by Poll when the condition did not hold in time.
var ErrTimeout = errors.New("timed out")

// PollInterval is how often Poll checks its condition unless told otherwise.
const PollInterval = 25 * time.Millisecond

// Poll calls cond every interval (PollInterval when 0) until it reports true or an error, or
// until timeout passes. It returns nil once cond held, cond's error, or an error wrapping
// ErrTimeout that carries the last error cond gave alongside false (a reason to quote).
func Poll(timeout, interval time.Duration, cond func() (bool, error)) error {
	if interval <= 0 {
		interval = PollInterval
	}
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		var retry *Retry
		if err != nil && !errors.As(err, &retry) {
			return err
		}
		if time.Now().After(deadline) {
			if retry != nil {
				return fmt.Errorf("%w after %s: %w", ErrTimeout, timeout, retry.Err)
			}
			return fmt.Errorf("%w after %s", ErrTimeout, timeout)
		}
		<-t.C
	}
}

// Retry wraps an error that Poll should not stop on: cond returns (false, &Retry{err}) when
// the condition does not hold yet for a reason worth quoting if time runs out.
type Retry struct{ Err error }

func (r *Retry) Error() string { return r.Err.Error() }
func (r *Retry) Unwrap() error { return r.Err }

// FreePort returns a loopback TCP port that was free a moment ago. Servers started on it must
// retry with another port if it was taken in between.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, err
	}
	return port, nil
}

// startAttempts is how many ports a server start tries before giving up.
const startAttempts = 4

// errMissing marks a server binary that is not installed.
var errMissing = errors.New("not installed")

// server is what forTest needs of a server.
type server interface {
	String() string
	LogTail(n int) string
	Close()
}

// forTest hands a started server to t: it skips or fails t when the start failed, and closes
// the server when t ends, printing its log's tail first if t failed.
func forTest[S server](t testing.TB, s S, err error) S {
	t.Helper()
	if err != nil {
		skipOrFatal(t, "start a private server", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- private %s: log tail ----\n%s", s, s.LogTail(60))
		}
		s.Close()
	})
	return s
}

// skipOrFatal skips t when a binary is missing, except under CI where a missing server is a
// broken machine; any other error fails t.
func skipOrFatal(t testing.TB, what string, err error) {
	t.Helper()
	if errors.Is(err, errMissing) && os.Getenv("CI") == "" {
		t.Skipf("servertest: %s: %v", what, err)
	}
	t.Fatalf("servertest: %s: %v", what, err)
}
