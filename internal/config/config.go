// Package config holds the environment-driven configuration of etlexec's binaries. Each struct
// documents its variables, carries named defaults, and validates itself; flags bound with
// Bind* override the environment.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/spf13/pflag"
)

const (
	// DatabaseURLDefault is the local Postgres that scripts/services.sh provides.
	DatabaseURLDefault = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	// RedisURLDefault is the local Redis.
	RedisURLDefault = "redis://127.0.0.1:6379/0"
)

// Common is what every binary needs.
type Common struct {
	// DatabaseURL is etlexec's own Postgres (the record). Env DATABASE_URL.
	DatabaseURL string `env:"DATABASE_URL"`
	// RedisURL is the Redis asynq delivers through. Env REDIS_URL.
	RedisURL string `env:"REDIS_URL"`
	// LogLevel is the zerolog level (trace, debug, info, warn, error). Env ETL_LOG_LEVEL.
	LogLevel string `env:"ETL_LOG_LEVEL"`
	// LogFormat is json (default; one JSON object per line) or console. Env ETL_LOG_FORMAT.
	LogFormat string `env:"ETL_LOG_FORMAT"`
}

// WithDefaults fills unset fields.
func (c *Common) WithDefaults() {
	if c.DatabaseURL == "" {
		c.DatabaseURL = DatabaseURLDefault
	}
	if c.RedisURL == "" {
		c.RedisURL = RedisURLDefault
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.LogFormat == "" {
		c.LogFormat = "json"
	}
}

// Validate names the first field that is wrong.
func (c *Common) Validate() error {
	var errs []error
	if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		errs = append(errs, fmt.Errorf("DATABASE_URL: want postgres://..., got %q", Redact(c.DatabaseURL)))
	}
	if u, err := url.Parse(c.RedisURL); err != nil || !strings.HasPrefix(u.Scheme, "redis") {
		errs = append(errs, fmt.Errorf("REDIS_URL: want redis://..., got %q", Redact(c.RedisURL)))
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("ETL_LOG_LEVEL: want trace|debug|info|warn|error, got %q", c.LogLevel))
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		errs = append(errs, fmt.Errorf("ETL_LOG_FORMAT: want json|console, got %q", c.LogFormat))
	}
	return errors.Join(errs...)
}

// BindCommon registers flags that override the environment.
func BindCommon(fs *pflag.FlagSet, c *Common) {
	fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "Postgres URL (env DATABASE_URL)")
	fs.StringVar(&c.RedisURL, "redis-url", c.RedisURL, "Redis URL (env REDIS_URL)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level (env ETL_LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "json or console (env ETL_LOG_FORMAT)")
}

// Load parses the environment into v (a pointer to a config struct).
func Load(v any) error {
	if err := env.Parse(v); err != nil {
		return fmt.Errorf("read environment: %w", err)
	}
	return nil
}

// Redact hides the password in a URL, for logs and errors.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Worker configures cmd/worker.
type Worker struct {
	Common
	// Queues the worker consumes, comma-separated. Env ETL_QUEUES. Default QueuesDefault.
	Queues []string `env:"ETL_QUEUES" envSeparator:","`
	// Concurrency is how many items run at once in this process. Env ETL_CONCURRENCY.
	Concurrency int `env:"ETL_CONCURRENCY"`
	// ShutdownTimeout is how long in-flight items may finish after SIGTERM before their
	// contexts are cancelled; keep it below the pod's grace period. Env ETL_SHUTDOWN_TIMEOUT.
	ShutdownTimeout time.Duration `env:"ETL_SHUTDOWN_TIMEOUT"`
	// HTTPAddr serves /metrics, /healthz and /readyz; empty disables. Env ETL_HTTP_ADDR.
	HTTPAddr string `env:"ETL_HTTP_ADDR"`
	// WorkerID names this process in attempts; hostname:pid when empty. Env ETL_WORKER_ID.
	WorkerID string `env:"ETL_WORKER_ID"`
	// Lease is how long an attempt holds its item without a heartbeat before another delivery
	// may take it over. Env ETL_LEASE.
	Lease time.Duration `env:"ETL_LEASE"`
	// ReconcileInterval is how often the leader reconciles Postgres with Redis. Env ETL_RECONCILE_INTERVAL.
	ReconcileInterval time.Duration `env:"ETL_RECONCILE_INTERVAL"`
}

const (
	QueuesDefault            = "etl"
	ConcurrencyDefault       = 20
	ShutdownTimeoutDefault   = 50 * time.Second
	LeaseDefault             = 30 * time.Second
	ReconcileIntervalDefault = 30 * time.Second
)

// WithDefaults fills unset fields.
func (w *Worker) WithDefaults() {
	w.Common.WithDefaults()
	if len(w.Queues) == 0 {
		w.Queues = []string{QueuesDefault}
	}
	if w.Concurrency == 0 {
		w.Concurrency = ConcurrencyDefault
	}
	if w.ShutdownTimeout == 0 {
		w.ShutdownTimeout = ShutdownTimeoutDefault
	}
	if w.Lease == 0 {
		w.Lease = LeaseDefault
	}
	if w.ReconcileInterval == 0 {
		w.ReconcileInterval = ReconcileIntervalDefault
	}
}

// Validate names the first field that is wrong.
func (w *Worker) Validate() error {
	errs := []error{w.Common.Validate()}
	for _, q := range w.Queues {
		if q == "" || strings.ContainsAny(q, "{}") {
			errs = append(errs, fmt.Errorf("ETL_QUEUES: queue name %q must be non-empty and contain no braces", q))
		}
	}
	if w.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("ETL_CONCURRENCY: want >= 1, got %d", w.Concurrency))
	}
	if w.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("ETL_SHUTDOWN_TIMEOUT: want >= 0, got %s", w.ShutdownTimeout))
	}
	if w.Lease < time.Second {
		errs = append(errs, fmt.Errorf("ETL_LEASE: want >= 1s, got %s", w.Lease))
	}
	return errors.Join(errs...)
}

// BindWorker registers the worker's flags.
func BindWorker(fs *pflag.FlagSet, w *Worker) {
	BindCommon(fs, &w.Common)
	fs.StringSliceVar(&w.Queues, "queues", w.Queues, "queues to consume (env ETL_QUEUES)")
	fs.IntVar(&w.Concurrency, "concurrency", w.Concurrency, "items run at once (env ETL_CONCURRENCY)")
	fs.DurationVar(&w.ShutdownTimeout, "shutdown-timeout", w.ShutdownTimeout, "grace for in-flight items on SIGTERM (env ETL_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&w.HTTPAddr, "http-addr", w.HTTPAddr, "address for /metrics /healthz /readyz (env ETL_HTTP_ADDR)")
	fs.StringVar(&w.WorkerID, "worker-id", w.WorkerID, "worker id recorded on attempts (env ETL_WORKER_ID)")
	fs.DurationVar(&w.Lease, "lease", w.Lease, "attempt lease without heartbeat (env ETL_LEASE)")
	fs.DurationVar(&w.ReconcileInterval, "reconcile-interval", w.ReconcileInterval, "reconciler period (env ETL_RECONCILE_INTERVAL)")
}
