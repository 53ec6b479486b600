package etlexec_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/etlexec/etlexec"
	"github.com/etlexec/etlexec/etl"
)

// OrdersParams are the params of one item of the orders_api kind.
type OrdersParams struct {
	Region string `json:"region"`
}

func loadOrders(ctx context.Context, it *etl.Item, p OrdersParams) error {
	it.Log().Info().Str("region", p.Region).Msg("loading orders")
	// ... fetch the orders of p.Region modified in it.Window(), write them through it.Target() ...
	it.AddRead(120)
	it.AddWritten(118)
	return nil
}

// A team's worker main: the built-in kinds plus its own, configured from the environment
// cmd/worker reads, running until SIGTERM.
func ExampleNewWorker() {
	cfg, err := etlexec.ConfigFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	w, err := etlexec.NewWorker(cfg)
	if err != nil {
		log.Fatal(err)
	}
	w.Register("orders_api", etl.Handle(loadOrders))
	w.Use(func(next etl.HandlerFunc) etl.HandlerFunc {
		return func(ctx context.Context, it *etl.Item) error {
			start := time.Now()
			err := next(ctx, it)
			it.Log().Debug().Dur("elapsed", time.Since(start)).Msg("handler returned")
			return err
		}
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := w.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// A service that owns its lifecycle embeds a worker with Start and Shutdown.
func ExampleWorker_Start() {
	kinds := etl.NewRegistry()
	kinds.Register("orders_api", etl.Handle(loadOrders))
	w, err := etlexec.NewWorker(etlexec.Config{
		DatabaseURL:      os.Getenv("DATABASE_URL"),
		RedisURL:         os.Getenv("REDIS_URL"),
		Queues:           []string{"orders"},
		Concurrency:      8,
		Kinds:            kinds,
		SkipBuiltinKinds: true,
		SkipTracingSetup: true, // the service installed its own OpenTelemetry provider
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	// ... the service runs ...
	ctx, cancel := context.WithTimeout(context.Background(), etlexec.ShutdownTimeoutDefault+30*time.Second)
	defer cancel()
	if err := w.Shutdown(ctx); err != nil {
		log.Print(err)
	}
}
