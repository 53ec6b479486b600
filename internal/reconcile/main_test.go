package reconcile_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a goroutine the tests started outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
