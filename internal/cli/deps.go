package cli

// Shared plumbing of the enqueuer subcommands: connecting the store, parsing REDIS_URL, building
// an enqueuer, parsing ids and printing results.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/spf13/cobra"

	"github.com/etlexec/etlexec/internal/config"
	"github.com/etlexec/etlexec/internal/dbmigrate"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/store"
)

// store opens the store at DATABASE_URL, refusing a database that lacks migrations this binary
// has (with the command that fixes it); the caller closes it.
func (e *env) store(ctx context.Context) (*store.Store, error) {
	st, err := store.Connect(ctx, e.cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	if err := checkMigrated(ctx, e.cfg.DatabaseURL); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// checkMigrated says "run enqueuer migrate" when the database has no etlexec schema or misses
// some of this binary's migrations.
func checkMigrated(ctx context.Context, url string) error {
	db, err := dbmigrate.Open(url)
	if err != nil {
		return err
	}
	defer db.Close()
	status, err := (&dbmigrate.Migrator{DB: db}).Status(ctx)
	if err != nil {
		return fmt.Errorf("check the database's migrations: %w", err)
	}
	switch {
	case len(status.Applied) == 0:
		return fmt.Errorf("%w (the database at %s has no etlexec schema)", store.ErrNotMigrated, config.Redact(url))
	case len(status.Pending) > 0:
		return fmt.Errorf("%w (%d migrations of this binary are not applied, first %s)", store.ErrNotMigrated,
			len(status.Pending), status.Pending[0])
	}
	return nil
}

// withStore opens the store, runs fn with it and closes it.
func (e *env) withStore(ctx context.Context, fn func(st *store.Store) error) error {
	st, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(st)
}

// redisOpt parses REDIS_URL.
func (e *env) redisOpt() (asynq.RedisConnOpt, error) { return parseRedisURL(e.cfg.RedisURL) }

// parseRedisURL parses a REDIS_URL value, naming the variable in the error.
func parseRedisURL(url string) (asynq.RedisConnOpt, error) {
	redis, err := asynq.ParseRedisURI(url)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	return redis, nil
}

// connect opens the store, then parses REDIS_URL; the caller closes the store.
func (e *env) connect(ctx context.Context) (*store.Store, asynq.RedisConnOpt, error) {
	st, err := e.store(ctx)
	if err != nil {
		return nil, nil, err
	}
	redis, err := e.redisOpt()
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, redis, nil
}

// newEnqueuer builds an enqueuer on redis from cfg; the caller closes it.
func newEnqueuer(redis asynq.RedisConnOpt, cfg enqueue.Config) (*enqueue.Enqueuer, error) {
	cfg.Redis = redis
	return enqueue.New(cfg)
}

// printJSONOr writes v as one JSON line with --json, else calls text with stdout.
func printJSONOr(cmd *cobra.Command, asJSON bool, v any, text func(w io.Writer) error) error {
	if asJSON {
		return json.NewEncoder(stdout(cmd)).Encode(v)
	}
	return text(stdout(cmd))
}

// writeTable aligns what fill writes as tab-separated columns on w.
func writeTable(w io.Writer, fill func(tw io.Writer)) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fill(tw)
	return tw.Flush()
}

// parseUUIDArg parses a uuid given as name; the error reads `name "arg": not a noun`.
func parseUUIDArg(name, noun, arg string) (uuid.UUID, error) {
	id, err := uuid.Parse(arg)
	if err != nil {
		return uuid.Nil, fmt.Errorf("%s %q: not a %s", name, arg, noun)
	}
	return id, nil
}
