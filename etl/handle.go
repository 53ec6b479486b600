package etl

import "context"

// Handle returns a [HandlerFunc] for a kind whose params decode into P: it decodes the item's
// params as [Item.Params] does (unknown fields refused, failures are DATA errors, never
// retried) and calls fn with them, so a handler states its parameters in its signature:
//
//	type OrdersParams struct {
//		Region string `json:"region"`
//	}
//
//	r.Register("orders_api", etl.Handle(func(ctx context.Context, it *etl.Item, p OrdersParams) error {
//		// ... load p.Region ...
//		return nil
//	}))
func Handle[P any](fn func(ctx context.Context, it *Item, p P) error) HandlerFunc {
	if fn == nil {
		panic("etl: Handle with nil func")
	}
	return func(ctx context.Context, it *Item) error {
		var p P
		if err := it.Params(&p); err != nil {
			return err
		}
		return fn(ctx, it, p)
	}
}

// Middleware wraps every handler a worker runs, outermost first, as asynq's and net/http's
// middleware do: it sees each attempt's context and item before the kind's handler and its
// error after. It runs inside the executor's panic recovery and before the attempt is recorded,
// so what it returns is what the ledger classifies.
type Middleware func(next HandlerFunc) HandlerFunc

// Chain wraps h in mws, mws[0] outermost.
func Chain(h HandlerFunc, mws ...Middleware) HandlerFunc {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}
