// Command bench measures etlexec:
//
//	go run ./cmd/bench queries -scale small|full    history queries: p50/p95/p99 and plans, on a
//	                                                database it creates on DATABASE_URL's server
//	go run ./cmd/bench pipeline -n 20000            bare asynq vs etlexec worker processes on a
//	                                                private Postgres and Redis: rates, per-item costs
//	go run ./cmd/bench scale -n 1000000             one run of n items end to end on a private
//	                                                Postgres and Redis: trigger, RSS, Redis bytes,
//	                                                WAL, items/s, finalise, reconciler pass, runs show
//	go run ./cmd/bench hog -n 2                     CPU hogs until SIGTERM (make test-faults-loaded)
//
// bare-server is the pipeline's baseline process (a bare asynq server with a no-op handler).
// Each subcommand lives in its own file and adds itself to commands in an init, so files stay
// independent; main only dispatches on os.Args[1].
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/etlexec/etlexec/internal/dbtest"
)

// serverURLDefault is the local Postgres that scripts/services.sh provides.
const serverURLDefault = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// command is one subcommand: run gets the arguments after its name.
type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands = map[string]command{}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		return 2
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "bench: unknown subcommand %q\n", args[0])
		usage()
		return 2
	}
	err := c.run(ctx, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: bench SUBCOMMAND [flags]\n\nsubcommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, commands[n].summary)
	}
}

// serverURL is DATABASE_URL, or the local service.
func serverURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return serverURLDefault
}

// withDatabase returns the server URL pointing at database name.
func withDatabase(u, name string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "postgres" && pu.Scheme != "postgresql") {
		return "", fmt.Errorf("DATABASE_URL: want postgres://..., got %q", u)
	}
	pu.Path = "/" + name
	return pu.String(), nil
}

// recreateDatabase drops database name (terminating its sessions) and creates it empty, then
// applies the migrations and the log partitions as of now, exactly as `enqueuer migrate` does.
// It returns the database's URL.
func recreateDatabase(ctx context.Context, name string) (string, error) {
	admin, err := pgx.Connect(ctx, serverURL())
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", serverURL(), err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		return "", fmt.Errorf("drop database %s: %w", name, err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := withDatabase(serverURL(), name)
	if err != nil {
		return "", err
	}
	if err := dbtest.Migrate(ctx, u); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return u, nil
}

// phase prints a step's name, runs it and prints how long it took.
func phase(name string, fn func() error) error {
	fmt.Printf("%-34s ", name+" ...")
	start := time.Now()
	if err := fn(); err != nil {
		fmt.Println("FAILED")
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Printf("%8.2fs\n", time.Since(start).Seconds())
	return nil
}
