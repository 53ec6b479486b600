// Command enqueuer starts and operates etlexec runs, applies migrations and serves the console.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/etlexec/etlexec/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, cli.Enqueuer(), os.Args[1:])
	stop()
	os.Exit(code)
}
