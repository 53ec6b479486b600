package sqlincremental

// WithTestHook exposes the test hook points to the package's external tests.
var WithTestHook = withTestHook
