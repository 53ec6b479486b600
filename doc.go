// Package etlexec is the Go SDK of the etlexec worker: a job author's program imports it (and
// the etl package, which owns what a handler sees) to run its own kinds of job next to the
// built-in ones, in a worker main or inside a service of its own.
//
//	cfg, err := etlexec.ConfigFromEnv() // DATABASE_URL, REDIS_URL, ETL_* as cmd/worker reads them
//	if err != nil { ... }
//	w, err := etlexec.NewWorker(cfg)
//	if err != nil { ... }
//	w.Register("orders_api", etl.Handle(func(ctx context.Context, it *etl.Item, p OrdersParams) error {
//		...
//	}))
//	w.Use(func(next etl.HandlerFunc) etl.HandlerFunc { ... }) // around every kind's handler
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	err = w.Run(ctx) // until SIGTERM, then a graceful shutdown
//
// A service that owns its lifecycle calls [Worker.Start] and [Worker.Shutdown] instead of
// [Worker.Run], as with asynq's Server. [Worker.Start] documents the order in which the
// worker's pieces start and [Worker.Shutdown] the reverse order in which they stop.
package etlexec
