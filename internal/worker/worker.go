// Package worker runs items: it consumes asynq item tasks, claims each item in Postgres,
// executes the job's handler against a target transaction, records the attempt, and finalises
// the run when its last item ends. Every path is safe to run twice.
//
// A worker process is alive while it renews its own liveness lease (dw_etl_workers), one row
// per process on the database clock: attempts name their worker, and a reconciler that sees the
// lease lapse declares the worker dead, ends its sessions and closes its attempts. Claims and
// attempt ends go through batchers (group commit), so the ledger costs a fraction of a statement
// per item.
package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/limits"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/task"
	"github.com/etlexec/etlexec/internal/telemetry"
)

// Config configures a Worker.
type Config struct {
	// Store is etlexec's database (a store opened with Options.Bounded and this worker's
	// AppName, see AppName). Required.
	Store *store.Store
	// TargetPool is the pool for target transactions on etlexec's own database, this worker's
	// AppName. Nil (the default) uses Store.Pool(): a target transaction lifts the bookkeeping
	// session's statement, lock and idle bounds for itself.
	TargetPool *pgxpool.Pool
	// Redis is where tasks come from. Required.
	Redis asynq.RedisConnOpt
	// Registry maps job kinds to handlers. Required.
	Registry *etl.Registry
	// Queues to consume. Defaults to ["etl"].
	Queues []string
	// Weights are the queues' priorities (asynq Config.Queues): a queue of weight 6 is served
	// about six times as often as one of weight 1 while both have tasks. A queue absent here
	// has weight 1.
	Weights map[string]int
	// StrictPriority serves a queue only while every queue of higher weight is empty.
	StrictPriority bool
	// Concurrency is how many items run at once. Defaults to ConcurrencyDefault.
	Concurrency int
	// Prefetch is how many more deliveries are taken from Redis and claimed while every
	// handler is busy (asynq serves Concurrency + Prefetch at once; Concurrency of them run their
	// handler): a claim's round trip then overlaps running items instead of idling a handler.
	// Defaults to Concurrency.
	Prefetch int
	// ShutdownTimeout is how long in-flight items may finish after shutdown starts before their
	// contexts are cancelled. Defaults to ShutdownTimeoutDefault.
	ShutdownTimeout time.Duration
	// Lease is how long the process counts as alive after each heartbeat; heartbeats run a
	// third of it apart. Defaults to LeaseDefault.
	Lease time.Duration
	// ID identifies the process: its first liveness row and the application_name of its
	// sessions (AppName). Defaults to a new UUIDv7; set it when building Store with AppName.
	ID uuid.UUID
	// Name is recorded on attempts. Defaults to hostname:pid.
	Name string
	// Linger is how long a claim waits for companions before its batch is written; 0 (the
	// default) flushes eagerly. Attempt ends wait at least finishLinger.
	Linger time.Duration
	// Logger is the base logger; item loggers derive from it.
	Logger zerolog.Logger
	// Retry computes backoff. Defaults to runstate.DefaultRetryPolicy.
	Retry runstate.RetryPolicy
	// LimitsPrefix starts the Redis keys of the fleet limits (running slots, source buckets);
	// every worker of one deployment must use the same. Defaults to limits.PrefixDefault.
	LimitsPrefix string
	// Metrics, when set, receives attempt and finalisation observations.
	Metrics *telemetry.Metrics
	// OnSecrets, when set, receives secret values (from env vars a job's config names) so that
	// log sinks can redact them.
	OnSecrets func(vals ...string)
}

// Named defaults of Config.
const (
	ConcurrencyDefault     = 20
	ShutdownTimeoutDefault = 50 * time.Second
	LeaseDefault           = 30 * time.Second
	// abandonGrace is how long a handler may ignore its cancelled context before the worker
	// records its attempt without it.
	abandonGrace = 5 * time.Second
	// finishBatchMax bounds how many attempt ends share one statement.
	finishBatchMax = 256
	// cancelledRunMemory is how long a worker remembers a run's cancellation.
	cancelledRunMemory = time.Hour
	// finishLinger is how long an attempt end waits for companions: most ends are written in
	// the background (see end), so fuller batches cost no handler any time.
	finishLinger = 2 * time.Millisecond
)

// AppName is the application_name a worker with process id id gives its sessions.
func AppName(id uuid.UUID) string { return store.AppName(id) }

func (c *Config) withDefaults() error {
	if len(c.Queues) == 0 {
		c.Queues = []string{"etl"}
	}
	if c.Concurrency <= 0 {
		c.Concurrency = ConcurrencyDefault
	}
	if c.Prefetch <= 0 {
		c.Prefetch = c.Concurrency
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = ShutdownTimeoutDefault
	}
	if c.Lease <= 0 {
		c.Lease = LeaseDefault
	}
	if c.ID == uuid.Nil {
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		c.ID = id
	}
	if c.Name == "" {
		host, _ := os.Hostname()
		c.Name = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if c.Retry == (runstate.RetryPolicy{}) {
		c.Retry = runstate.DefaultRetryPolicy
	}
	return nil
}

func (c *Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("worker config: Store is required")
	case c.Redis == nil:
		return errors.New("worker config: Redis is required")
	case c.Registry == nil:
		return errors.New("worker config: Registry is required")
	case c.Lease < time.Second:
		return fmt.Errorf("worker config: Lease %s must be at least 1s", c.Lease)
	case c.Linger < 0:
		return fmt.Errorf("worker config: Linger %s must not be negative", c.Linger)
	}
	for q, wt := range c.Weights {
		if !slices.Contains(c.Queues, q) {
			return fmt.Errorf("worker config: weight for queue %q, which is not in Queues %v", q, c.Queues)
		}
		if wt < 1 {
			return fmt.Errorf("worker config: weight %d of queue %q must be at least 1", wt, q)
		}
	}
	return c.Retry.Validate()
}

// Worker executes item tasks.
type Worker struct {
	cfg     Config
	log     zerolog.Logger
	targets *targets
	jobs    *jobCache
	runners *runners

	// base is the parent of every handler context; cancelled when shutdown's grace ends,
	// because asynq abandons but never cancels a handler at its own shutdown timeout.
	base       context.Context
	cancelBase context.CancelCauseFunc

	// gate lets a suspect item run alone: ordinary items hold it shared from claim to record,
	// a suspect takes it exclusively before it is claimed.
	gate sync.RWMutex
	// handlers holds a token per running handler: at most Concurrency, while asynq also serves
	// the Prefetch deliveries being claimed ahead.
	handlers chan struct{}
	// waiting counts claimed deliveries waiting for a handler place.
	waiting atomic.Int64

	// limits holds this process's running slots (renewed while it lives) and source buckets;
	// rdb is its Redis client.
	limits    *limits.Limits
	rdb       redis.UniversalClient
	runLimits *ttlCache[uuid.UUID, store.RunLimit]
	sources   *ttlCache[string, store.Source]
	// releasing counts running slots being given back.
	releasing sync.WaitGroup

	claims   *batcher[store.ClaimRequest, store.Claim]
	finishes *batcher[store.AttemptEnd, store.Finish]
	stopBook context.CancelFunc

	// finalising counts the run finalisations started after attempt ends; shutdown waits for them.
	finalising sync.WaitGroup
	// finalisingRuns holds the runs being finalised (under mu); true asks for another check.
	finalisingRuns map[uuid.UUID]bool

	mu   sync.Mutex
	me   store.WorkerRef // this incarnation: a worker declared dead registers again
	live map[uuid.UUID]*liveAttempt
	// deferred are attempt ends Postgres did not take; the liveness loop retries them.
	deferred []deferredEnd
	// cancelledRuns are runs whose cancellation the heartbeat passed on, kept for
	// cancelledRunMemory so that deliveries claimed ahead of a handler are not started.
	cancelledRuns map[uuid.UUID]time.Time
}

// deferredEnd is an attempt end waiting to be written again.
type deferredEnd struct {
	a      *attempt
	o      outcome
	m      etl.Metrics
	runErr error
}

type liveAttempt struct {
	runID  uuid.UUID
	item   *etl.Item
	cancel context.CancelCauseFunc
	// reported is the progress last written, so unchanged attempts are skipped.
	reported store.AttemptProgress
}

var (
	// ErrRunCancelled is the cause given to a running item's context when its run is cancelled.
	ErrRunCancelled = errors.New("run cancelled")
	// errShutdown is the cause given to running items when the shutdown grace ends.
	errShutdown = errors.New("worker shutting down")
	// errDeclaredDead is the cause given to running items when the reconciler declared this
	// worker dead (it was frozen or cut off past its lease): their claims are gone.
	errDeclaredDead = errors.New("worker declared dead by the reconciler; its attempts were closed")
	// errRunTimeout is the cause given to running items when their run passes its deadline.
	errRunTimeout = errors.New("run timeout")
)

// New builds a worker.
func New(cfg Config) (*Worker, error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	own := cfg.TargetPool
	if own == nil {
		own = cfg.Store.Pool()
	}
	w := &Worker{cfg: cfg, log: cfg.Logger, live: map[uuid.UUID]*liveAttempt{}, finalisingRuns: map[uuid.UUID]bool{},
		cancelledRuns: map[uuid.UUID]time.Time{},
		handlers:      make(chan struct{}, cfg.Concurrency), jobs: newJobCache(cfg.Store),
		runners: &runners{}}
	w.targets = newTargets(own, AppName(cfg.ID), cfg.Concurrency)
	rdb, ok := cfg.Redis.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("worker config: Redis %T does not make a go-redis v9 client", cfg.Redis)
	}
	lim, err := limits.New(limits.Config{Redis: rdb, Prefix: cfg.LimitsPrefix, Lease: cfg.Lease})
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	w.rdb, w.limits = rdb, lim
	w.runLimits, w.sources = newTTLCache[uuid.UUID, store.RunLimit](), newTTLCache[string, store.Source]()
	w.base, w.cancelBase = context.WithCancelCause(context.Background())
	w.me = store.WorkerRef{ID: cfg.ID, Name: cfg.Name, Shard: randomShard()}
	// Bookkeeping outlives the handlers' contexts: ends queued during shutdown must land.
	bookCtx, stopBook := context.WithCancel(context.Background())
	w.stopBook = stopBook
	w.claims = newBatcher(bookCtx, cfg.Concurrency+cfg.Prefetch, cfg.Linger, func(ctx context.Context, reqs []store.ClaimRequest) ([]store.Claim, error) {
		return w.cfg.Store.ClaimItems(ctx, w.ref(), false, reqs)
	})
	w.finishes = newBatcher(bookCtx, finishBatchMax, max(cfg.Linger, finishLinger), func(ctx context.Context, ends []store.AttemptEnd) ([]store.Finish, error) {
		return w.cfg.Store.FinishAttempts(ctx, w.ref(), ends)
	})
	return w, nil
}

// randomShard picks a progress shard for this incarnation; shard 0 is the reconciler's.
func randomShard() int16 { return int16(1 + rand.IntN(store.ProgressShards-1)) }

// ID is the worker's current incarnation id (dw_etl_workers.worker_id).
func (w *Worker) ID() uuid.UUID {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.me.ID
}

func (w *Worker) ref() store.WorkerRef {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.me
}

// Mux returns the asynq handler mux serving item tasks.
func (w *Worker) Mux() *asynq.ServeMux {
	mux := asynq.NewServeMux()
	mux.Use(telemetry.Middleware)
	mux.HandleFunc(task.TypeItem, w.HandleItem)
	return mux
}

// register records this incarnation's liveness row.
func (w *Worker) register(ctx context.Context, ref store.WorkerRef) error {
	host, _ := os.Hostname()
	return w.cfg.Store.RegisterWorker(ctx, store.WorkerInfo{ID: ref.ID, Name: ref.Name, Host: host, PID: os.Getpid(),
		Queues: w.cfg.Queues, Concurrency: w.cfg.Concurrency, Lease: w.cfg.Lease, AppName: AppName(w.cfg.ID)})
}

// Run registers the worker, serves tasks until ctx is done, then shuts down gracefully, in
// this order: stop fetching; let in-flight items finish within ShutdownTimeout; cancel the rest
// through their contexts and give them abandonGrace to end; stop asynq; write the queued
// attempt ends (and once more those Postgres refused); stop the heartbeat; wait for the
// finalisations those ends started; end the liveness lease; close the target pools.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.register(ctx, w.ref()); err != nil {
		return err
	}
	queues := map[string]int{}
	for _, q := range w.cfg.Queues {
		queues[q] = 1
		if wt, ok := w.cfg.Weights[q]; ok {
			queues[q] = wt
		}
	}
	srv := asynq.NewServer(w.cfg.Redis, asynq.Config{
		Concurrency:    w.cfg.Concurrency + w.cfg.Prefetch,
		Queues:         queues,
		StrictPriority: w.cfg.StrictPriority,
		RetryDelayFunc: task.RetryDelay,
		// asynq moves due retries to pending on this tick (default 5 s); a second keeps the
		// recorded next_retry_at honest for short backoffs at one cheap Redis call a second.
		DelayedTaskCheckInterval: time.Second,
		BaseContext:              func() context.Context { return w.base },
		ShutdownTimeout:          w.cfg.ShutdownTimeout + abandonGrace + 5*time.Second,
		Logger:                   asynqLogger{w.log},
		LogLevel:                 asynq.WarnLevel,
		// Deliveries that found nothing to do, or their job at its limit, spend no retry.
		IsFailure: func(err error) bool { return !errors.Is(err, errDuplicate) && !errors.Is(err, errAtLimit) },
	})
	if err := srv.Start(w.Mux()); err != nil {
		return fmt.Errorf("start asynq server: %w", err)
	}
	hbCtx, stopHB := context.WithCancel(context.WithoutCancel(ctx))
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); w.livenessLoop(hbCtx) }()
	// Running slots are renewed as long as the process is alive, beside its liveness lease.
	slotsCtx, stopSlots := context.WithCancel(context.WithoutCancel(ctx))
	slotsDone := make(chan struct{})
	go func() { defer close(slotsDone); _ = w.limits.Run(slotsCtx) }()

	<-ctx.Done()
	w.log.Info().Dur("shutdown_timeout", w.cfg.ShutdownTimeout).Msg("worker stopping: no new tasks")
	srv.Stop() // stop fetching; in-flight handlers continue
	if !w.waitIdle(w.cfg.ShutdownTimeout) {
		w.log.Warn().Int("in_flight", w.inFlight()).Msg("shutdown timeout reached: cancelling in-flight items")
	}
	w.cancelBase(errShutdown)
	w.waitIdle(abandonGrace + 2*time.Second)
	srv.Shutdown()
	w.claims.close()
	w.finishes.close()
	stopHB()
	<-hbDone
	dctx, cancelDeferred := context.WithTimeout(context.Background(), 10*time.Second)
	w.retryDeferred(dctx)
	cancelDeferred()
	if n := w.deferredCount(); n > 0 {
		w.log.Error().Int("attempts", n).Msg("stopping with attempt ends Postgres did not take; the reconciler closes them as lost")
	}
	w.finalising.Wait()
	// Slots of ends recorded are given back; those of ends Postgres never took lapse.
	w.releasing.Wait()
	stopSlots()
	<-slotsDone
	_ = w.rdb.Close()
	w.stopBook()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.cfg.Store.StopWorker(sctx, w.ID()); err != nil {
		w.log.Warn().Err(err).Msg("could not end the liveness lease; the reconciler ends it when it lapses")
	}
	w.runners.stop()
	w.targets.close()
	return nil
}

// inFlight counts running attempts and claimed deliveries waiting to run.
func (w *Worker) inFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.live) + int(w.waiting.Load())
}

// waitIdle waits until no attempt is live, or d passes; it reports whether idle was reached.
func (w *Worker) waitIdle(d time.Duration) bool {
	deadline := time.Now().Add(d)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for w.inFlight() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		<-t.C
	}
	return true
}

func (w *Worker) track(attemptID, runID uuid.UUID, item *etl.Item, cancel context.CancelCauseFunc) {
	w.mu.Lock()
	w.live[attemptID] = &liveAttempt{runID: runID, item: item, cancel: cancel}
	w.mu.Unlock()
}

func (w *Worker) untrack(attemptID uuid.UUID) {
	w.mu.Lock()
	delete(w.live, attemptID)
	w.mu.Unlock()
}

// CancelRun cancels the contexts of this worker's running attempts of runID.
// A delivery of the run that is claimed but waits for a handler is not started.
func (w *Worker) CancelRun(runID uuid.UUID) int {
	w.mu.Lock()
	now := time.Now()
	for id, at := range w.cancelledRuns {
		if now.Sub(at) > cancelledRunMemory {
			delete(w.cancelledRuns, id)
		}
	}
	w.cancelledRuns[runID] = now
	w.mu.Unlock()
	return w.cancelWhere(func(a *liveAttempt) bool { return a.runID == runID }, ErrRunCancelled)
}

// runCancelledHere reports whether a heartbeat passed on the run's cancellation lately.
func (w *Worker) runCancelledHere(runID uuid.UUID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.cancelledRuns[runID]
	return ok
}

func (w *Worker) cancelWhere(match func(*liveAttempt) bool, cause error) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.live {
		if match(a) {
			a.cancel(cause)
			n++
		}
	}
	return n
}

// livenessLoop renews the liveness lease a third of the lease apart, passes cancellations on
// to running attempts, and reports their progress.
func (w *Worker) livenessLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.Lease / 3)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		beat, err := w.cfg.Store.Heartbeat(ctx, w.ID(), w.liveItems())
		switch {
		case errors.Is(err, store.ErrWorkerDead):
			w.reincarnate(ctx)
			continue
		case err != nil:
			if ctx.Err() == nil {
				w.log.Warn().Err(err).Dur("since_last_heartbeat", time.Since(lastOK)).Msg("heartbeat failed")
			}
			continue
		}
		lastOK = time.Now()
		if beat.Lapsed {
			w.log.Warn().Dur("lease", w.cfg.Lease).Msg("the liveness lease had lapsed before this heartbeat (process frozen or cut off?)")
		}
		for _, id := range beat.CancelledRuns {
			w.CancelRun(id)
		}
		w.retryDeferred(ctx)
		w.reportProgress(ctx)
	}
}

// reincarnate handles being declared dead: every running attempt lost its claim, so their
// handlers are cancelled, and the process registers a new liveness row for its next items.
func (w *Worker) reincarnate(ctx context.Context) {
	n := w.cancelWhere(func(*liveAttempt) bool { return true }, errDeclaredDead)
	id, err := uuid.NewV7()
	if err != nil {
		return
	}
	ref := store.WorkerRef{ID: id, Name: w.cfg.Name, Shard: randomShard()}
	if err := w.register(ctx, ref); err != nil {
		w.log.Error().Err(err).Msg("declared dead and could not register again; retrying at the next heartbeat")
		return
	}
	w.mu.Lock()
	old := w.me.ID
	w.me = ref
	w.mu.Unlock()
	w.log.Warn().Str("old_worker_id", old.String()).Str("worker_id", id.String()).Int("attempts_cancelled", n).
		Msg("this worker was declared dead (frozen or cut off past its lease); its attempts were closed; registered again")
}

// liveItems lists the items the running attempts hold: the heartbeat records them (history
// shows a run's running items from them) and learns which of their runs were cancelled.
func (w *Worker) liveItems() []store.HeldItem {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]store.HeldItem, 0, len(w.live))
	for _, a := range w.live {
		h := store.HeldItem{RunID: a.runID} // item_no 0 matches no item; the run still learns of a cancel
		if a.item != nil {
			h.ItemNo = int32(a.item.ItemNo())
		}
		out = append(out, h)
	}
	return out
}

// deferEnd keeps an attempt end Postgres did not take, to be written again: the item stays
// held by this live worker meanwhile, so nothing else would end it.
func (w *Worker) deferEnd(a *attempt, o outcome, m etl.Metrics, runErr error) {
	w.mu.Lock()
	w.deferred = append(w.deferred, deferredEnd{a: a, o: o, m: m, runErr: runErr})
	w.mu.Unlock()
}

func (w *Worker) deferredCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.deferred)
}

// retryDeferred writes the deferred attempt ends in one batch; those still refused wait for the
// next try. Ends of an incarnation declared dead come back lost and are dropped.
func (w *Worker) retryDeferred(ctx context.Context) {
	w.mu.Lock()
	todo := w.deferred
	w.deferred = nil
	w.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	ends := make([]store.AttemptEnd, len(todo))
	for i, d := range todo {
		ends[i] = d.o.end
	}
	res, err := w.cfg.Store.FinishAttempts(ctx, w.ref(), ends)
	if err != nil {
		w.mu.Lock()
		w.deferred = append(todo, w.deferred...)
		w.mu.Unlock()
		w.log.Warn().Err(err).Int("attempts", len(todo)).Msg("deferred attempt ends still not written")
		return
	}
	for i, d := range todo {
		_ = w.ended(ctx, d.a, d.o, d.m, d.runErr, res[i], nil)
	}
}

// reportProgress writes the live counters and message of running attempts that changed.
func (w *Worker) reportProgress(ctx context.Context) {
	w.mu.Lock()
	var ps []store.AttemptProgress
	for id, a := range w.live {
		if a.item == nil {
			continue
		}
		m := a.item.Metrics()
		p := store.AttemptProgress{RunID: a.runID, ItemNo: int32(a.item.ItemNo()), AttemptID: id,
			RecordsRead: m.RecordsRead, RecordsWritten: m.RecordsWritten, Pages: m.Pages, Message: m.Progress}
		if p != a.reported {
			a.reported = p
			ps = append(ps, p)
		}
	}
	w.mu.Unlock()
	if _, err := w.cfg.Store.ReportProgress(ctx, ps); err != nil && ctx.Err() == nil {
		w.log.Debug().Err(err).Int("attempts", len(ps)).Msg("progress report failed")
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
