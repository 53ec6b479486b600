package etl

import (
	"context"
	"slices"
	"sync"
)

// HandlerFunc runs one attempt of one item. It returns nil when the item succeeded;
// otherwise an error classified by [Classify]. It must honour ctx: the executor
// cancels it when the item's timeout passes, the run is cancelled or the worker
// shuts down.
type HandlerFunc func(ctx context.Context, it *Item) error

// Registry maps a job kind (the kind column of dw_etl_jobs) to its handler. Like
// http.ServeMux it is filled at start-up and read concurrently afterwards; all
// methods are safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	handlers map[string]HandlerFunc
	configs  map[string]configSpec // kinds that declared their config (DeclareConfig)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{handlers: make(map[string]HandlerFunc)}
}

// Register adds the handler for kind. It panics when kind is empty, h is nil or kind
// is already registered: these are programming errors found at start-up, as with
// http.ServeMux.Handle.
func (r *Registry) Register(kind string, h HandlerFunc) {
	if kind == "" {
		panic("etl: Register with empty kind")
	}
	if h == nil {
		panic("etl: Register kind " + kind + " with nil handler")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.handlers[kind]; dup {
		panic("etl: kind " + kind + " registered twice")
	}
	r.handlers[kind] = h
}

// Lookup returns the handler registered for kind.
func (r *Registry) Lookup(kind string) (HandlerFunc, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	h, ok := r.handlers[kind]
	return h, ok
}

// Kinds returns the registered kinds in sorted order, for start-up logs and for
// checking that every job in dw_etl_jobs has a handler.
func (r *Registry) Kinds() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	kinds := make([]string, 0, len(r.handlers))
	for k := range r.handlers {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	return kinds
}
