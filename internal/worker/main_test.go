package worker_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a goroutine the tests started outlives them, and removes
// the worker binary the fleet tests built.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.Cleanup(func(code int) { // replaces goleak's own os.Exit
			if binDir != "" {
				_ = os.RemoveAll(binDir)
			}
			os.Exit(code)
		}),
	)
}
