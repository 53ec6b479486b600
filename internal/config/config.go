// Package config holds the environment-driven configuration of etlexec's binaries. Each struct
// documents its variables, carries named defaults, and validates itself; flags bound with
// Bind* override the environment.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/jackc/pgx/v5/pgxpool"
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
	// AllowRedisEviction lets the process start against a Redis whose maxmemory-policy may
	// evict keys (asynq's tasks are keys: evicted tasks are rebuilt by the reconciler, late).
	// Env ETL_ALLOW_REDIS_EVICTION.
	AllowRedisEviction bool `env:"ETL_ALLOW_REDIS_EVICTION"`
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
	// Any form pgx accepts: a postgres:// URL or key=value pairs, pool_* settings included.
	if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil || strings.TrimSpace(c.DatabaseURL) == "" {
		errs = append(errs, fmt.Errorf("DATABASE_URL: want postgres://... or key=value settings, got %q", Redact(c.DatabaseURL)))
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
	fs.BoolVar(&c.AllowRedisEviction, "allow-redis-eviction", c.AllowRedisEviction,
		"start even if Redis's maxmemory-policy may evict keys (env ETL_ALLOW_REDIS_EVICTION)")
}

// Load parses the environment into v (a pointer to a config struct). A value that does not
// parse is an error naming the variable, its value and the form wanted; the caller must treat
// it as fatal, never fall back to a default.
func Load(v any) error {
	err := env.Parse(v)
	if err == nil {
		return nil
	}
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return fmt.Errorf("read environment: %w", err)
	}
	vars := envNames(reflect.TypeOf(v).Elem())
	errs := make([]error, 0, len(agg.Errors))
	for _, e := range agg.Errors {
		var pe env.ParseError
		if !errors.As(e, &pe) {
			errs = append(errs, e)
			continue
		}
		name := vars[pe.Name]
		errs = append(errs, fmt.Errorf("%s: %q is not %s: %w", name, os.Getenv(name), wantOf(pe.Type), pe.Err))
	}
	return errors.Join(errs...)
}

// envNames maps struct field names (embedded structs included) to their env tags.
func envNames(t reflect.Type) map[string]string {
	out := map[string]string{}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			for k, v := range envNames(f.Type) {
				out[k] = v
			}
			continue
		}
		if tag, ok := f.Tag.Lookup("env"); ok {
			out[f.Name], _, _ = strings.Cut(tag, ",")
		}
	}
	return out
}

func wantOf(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "a duration (e.g. 30s, 5m)"
	case t.Kind() == reflect.Bool:
		return "a boolean (true or false)"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "a whole number"
	}
	return "a " + t.String()
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
	// Queues the worker consumes, comma-separated, each with an optional weight: `etl=6,backfill=1`
	// serves etl about six times as often as backfill while both have tasks; a plain name has
	// weight 1. Env ETL_QUEUES. Default QueuesDefault.
	Queues []string `env:"ETL_QUEUES" envSeparator:","`
	// StrictPriority serves a queue only while every queue of higher weight is empty (asynq's
	// StrictPriority). Env ETL_STRICT_PRIORITY.
	StrictPriority bool `env:"ETL_STRICT_PRIORITY"`
	// Concurrency is how many items run at once in this process. Env ETL_CONCURRENCY.
	Concurrency int `env:"ETL_CONCURRENCY"`
	// Prefetch is how many more deliveries the process takes from Redis and claims while every
	// handler is busy, so that a claim's round trip to Postgres overlaps running items; 0 or
	// unset means Concurrency. Lower it (to 1) for long-running items, whose claimed-ahead deliveries
	// would wait long for a handler. Env ETL_PREFETCH.
	Prefetch int `env:"ETL_PREFETCH"`
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
	// Linger is how long a claim waits for companions before its batch is written; 0 writes
	// eagerly (attempt ends wait at least 2ms). Env ETL_LINGER.
	Linger time.Duration `env:"ETL_LINGER"`
}

const (
	QueuesDefault      = "etl"
	ConcurrencyDefault = 20
	// PrefetchMax bounds ETL_PREFETCH: deliveries claimed ahead of a free handler.
	PrefetchMax              = 1000
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

// QueueWeightMax bounds a queue's weight in ETL_QUEUES.
const QueueWeightMax = 1000

// queuePattern is the queue names jobs.yaml accepts (internal/jobdef).
var queuePattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// QueueWeights splits ETL_QUEUES into the queue names, in order, and their weights.
func (w *Worker) QueueWeights() ([]string, map[string]int, error) {
	var (
		names   []string
		weights = map[string]int{}
		errs    []error
	)
	for _, entry := range w.Queues {
		entry = strings.TrimSpace(entry)
		name, weight, hasWeight := strings.Cut(entry, "=")
		name = strings.TrimSpace(name)
		if !queuePattern.MatchString(name) {
			errs = append(errs, fmt.Errorf("ETL_QUEUES: queue name %q must be 1-64 of letters, digits, '_', '.', ':', '-' (as a job's queue in jobs.yaml), in %q", name, entry))
			continue
		}
		n := 1
		if hasWeight {
			var err error
			n, err = strconv.Atoi(strings.TrimSpace(weight))
			if err != nil || n < 1 || n > QueueWeightMax {
				errs = append(errs, fmt.Errorf("ETL_QUEUES: weight %q of queue %s must be a whole number between 1 and %d (like etl=6,backfill=1)", weight, name, QueueWeightMax))
				continue
			}
		}
		if _, dup := weights[name]; dup {
			errs = append(errs, fmt.Errorf("ETL_QUEUES: queue %s is listed twice", name))
			continue
		}
		names = append(names, name)
		weights[name] = n
	}
	return names, weights, errors.Join(errs...)
}

// Validate names the first field that is wrong.
func (w *Worker) Validate() error {
	errs := []error{w.Common.Validate()}
	if _, _, err := w.QueueWeights(); err != nil {
		errs = append(errs, err)
	}
	if w.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("ETL_CONCURRENCY: want >= 1, got %d", w.Concurrency))
	}
	if w.Prefetch < 0 || w.Prefetch > PrefetchMax {
		errs = append(errs, fmt.Errorf("ETL_PREFETCH: want between 1 and %d (0 or unset: the concurrency), got %d", PrefetchMax, w.Prefetch))
	}
	if w.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("ETL_SHUTDOWN_TIMEOUT: want >= 0, got %s", w.ShutdownTimeout))
	}
	if w.Lease < time.Second {
		errs = append(errs, fmt.Errorf("ETL_LEASE: want >= 1s, got %s", w.Lease))
	}
	if w.ReconcileInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("ETL_RECONCILE_INTERVAL: want >= 100ms, got %s", w.ReconcileInterval))
	}
	if w.Linger < 0 || w.Linger > time.Second {
		errs = append(errs, fmt.Errorf("ETL_LINGER: want between 0 and 1s, got %s", w.Linger))
	}
	return errors.Join(errs...)
}

// BindWorker registers the worker's flags.
func BindWorker(fs *pflag.FlagSet, w *Worker) {
	BindCommon(fs, &w.Common)
	fs.StringSliceVar(&w.Queues, "queues", w.Queues, "queues to consume, with optional weights: etl=6,backfill=1 (env ETL_QUEUES)")
	fs.BoolVar(&w.StrictPriority, "strict-priority", w.StrictPriority, "serve a queue only while queues of higher weight are empty (env ETL_STRICT_PRIORITY)")
	fs.IntVar(&w.Concurrency, "concurrency", w.Concurrency, "items run at once (env ETL_CONCURRENCY)")
	fs.IntVar(&w.Prefetch, "prefetch", w.Prefetch, "deliveries claimed ahead while every handler is busy; 0: the concurrency (env ETL_PREFETCH)")
	fs.DurationVar(&w.ShutdownTimeout, "shutdown-timeout", w.ShutdownTimeout, "grace for in-flight items on SIGTERM (env ETL_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&w.HTTPAddr, "http-addr", w.HTTPAddr, "address for /metrics /healthz /readyz (env ETL_HTTP_ADDR)")
	fs.StringVar(&w.WorkerID, "worker-id", w.WorkerID, "worker id recorded on attempts (env ETL_WORKER_ID)")
	fs.DurationVar(&w.Lease, "lease", w.Lease, "attempt lease without heartbeat (env ETL_LEASE)")
	fs.DurationVar(&w.ReconcileInterval, "reconcile-interval", w.ReconcileInterval, "reconciler period (env ETL_RECONCILE_INTERVAL)")
	fs.DurationVar(&w.Linger, "linger", w.Linger, "wait this long to fill a claim or finish batch (env ETL_LINGER)")
}
