// Package failpoint lets fault tests kill a worker process at a named point of an item's life,
// so that "crash right after the target committed" is a test, not a hope. It is configured
// once from the environment (ETL_FAILPOINT=<point>@<n>: SIGKILL the process the n-th time it
// reaches <point>) and costs one atomic load per point otherwise.
package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Points an item passes, in order.
const (
	// Claimed: the claim is committed; the handler has not started.
	Claimed = "claimed"
	// Handled: the handler returned success; nothing is committed.
	Handled = "handled"
	// TargetCommitted: the target transaction committed (on etlexec's own database this is
	// the same commit as the attempt's record).
	TargetCommitted = "target-committed"
	// Recorded: the attempt's end is committed; the task is not yet acknowledged to asynq.
	Recorded = "recorded"
)

// Env is the variable that arms a failpoint.
const Env = "ETL_FAILPOINT"

var armed struct {
	point string
	at    int64
	hits  atomic.Int64
}

func init() {
	p, at, err := Parse(os.Getenv(Env))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", Env, err)
		os.Exit(2)
	}
	armed.point, armed.at = p, at
}

// Parse reads "<point>@<n>"; "" disarms.
func Parse(s string) (point string, at int64, err error) {
	if s == "" {
		return "", 0, nil
	}
	p, n, ok := strings.Cut(s, "@")
	switch p {
	case Claimed, Handled, TargetCommitted, Recorded:
	default:
		return "", 0, fmt.Errorf("unknown point %q: want %s, %s, %s or %s (then @n)", p, Claimed, Handled, TargetCommitted, Recorded)
	}
	at, err = strconv.ParseInt(n, 10, 64)
	if !ok || err != nil || at < 1 {
		return "", 0, fmt.Errorf("%q: want <point>@<n> with n >= 1", s)
	}
	return p, at, nil
}

// Hit marks that the process reached point; it kills the process if that is the armed hit.
func Hit(point string) {
	if armed.point != point {
		return
	}
	if armed.hits.Add(1) == armed.at {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
