// Package store owns every SQL statement etlexec runs against its own database. Queries live
// in queries/*.sql and are compiled by sqlc into the sqlcdb package, whose types stay inside
// store; bulk writes use COPY. pgx.ErrNoRows is mapped to ErrNotFound here and nowhere else,
// transient errors are recognised here (IsTransient, Retry) and text bound for Postgres is made
// storable here (Text, JSON).
package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"

	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

var (
	// ErrNotFound is returned when the row asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrLostClaim is returned when an attempt tries to record its end after it lost the item
	// (its worker was declared dead, the run timed out, an operator intervened).
	ErrLostClaim = errors.New("attempt no longer holds the item")
)

// Options shape the sessions of a pool.
type Options struct {
	// AppName is every session's application_name, as pg_stat_activity shows it. A worker puts
	// its id in it, so that a reconciler that declared it dead can end its sessions.
	AppName string
	// MaxConns, when larger, replaces the URL's pool_max_conns (or pgx's default).
	MaxConns int32
	// Bounded gives every statement a statement and lock timeout, bounds idle time inside a
	// transaction and plans statements generically: for bookkeeping sessions, whose statements
	// are short and keyed, never for sessions running a handler's target transaction.
	Bounded bool
}

// Session limits of Bounded pools.
const (
	StatementTimeout       = 30 * time.Second
	LockTimeout            = 5 * time.Second
	IdleInTransaction      = 60 * time.Second
	keepAliveIdle          = 10 * time.Second
	keepAliveInterval      = 5 * time.Second
	keepAliveCount         = 3
	tcpUserTimeout         = 20 * time.Second
	connectTimeoutDefault  = 10 * time.Second
	livenessPoolMaxConns   = 2
	livenessPoolAppSuffix  = " liveness"
	maxApplicationNameSize = 63
)

// Store is the handle to etlexec's database. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	q    *sqlcdb.Queries

	// liveness is a small pool of its own for heartbeats and lease renewals, so that a busy
	// main pool never delays the statements that keep a worker alive.
	livenessOnce sync.Once
	liveness     *pgxpool.Pool
	livenessQ    *sqlcdb.Queries
}

// New wraps a pool.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, q: sqlcdb.New(pool)}
}

// Connect opens a pool on url with default options and checks that the database answers.
func Connect(ctx context.Context, url string) (*Store, error) {
	return Open(ctx, url, Options{})
}

// Open opens a store on url with opts and checks that the database answers.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	pool, err := OpenPool(ctx, url, opts)
	if err != nil {
		return nil, err
	}
	return New(pool), nil
}

// ParseURL parses DATABASE_URL in any form pgx accepts (URL or key=value, pool_* settings
// included), naming the variable in its error.
func ParseURL(url string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	return cfg, nil
}

// OpenPool opens a pgx pool on url with opts: keepalives and a TCP user timeout on every
// connection, so a vanished peer is noticed in seconds rather than the kernel's two hours, the
// uuid codec registered, and queries traced as child spans (a no-op without a provider).
func OpenPool(ctx context.Context, url string, opts Options) (*pgxpool.Pool, error) {
	cfg, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	configure(cfg, opts)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to postgres at %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}

func configure(cfg *pgxpool.Config, opts Options) {
	if opts.MaxConns > cfg.MaxConns {
		cfg.MaxConns = opts.MaxConns
	}
	rp := cfg.ConnConfig.RuntimeParams
	if opts.AppName != "" {
		rp["application_name"] = truncateBytes(opts.AppName, maxApplicationNameSize)
	}
	// Server side: the backend notices a dead client and ends its session (releasing its locks).
	setDefault(rp, "tcp_keepalives_idle", strconv.Itoa(int(keepAliveIdle.Seconds())))
	setDefault(rp, "tcp_keepalives_interval", strconv.Itoa(int(keepAliveInterval.Seconds())))
	setDefault(rp, "tcp_keepalives_count", strconv.Itoa(keepAliveCount))
	setDefault(rp, "tcp_user_timeout", strconv.Itoa(int(tcpUserTimeout.Milliseconds())))
	if opts.Bounded {
		setDefault(rp, "statement_timeout", strconv.Itoa(int(StatementTimeout.Milliseconds())))
		setDefault(rp, "lock_timeout", strconv.Itoa(int(LockTimeout.Milliseconds())))
		setDefault(rp, "idle_in_transaction_session_timeout", strconv.Itoa(int(IdleInTransaction.Milliseconds())))
		// Batch statements take arrays; a custom plan per call would cost more than the call.
		setDefault(rp, "plan_cache_mode", "force_generic_plan")
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeoutDefault
	}
	// Client side: the same for a server (or a network path) that vanished.
	d := &net.Dialer{
		Timeout:         cfg.ConnConfig.ConnectTimeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount},
		Control:         setUserTimeout,
	}
	cfg.ConnConfig.DialFunc = d.DialContext
	cfg.ConnConfig.Tracer = otelpgx.NewTracer()
	prev := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		pgxuuid.Register(c.TypeMap())
		if prev != nil {
			return prev(ctx, c)
		}
		return nil
	}
}

func setDefault(m map[string]string, k, v string) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

func truncateBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// setUserTimeout bounds how long sent data may stay unacknowledged (TCP_USER_TIMEOUT).
func setUserTimeout(network, _ string, c syscall.RawConn) error {
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return nil
	}
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeoutOpt, int(tcpUserTimeout.Milliseconds()))
	})
	return errors.Join(err, serr)
}

// tcpUserTimeoutOpt is TCP_USER_TIMEOUT (linux/tcp.h).
const tcpUserTimeoutOpt = 0x12

// Pool exposes the underlying pool, for tests and tools.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// livenessQueries returns queries on the store's liveness pool, built on first use.
func (s *Store) livenessQueries() *sqlcdb.Queries {
	s.livenessOnce.Do(func() {
		cfg := s.pool.Config().Copy()
		cfg.MaxConns, cfg.MinConns = livenessPoolMaxConns, 0
		if app := cfg.ConnConfig.RuntimeParams["application_name"]; app != "" {
			cfg.ConnConfig.RuntimeParams["application_name"] = truncateBytes(app+livenessPoolAppSuffix, maxApplicationNameSize)
		}
		p, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			s.livenessQ = s.q // building a pool from a valid config does not fail; be safe anyway
			return
		}
		s.liveness, s.livenessQ = p, sqlcdb.New(p)
	})
	return s.livenessQ
}

// Close closes the pools.
func (s *Store) Close() {
	if s.liveness != nil {
		s.liveness.Close()
	}
	s.pool.Close()
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

// WithTx binds the store's statements to a transaction the caller owns (a handler's target
// transaction on etlexec's own database, in which the item's outcome commits).
func (s *Store) WithTx(tx pgx.Tx) *Tx { return &Tx{tx: tx, q: s.q.WithTx(tx)} }

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
