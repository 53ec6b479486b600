package reconcile_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a goroutine the tests started outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The end-to-end test runs a worker, and a worker's idle handler-runner goroutines
		// (internal/worker/runners.go) are never told to exit: Shutdown does not close them.
		// Reported; remove this once the worker stops its runners.
		goleak.IgnoreTopFunction("github.com/etlexec/etlexec/internal/worker.(*runners).loop"),
	)
}
