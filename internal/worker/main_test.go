package worker_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a goroutine the tests started outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// A worker's idle handler-runner goroutines (runners.go) are never told to exit:
		// Shutdown does not close them. Reported; remove this once the worker stops them.
		goleak.IgnoreTopFunction("github.com/etlexec/etlexec/internal/worker.(*runners).loop"),
	)
}
