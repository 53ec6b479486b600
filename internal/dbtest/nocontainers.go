//go:build !containers

package dbtest

// containerURL is the hook that -tags containers implements (see containers.go); without the
// tag no container is started and ServerURL falls back to DefaultURL.
func containerURL() string { return "" }

// TerminateContainer is a no-op without -tags containers.
func TerminateContainer() {}
