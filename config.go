package etlexec

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/config"
)

// Config configures a [Worker]. The zero value works against the local development services;
// every field left zero takes its named default (see [Config.WithDefaults]). Fields that
// cmd/worker reads from the environment name their variable: [ConfigFromEnv] fills them the
// same way, and [Config.Validate]'s messages name the variable too.
type Config struct {
	// DatabaseURL is etlexec's own Postgres, the ledger: a postgres:// URL or key=value
	// settings (pool_* settings included). Env DATABASE_URL. Defaults to DatabaseURLDefault.
	DatabaseURL string
	// RedisURL is the Redis asynq delivers items through. Env REDIS_URL. Defaults to
	// RedisURLDefault.
	RedisURL string
	// Queues are the asynq queues this worker consumes, in the form ETL_QUEUES takes. Env
	// ETL_QUEUES. Defaults to [QueuesDefault]. A name may carry a weight, "backfill=1"
	// (a plain name weighs 1): asynq serves queues in proportion to their weights.
	Queues []string
	// StrictPriority serves a queue only while every queue of higher weight is empty
	// (asynq's StrictPriority). Env ETL_STRICT_PRIORITY.
	StrictPriority bool
	// Concurrency is how many items run at once in this worker. Env ETL_CONCURRENCY. Defaults
	// to ConcurrencyDefault.
	Concurrency int
	// Prefetch is how many more deliveries the worker takes from Redis and claims while every
	// handler is busy, so a claim's round trip overlaps running items; lower it (to 1) for
	// long-running items. Env ETL_PREFETCH. Zero means Concurrency; at most PrefetchMax.
	Prefetch int
	// Lease is how long an attempt holds its item (and the worker counts as alive) without a
	// heartbeat before a reconciler takes it over. Env ETL_LEASE. Defaults to LeaseDefault.
	Lease time.Duration
	// ShutdownTimeout is how long in-flight items may finish once shutdown starts before their
	// contexts are cancelled; keep it below the pod's grace period. Env ETL_SHUTDOWN_TIMEOUT.
	// Defaults to ShutdownTimeoutDefault.
	ShutdownTimeout time.Duration
	// Linger is how long a claim waits for companions before its batch is written; zero writes
	// eagerly. Env ETL_LINGER. At most a second.
	Linger time.Duration
	// ReconcileInterval is how often the reconciler repairs Postgres against Redis while this
	// worker holds its lease (every worker runs one; one acts). Env ETL_RECONCILE_INTERVAL.
	// Defaults to ReconcileIntervalDefault.
	ReconcileInterval time.Duration
	// WorkerName is recorded on the attempts this worker runs. Env ETL_WORKER_ID. Defaults to
	// hostname:pid.
	WorkerName string
	// HTTPAddr serves /metrics, /healthz and /readyz (e.g. ":9090"); empty serves nothing.
	// Env ETL_HTTP_ADDR.
	HTTPAddr string
	// AllowRedisEviction starts the worker even when Redis's maxmemory-policy may evict keys
	// (evicted tasks are rebuilt by the reconciler, late). Env ETL_ALLOW_REDIS_EVICTION.
	AllowRedisEviction bool

	// LogOutput receives the worker's log lines (secrets redacted); the lines of a run also
	// land in dw_etl_run_logs. Defaults to os.Stderr. A writer, not a zerolog.Logger, because
	// the worker tees every line into its run-log sink. Timestamps follow the process-wide
	// zerolog.TimeFieldFormat; cmd/worker sets it to time.RFC3339Nano so that stored run log
	// lines keep sub-second order, and an embedding program may want to do the same.
	LogOutput io.Writer
	// LogLevel is trace, debug, info, warn or error. Env ETL_LOG_LEVEL. Defaults to
	// LogLevelDefault.
	LogLevel string
	// LogFormat is json (one object per line) or console. Env ETL_LOG_FORMAT. Defaults to
	// LogFormatDefault.
	LogFormat string

	// Kinds holds the job kinds of this worker beside the built-in ones, as River's Workers
	// bundle does; NewWorker copies it, so register on it before. Nil means none (use
	// [Worker.Register]).
	Kinds *etl.Registry
	// SkipBuiltinKinds leaves the built-in kinds (synthetic, sql_incremental, http_json) out,
	// for a worker that runs only a team's kinds or replaces a built-in one.
	SkipBuiltinKinds bool
	// Middleware wraps every handler, Middleware[0] outermost; [Worker.Use] adds more.
	Middleware []etl.Middleware
	// SkipTracingSetup leaves the global OpenTelemetry tracer provider and propagator alone,
	// for a service that installs its own. Otherwise the worker installs them (exporting over
	// OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set) and flushes them at shutdown.
	SkipTracingSetup bool
}

// Named defaults of Config: those of cmd/worker.
const (
	DatabaseURLDefault       = config.DatabaseURLDefault
	RedisURLDefault          = config.RedisURLDefault
	QueuesDefault            = config.QueuesDefault
	ConcurrencyDefault       = config.ConcurrencyDefault
	PrefetchMax              = config.PrefetchMax
	LeaseDefault             = config.LeaseDefault
	ShutdownTimeoutDefault   = config.ShutdownTimeoutDefault
	ReconcileIntervalDefault = config.ReconcileIntervalDefault
	LogLevelDefault          = "info"
	LogFormatDefault         = "json"
)

// ConfigFromEnv reads the environment cmd/worker reads (DATABASE_URL, REDIS_URL, ETL_*) into a
// Config with defaults filled. A variable that does not parse is an error naming it; the caller
// must treat it as fatal rather than fall back to a default. Set the fields the environment
// does not carry (Kinds, Middleware, LogOutput, ...) on the result.
func ConfigFromEnv() (Config, error) {
	var w config.Worker
	if err := config.Load(&w); err != nil {
		return Config{}, fmt.Errorf("etlexec configuration: %w", err)
	}
	var c Config
	c.setWorker(w)
	c.WithDefaults()
	return c, nil
}

// WithDefaults fills the zero fields with their defaults, by the same rules as cmd/worker.
func (c *Config) WithDefaults() {
	w := c.worker()
	w.WithDefaults()
	c.setWorker(w)
	if c.LogOutput == nil {
		c.LogOutput = os.Stderr
	}
}

// Validate reports every field NewWorker would refuse, zero fields counting as their
// defaults. Messages name the field's environment variable.
func (c Config) Validate() error {
	c.WithDefaults()
	w := c.worker()
	errs := []error{w.Validate()}
	for i, mw := range c.Middleware {
		if mw == nil {
			errs = append(errs, fmt.Errorf("config field Middleware[%d] is nil", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("etlexec configuration: %w", err)
	}
	return nil
}

// worker is c in internal/config's terms, where the defaults and rules live.
func (c *Config) worker() config.Worker {
	return config.Worker{
		Common: config.Common{
			DatabaseURL: c.DatabaseURL, RedisURL: c.RedisURL, LogLevel: c.LogLevel, LogFormat: c.LogFormat,
			AllowRedisEviction: c.AllowRedisEviction,
		},
		Queues: c.Queues, StrictPriority: c.StrictPriority, Concurrency: c.Concurrency, Prefetch: c.Prefetch,
		ShutdownTimeout: c.ShutdownTimeout, HTTPAddr: c.HTTPAddr, WorkerID: c.WorkerName, Lease: c.Lease, ReconcileInterval: c.ReconcileInterval,
		Linger: c.Linger,
	}
}

// setWorker sets the fields of c that mirror internal/config from w, the inverse of worker.
func (c *Config) setWorker(w config.Worker) {
	c.DatabaseURL, c.RedisURL, c.LogLevel, c.LogFormat = w.DatabaseURL, w.RedisURL, w.LogLevel, w.LogFormat
	c.AllowRedisEviction = w.AllowRedisEviction
	c.Queues, c.Concurrency, c.Prefetch, c.ShutdownTimeout = w.Queues, w.Concurrency, w.Prefetch, w.ShutdownTimeout
	c.HTTPAddr, c.WorkerName, c.Lease, c.ReconcileInterval = w.HTTPAddr, w.WorkerID, w.Lease, w.ReconcileInterval
	c.Linger, c.StrictPriority = w.Linger, w.StrictPriority
}
