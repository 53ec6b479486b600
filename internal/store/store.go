// Package store owns every SQL statement etlexec runs against its own database. Queries live
// in queries/*.sql and are compiled by sqlc into the sqlcdb package, whose types stay inside
// store; bulk writes use COPY. pgx.ErrNoRows is mapped to ErrNotFound here and nowhere else.
package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

var (
	// ErrNotFound is returned when the row asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrLostClaim is returned when an attempt tries to record its end after another attempt
	// took the item (its lease expired or the task was delivered elsewhere).
	ErrLostClaim = errors.New("attempt no longer holds the item")
)

// Store is the handle to etlexec's database. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	q    *sqlcdb.Queries

	relaxedOnce sync.Once
	relaxedPool *pgxpool.Pool
	relaxedQ    *sqlcdb.Queries
}

// New wraps a pool.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, q: sqlcdb.New(pool)}
}

// Connect opens a pool on url and checks that the database answers.
func Connect(ctx context.Context, url string) (*Store, error) {
	return ConnectSized(ctx, url, 0)
}

// PoolSizeFor is the pool a worker running concurrency items needs: each running item may hold
// a target transaction while its bookkeeping needs a second connection, plus room for
// heartbeats, finalisation and the log sink. A smaller pool can deadlock under load.
func PoolSizeFor(concurrency int) int32 { return int32(2*concurrency + 8) }

// ConnectSized is Connect with at least maxConns connections in the pool (0 keeps pgx's
// default or the URL's pool_max_conns).
func ConnectSized(ctx context.Context, url string, maxConns int32) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	if maxConns > cfg.MaxConns {
		cfg.MaxConns = maxConns
	}
	// Every query becomes a child span of the caller's trace (a no-op without a provider).
	cfg.ConnConfig.Tracer = otelpgx.NewTracer()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to postgres at %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return New(pool), nil
}

// Pool exposes the underlying pool, for the executor's default target and for tests.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pools.
func (s *Store) Close() {
	if s.relaxedPool != nil {
		s.relaxedPool.Close()
	}
	s.pool.Close()
}

// relaxed returns queries on sessions with synchronous_commit off, for writes that are safe to
// lose in a database crash: a claim or heartbeat lost with the crash leaves the item claimable
// again (its later finish is rejected and the item retried), and every durable commit that
// follows flushes them anyway. It saves a WAL flush wait per item. Falls back to the main pool
// when the second pool cannot be built.
func (s *Store) relaxed() *sqlcdb.Queries {
	s.relaxedOnce.Do(func() {
		cfg := s.pool.Config().Copy()
		cfg.MaxConns = max(2, cfg.MaxConns/4) // claims and heartbeats are short statements
		cfg.MinConns = 0
		if cfg.ConnConfig.RuntimeParams == nil {
			cfg.ConnConfig.RuntimeParams = map[string]string{}
		}
		cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
		p, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			s.relaxedQ = s.q
			return
		}
		s.relaxedPool, s.relaxedQ = p, sqlcdb.New(p)
	})
	return s.relaxedQ
}

// Tx is a store bound to one transaction.
type Tx struct {
	tx pgx.Tx
	q  *sqlcdb.Queries
}

// InTx runs fn in a transaction, committing when it returns nil.
func (s *Store) InTx(ctx context.Context, fn func(tx *Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return fn(&Tx{tx: tx, q: s.q.WithTx(tx)})
	})
}

// mapErr maps pgx.ErrNoRows to ErrNotFound, once, for every caller.
func mapErr(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// IsUniqueViolation reports whether err is a unique violation of the named constraint or index
// (any, when name is empty).
func IsUniqueViolation(err error, name string) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23505" {
		return false
	}
	return name == "" || pe.ConstraintName == name
}

// Now is the database clock; every recorded time comes from it, never a worker's clock.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	var t time.Time
	if err := s.pool.QueryRow(ctx, `SELECT now()`).Scan(&t); err != nil {
		return time.Time{}, fmt.Errorf("read database clock: %w", err)
	}
	return t, nil
}
