// Command worker runs etlexec items with the built-in kinds. Teams with their own kinds build
// their own binary with the etlexec SDK (etlexec.NewWorker) or the etlworker package instead.
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
	code := cli.Main(ctx, cli.Worker(nil), os.Args[1:])
	stop()
	os.Exit(code)
}
