// Package runstate owns the rules of a run's life, as pure functions: which status
// changes are allowed for runs and items, the status a run ends with given its items,
// the category reported for a failed run, whether and when a failed item is retried,
// and whether an item's cursor moves. It performs no I/O; the store and the worker
// apply its decisions.
package runstate
