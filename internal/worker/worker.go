// Package worker runs items: it consumes asynq item tasks, claims each item in Postgres,
// executes the job's handler against a target transaction, records the attempt, and finalises
// the run when its last item ends. Every path is safe to run twice.
package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/task"
	"github.com/etlexec/etlexec/internal/telemetry"
)

// Config configures a Worker.
type Config struct {
	// Store is etlexec's database. Required.
	Store *store.Store
	// Redis is where tasks come from. Required.
	Redis asynq.RedisConnOpt
	// Registry maps job kinds to handlers. Required.
	Registry *etl.Registry
	// Queues to consume, equally weighted. Defaults to ["etl"].
	Queues []string
	// Concurrency is how many items run at once. Defaults to ConcurrencyDefault.
	Concurrency int
	// ShutdownTimeout is how long in-flight items may finish after shutdown starts before their
	// contexts are cancelled. Defaults to ShutdownTimeoutDefault.
	ShutdownTimeout time.Duration
	// Lease is how long an attempt holds its item without heartbeat. Defaults to LeaseDefault.
	Lease time.Duration
	// WorkerID is recorded on attempts. Defaults to hostname:pid.
	WorkerID string
	// Logger is the base logger; item loggers derive from it.
	Logger zerolog.Logger
	// Retry computes backoff. Defaults to runstate.DefaultRetryPolicy.
	Retry runstate.RetryPolicy
	// Metrics, when set, receives attempt and finalisation observations.
	Metrics *telemetry.Metrics
	// OnSecrets, when set, receives secret values (from env vars a job's config names) so that
	// log sinks can redact them.
	OnSecrets func(vals ...string)
}

const (
	ConcurrencyDefault     = 20
	ShutdownTimeoutDefault = 50 * time.Second
	LeaseDefault           = 30 * time.Second
	// abandonGrace is how long a handler may ignore its cancelled context before the worker
	// records its attempt without it.
	abandonGrace = 5 * time.Second
)

func (c *Config) withDefaults() {
	if len(c.Queues) == 0 {
		c.Queues = []string{"etl"}
	}
	if c.Concurrency <= 0 {
		c.Concurrency = ConcurrencyDefault
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = ShutdownTimeoutDefault
	}
	if c.Lease <= 0 {
		c.Lease = LeaseDefault
	}
	if c.WorkerID == "" {
		host, _ := os.Hostname()
		c.WorkerID = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if c.Retry == (runstate.RetryPolicy{}) {
		c.Retry = runstate.DefaultRetryPolicy
	}
}

func (c *Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("worker config: Store is required")
	case c.Redis == nil:
		return errors.New("worker config: Redis is required")
	case c.Registry == nil:
		return errors.New("worker config: Registry is required")
	}
	return c.Retry.Validate()
}

// Worker executes item tasks.
type Worker struct {
	cfg     Config
	log     zerolog.Logger
	targets *targets

	// base is the parent of every handler context; cancelled when shutdown's grace ends,
	// because asynq abandons but never cancels a handler at its own shutdown timeout.
	base       context.Context
	cancelBase context.CancelCauseFunc

	finisherOnce sync.Once
	finishCh     chan *finishReq

	mu   sync.Mutex
	live map[uuid.UUID]*liveAttempt
	idle *sync.Cond
}

type liveAttempt struct {
	runID  uuid.UUID
	cancel context.CancelCauseFunc
}

// ErrRunCancelled is the cause given to a running item's context when its run is cancelled.
var ErrRunCancelled = errors.New("run cancelled")

// errShutdown is the cause given to running items when the shutdown grace ends.
var errShutdown = errors.New("worker shutting down")

// New builds a worker.
func New(cfg Config) (*Worker, error) {
	cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, log: cfg.Logger, live: map[uuid.UUID]*liveAttempt{}}
	w.idle = sync.NewCond(&w.mu)
	w.targets = newTargets(cfg.Store.Pool(), cfg.Concurrency)
	w.base, w.cancelBase = context.WithCancelCause(context.Background())
	return w, nil
}

// ID is the worker id recorded on attempts.
func (w *Worker) ID() string { return w.cfg.WorkerID }

// Mux returns the asynq handler mux serving item tasks.
func (w *Worker) Mux() *asynq.ServeMux {
	mux := asynq.NewServeMux()
	mux.Use(telemetry.Middleware)
	mux.HandleFunc(task.TypeItem, w.HandleItem)
	return mux
}

// Run serves tasks until ctx is done, then shuts down gracefully: stop fetching, let in-flight
// items finish within ShutdownTimeout, cancel the rest through their contexts, wait for their
// attempts to be recorded, and return.
func (w *Worker) Run(ctx context.Context) error {
	queues := map[string]int{}
	for _, q := range w.cfg.Queues {
		queues[q] = 1
	}
	srv := asynq.NewServer(w.cfg.Redis, asynq.Config{
		Concurrency:    w.cfg.Concurrency,
		Queues:         queues,
		RetryDelayFunc: task.RetryDelay,
		// asynq moves due retries to pending on this tick (default 5 s); a second keeps the
		// recorded next_retry_at honest for short backoffs at one cheap Redis call a second.
		DelayedTaskCheckInterval: time.Second,
		BaseContext:              func() context.Context { return w.base },
		ShutdownTimeout:          w.cfg.ShutdownTimeout + abandonGrace + 5*time.Second,
		Logger:                   asynqLogger{w.log},
		LogLevel:                 asynq.WarnLevel,
		IsFailure:                func(err error) bool { return !errors.Is(err, errDuplicate) },
	})
	if err := srv.Start(w.Mux()); err != nil {
		return fmt.Errorf("start asynq server: %w", err)
	}
	hbCtx, stopHB := context.WithCancel(context.Background())
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); w.heartbeatLoop(hbCtx) }()

	<-ctx.Done()
	w.log.Info().Dur("shutdown_timeout", w.cfg.ShutdownTimeout).Msg("worker stopping: no new tasks")
	srv.Stop() // stop fetching; in-flight handlers continue
	if !w.waitIdle(w.cfg.ShutdownTimeout) {
		w.log.Warn().Int("in_flight", w.inFlight()).Msg("shutdown timeout reached: cancelling in-flight items")
	}
	w.cancelBase(errShutdown)
	w.waitIdle(abandonGrace + 2*time.Second)
	srv.Shutdown()
	stopHB()
	<-hbDone
	w.targets.close()
	return nil
}

func (w *Worker) inFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.live)
}

// waitIdle waits until no attempt is live, or d passes; it reports whether idle was reached.
func (w *Worker) waitIdle(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if w.inFlight() == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *Worker) track(attemptID, runID uuid.UUID, cancel context.CancelCauseFunc) {
	w.mu.Lock()
	w.live[attemptID] = &liveAttempt{runID: runID, cancel: cancel}
	w.mu.Unlock()
}

func (w *Worker) untrack(attemptID uuid.UUID) {
	w.mu.Lock()
	delete(w.live, attemptID)
	w.mu.Unlock()
}

// CancelRun cancels the contexts of this worker's running attempts of runID.
func (w *Worker) CancelRun(runID uuid.UUID) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.live {
		if a.runID == runID {
			a.cancel(ErrRunCancelled)
			n++
		}
	}
	return n
}

// heartbeatLoop refreshes the leases of live attempts, a third of the lease apart.
func (w *Worker) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		ids := make([]uuid.UUID, 0, len(w.live))
		for id := range w.live {
			ids = append(ids, id)
		}
		w.mu.Unlock()
		if _, err := w.cfg.Store.Heartbeat(ctx, ids); err != nil && ctx.Err() == nil {
			w.log.Warn().Err(err).Int("attempts", len(ids)).Msg("heartbeat failed")
		}
		w.pollCancels(ctx)
	}
}

// pollCancels cancels live attempts whose run an operator cancelled.
func (w *Worker) pollCancels(ctx context.Context) {
	w.mu.Lock()
	runs := map[uuid.UUID]bool{}
	for _, a := range w.live {
		runs[a.runID] = true
	}
	w.mu.Unlock()
	for id := range runs {
		run, err := w.cfg.Store.GetRun(ctx, id)
		if err == nil && run.CancelRequestedAt != nil {
			w.CancelRun(id)
		}
	}
}

// targets holds one pool per target database a job names through an environment variable.
type targets struct {
	own      *pgxpool.Pool
	maxConns int32
	mu       sync.Mutex
	pools    map[string]*pgxpool.Pool
}

func newTargets(own *pgxpool.Pool, concurrency int) *targets {
	return &targets{own: own, maxConns: int32(concurrency + 2), pools: map[string]*pgxpool.Pool{}}
}

// pool returns the pool for a target DSN held in env var envName ("" = etlexec's database).
func (t *targets) pool(ctx context.Context, envName string) (*pgxpool.Pool, error) {
	if envName == "" {
		return t.own, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.pools[envName]; ok {
		return p, nil
	}
	dsn := os.Getenv(envName)
	if dsn == "" {
		return nil, etl.Permanent(etl.SystemError(fmt.Errorf("target database: environment variable %s is not set", envName)))
	}
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, etl.Permanent(etl.SystemError(fmt.Errorf("target database from %s: unparsable URL", envName)))
	}
	pcfg.MaxConns = max(pcfg.MaxConns, t.maxConns)
	p, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, etl.DBError(fmt.Errorf("target database from %s: %w", envName, err))
	}
	t.pools[envName] = p
	return p, nil
}

func (t *targets) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.pools {
		p.Close()
	}
}

// asynqLogger routes asynq's own logs into zerolog.
type asynqLogger struct{ l zerolog.Logger }

func (a asynqLogger) Debug(args ...any) {
	a.l.Debug().Str("component", "asynq").Msg(fmt.Sprint(args...))
}
func (a asynqLogger) Info(args ...any) { a.l.Info().Str("component", "asynq").Msg(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any) { a.l.Warn().Str("component", "asynq").Msg(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) {
	a.l.Error().Str("component", "asynq").Msg(fmt.Sprint(args...))
}
func (a asynqLogger) Fatal(args ...any) {
	a.l.Fatal().Str("component", "asynq").Msg(fmt.Sprint(args...))
}
