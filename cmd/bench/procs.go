package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/hibiken/asynq"

	"github.com/etlexec/etlexec/internal/servertest"
)

func init() {
	commands["bare-server"] = command{
		summary: "one bare asynq server with a no-op handler until SIGTERM (the pipeline's baseline process)",
		run:     bareServer,
	}
	commands["hog"] = command{
		summary: "N CPU-bound busy-looping processes until SIGTERM (make test-faults-loaded)",
		run:     hog,
	}
}

// bareServer serves bareTaskType tasks of one queue on REDIS_URL with a handler that does
// nothing: what asynq costs on its own.
func bareServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench bare-server", flag.ContinueOnError)
	queue := fs.String("queue", "bare", "queue to consume")
	concurrency := fs.Int("concurrency", 20, "asynq Concurrency")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opt, err := asynq.ParseRedisURI(os.Getenv("REDIS_URL"))
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	mux := asynq.NewServeMux()
	mux.HandleFunc(bareTaskType, func(context.Context, *asynq.Task) error { return nil })
	srv := asynq.NewServer(opt, asynq.Config{Concurrency: *concurrency, Queues: map[string]int{*queue: 1}, LogLevel: asynq.WarnLevel})
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("start asynq server: %w", err)
	}
	<-ctx.Done()
	srv.Shutdown()
	return nil
}

// hog runs servertest's CPU hogs until it is told to stop; they die with it.
func hog(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench hog", flag.ContinueOnError)
	n := fs.Int("n", 2, "hog processes, one core's worth each")
	if err := fs.Parse(args); err != nil {
		return err
	}
	h, err := servertest.StartHogs(*n)
	if err != nil {
		return err
	}
	fmt.Printf("bench hog: %d CPU hogs running (pids %v) until SIGTERM\n", *n, h.PIDs())
	<-ctx.Done()
	return h.Stop()
}
