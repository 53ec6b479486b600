//go:build !containers

package redistest

// containerURL is the hook that -tags containers implements (see containers.go); without the
// tag no container is started and URL falls back to DefaultURL.
func containerURL() string { return "" }

// TerminateContainer is a no-op without -tags containers.
func TerminateContainer() {}
