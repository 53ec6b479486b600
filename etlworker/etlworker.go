// Package etlworker builds a worker binary that runs a team's own kinds next to the built-in
// ones. A whole worker main is:
//
//	func main() {
//		etlworker.Main(func(r *etl.Registry) {
//			r.Register("orders_api", ordersHandler)
//		})
//	}
//
// It reads the same environment and flags as cmd/worker (DATABASE_URL, REDIS_URL, ETL_*),
// and shuts down gracefully on SIGTERM. It is a thin main over the etlexec SDK
// (etlexec.NewWorker); a program that needs middleware, its own configuration or to embed the
// worker in a service uses the SDK directly.
package etlworker

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/cli"
)

// Main runs the worker with the built-in kinds plus those register adds, then exits.
func Main(register func(r *etl.Registry)) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, cli.Worker(register), os.Args[1:])
	stop()
	os.Exit(code)
}
