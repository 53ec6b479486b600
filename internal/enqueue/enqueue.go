// Package enqueue starts runs: it expands a job's parameter sets into deduplicated items,
// writes the run and its items to Postgres in one transaction, and only then hands one asynq
// task per item to Redis (through dispatch), under a fan-out lease that keeps the reconciler
// away until it lapses. Postgres being written first makes every later step repeatable:
// EnqueueRun rebuilds the tasks of any run from Postgres alone.
package enqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/internal/dispatch"
	"github.com/etlexec/etlexec/internal/params"
	"github.com/etlexec/etlexec/internal/store"
)

var (
	// ErrUnknownJob is returned when the job id is not defined.
	ErrUnknownJob = errors.New("unknown job")
	// ErrJobDisabled is returned when the job is disabled.
	ErrJobDisabled = errors.New("job is disabled")
	// ErrParamsNotSupported is returned when params are given to a job without supports_params.
	ErrParamsNotSupported = errors.New("job does not support params")
	// ErrNoParams is returned when a parameterized trigger expands to no param sets.
	ErrNoParams = errors.New("no param sets")
)

// Config configures an Enqueuer.
type Config struct {
	Store *store.Store
	// Redis is where tasks go. Required.
	Redis  asynq.RedisConnOpt
	Logger zerolog.Logger
	// Concurrency bounds concurrent enqueue calls (asynq has no batch enqueue). Defaults to
	// dispatch.ConcurrencyDefault.
	Concurrency int
	// Headers, when set, returns task headers for ctx (trace propagation).
	Headers func(ctx context.Context) map[string]string
	// ParamSource expands a job's declared param_source; nil means only static lists.
	ParamSource func(ctx context.Context, job store.Job) ([]json.RawMessage, error)
	// QueueWaitPoll is how often a trigger under overlap policy "queue" checks whether the
	// active run ended. Defaults to QueueWaitPollDefault.
	QueueWaitPoll time.Duration
}

// QueueWaitPollDefault is the default Config.QueueWaitPoll.
const QueueWaitPollDefault = 500 * time.Millisecond

// fanoutPage is how many items one page of a fan-out sends; the fan-out lease is renewed
// between pages.
const fanoutPage = 5000

// Enqueuer starts runs.
type Enqueuer struct {
	cfg Config
	d   *dispatch.Dispatcher
}

// New builds an Enqueuer. Close it when done.
func New(cfg Config) (*Enqueuer, error) {
	if cfg.Store == nil || cfg.Redis == nil {
		return nil, errors.New("enqueue config: Store and Redis are required")
	}
	if cfg.QueueWaitPoll <= 0 {
		cfg.QueueWaitPoll = QueueWaitPollDefault
	}
	d, err := dispatch.New(dispatch.Config{Redis: cfg.Redis, Concurrency: cfg.Concurrency, Headers: cfg.Headers})
	if err != nil {
		return nil, err
	}
	return &Enqueuer{cfg: cfg, d: d}, nil
}

// Close closes the Redis connections.
func (e *Enqueuer) Close() error { return e.d.Close() }

// Dispatcher is the enqueuer's dispatcher, for operator controls that remove or signal tasks.
func (e *Enqueuer) Dispatcher() *dispatch.Dispatcher { return e.d }

// Request asks for a run.
type Request struct {
	JobID string
	// Params are the raw param sets; empty means the job's declared source, or one `{}`.
	Params       []json.RawMessage
	DryRun       bool
	Trigger      string // manual (default) | schedule | rerun
	ScheduledFor *time.Time
}

// Result describes a started (or skipped) run.
type Result struct {
	Run          store.Run
	Items        int
	Deduplicated int
	Skipped      bool
	// Enqueued counts tasks handed to Redis; EnqueueTime is how long that took.
	Enqueued    int
	EnqueueTime time.Duration
}

// Trigger starts a run of a job.
func (e *Enqueuer) Trigger(ctx context.Context, req Request) (Result, error) {
	job, err := e.cfg.Store.GetJob(ctx, req.JobID)
	if errors.Is(err, store.ErrNotFound) {
		return Result{}, fmt.Errorf("%w %q", ErrUnknownJob, req.JobID)
	}
	if err != nil {
		return Result{}, err
	}
	if !job.Enabled {
		return Result{}, fmt.Errorf("%w: %q", ErrJobDisabled, job.JobID)
	}
	sets, err := e.paramSets(ctx, job, req.Params)
	if err != nil {
		return Result{}, err
	}
	unique, dropped, err := params.Dedupe(sets)
	if err != nil {
		return Result{}, fmt.Errorf("params of job %q: %w", job.JobID, err)
	}
	if len(unique) == 0 {
		return Result{}, fmt.Errorf("job %q: %w", job.JobID, ErrNoParams)
	}
	for i, u := range unique {
		if err := params.CheckSize(u.Params); err != nil {
			return Result{}, fmt.Errorf("params of job %q, set #%d: %w", job.JobID, i+1, err)
		}
	}
	if req.Trigger == "" {
		req.Trigger = "manual"
	}
	runID, err := uuid.NewV7()
	if err != nil {
		return Result{}, err
	}
	now, err := e.cfg.Store.Now(ctx)
	if err != nil {
		return Result{}, err
	}
	nr := store.NewRun{
		RunID: runID, JobID: job.JobID, DryRun: req.DryRun, Trigger: req.Trigger, LogicalStart: &now,
		ScheduledFor: req.ScheduledFor, Exclusive: job.OverlapPolicy != "allow", Strategy: job.Strategy,
	}
	if len(req.Params) == 1 {
		nr.Params = unique[0].Params
	}
	items := make([]store.NewItem, len(unique))
	for i, s := range unique {
		items[i] = store.NewItem{Params: s.Params, ParamHash: s.Hash}
	}
	log := e.cfg.Logger.With().Str("job_id", job.JobID).Str("run_id", runID.String()).Logger()
	var run store.Run
	for {
		run, err = e.cfg.Store.CreateRun(ctx, nr, items, dropped)
		if !errors.Is(err, store.ErrActiveRun) {
			break
		}
		active, _ := e.cfg.Store.ActiveRun(ctx, job.JobID)
		if job.OverlapPolicy != "queue" {
			reason := fmt.Sprintf("skipped: run %s of job %s is still active (overlap_policy skip)", active, job.JobID)
			run, err = e.cfg.Store.CreateSkippedRun(ctx, nr, reason)
			if err != nil {
				return Result{}, err
			}
			log.Info().Str("active_run_id", active.String()).Msg("trigger skipped by overlap policy")
			return Result{Run: run, Skipped: true}, nil
		}
		log.Info().Str("active_run_id", active.String()).Msg("waiting for the active run (overlap_policy queue)")
		select {
		case <-ctx.Done():
			return Result{}, fmt.Errorf("wait for active run %s of job %s: %w", active, job.JobID, ctx.Err())
		case <-time.After(e.cfg.QueueWaitPoll):
		}
	}
	if err != nil {
		return Result{}, fmt.Errorf("create run of job %q: %w", job.JobID, err)
	}
	log.Info().Int("items", len(items)).Int("items_deduplicated", dropped).Bool("dry_run", req.DryRun).Msg("run created")
	res := Result{Run: run, Items: len(items), Deduplicated: dropped}
	start := time.Now()
	res.Enqueued, err = e.fanout(ctx, job, run.RunID, func(after int32, limit int) ([]store.ItemTask, error) {
		// The items are numbered 1..n as created; no need to read them back.
		var page []store.ItemTask
		for no := after + 1; no <= int32(len(items)) && len(page) < limit; no++ {
			page = append(page, store.ItemTask{RunID: run.RunID, ItemNo: no})
		}
		return page, nil
	})
	res.EnqueueTime = time.Since(start)
	if err != nil {
		// Postgres has the run; the reconciler finishes the fan-out once the lease lapses.
		return res, fmt.Errorf("enqueue run %s: %w (the run is recorded; its tasks will be enqueued from Postgres)", run.RunID, err)
	}
	log.Info().Int("tasks", res.Enqueued).Dur("elapsed", res.EnqueueTime).Msg("run enqueued")
	res.Run, _ = e.cfg.Store.GetRun(ctx, run.RunID)
	return res, nil
}

// fanout sends a run's tasks page by page (next returns the items after the given item_no),
// renewing the run's fan-out lease between pages, then marks the run enqueued and finalises it
// if its items already all ended.
func (e *Enqueuer) fanout(ctx context.Context, job store.Job, runID uuid.UUID, next func(after int32, limit int) ([]store.ItemTask, error)) (int, error) {
	if err := e.d.EnsureEpoch(ctx, e.cfg.Store, job.Queue); err != nil {
		return 0, err
	}
	total := 0
	for after := int32(0); ; {
		page, err := next(after, fanoutPage)
		if err != nil {
			return total, err
		}
		if len(page) == 0 {
			break
		}
		sent, err := e.d.Send(ctx, job, page)
		total += sent.New + sent.Present
		if err != nil {
			return total, err
		}
		after = page[len(page)-1].ItemNo
		if ok, err := e.cfg.Store.TakeFanout(ctx, runID, store.FanoutLeaseDefault, true); err != nil || !ok {
			if err == nil {
				err = errors.New("the run's fan-out lease was lost (the reconciler took the fan-out over)")
			}
			return total, err
		}
	}
	if err := e.cfg.Store.MarkRunEnqueued(ctx, runID); err != nil {
		return total, err
	}
	// A run whose items all ended before it was marked enqueued is finalised here.
	if _, err := e.cfg.Store.FinaliseRun(ctx, runID); err != nil {
		e.cfg.Logger.Warn().Err(err).Str("run_id", runID.String()).Msg("early finalise check failed")
	}
	return total, nil
}

// paramSets picks the param sets of a trigger: given ones, the job's declared source, or `{}`.
func (e *Enqueuer) paramSets(ctx context.Context, job store.Job, given []json.RawMessage) ([]json.RawMessage, error) {
	if len(given) > 0 {
		if !job.SupportsParams {
			for _, g := range given {
				if c, _, err := params.Canon(g); err != nil || string(c) != "{}" {
					return nil, fmt.Errorf("%w: job %q has supports_params false; drop --param/--params-file", ErrParamsNotSupported, job.JobID)
				}
			}
		}
		return given, nil
	}
	if job.SupportsParams && len(job.ParamSource) > 0 && string(job.ParamSource) != "null" {
		if e.cfg.ParamSource != nil {
			return e.cfg.ParamSource(ctx, job)
		}
		return StaticParamSource(job)
	}
	return []json.RawMessage{json.RawMessage(`{}`)}, nil
}

// StaticParamSource expands a param_source of the form {"static": [ {...}, ... ]}.
func StaticParamSource(job store.Job) ([]json.RawMessage, error) {
	var src struct {
		Static []json.RawMessage `json:"static"`
	}
	if err := json.Unmarshal(job.ParamSource, &src); err != nil {
		return nil, fmt.Errorf("job %q param_source: %w", job.JobID, err)
	}
	if src.Static == nil {
		return nil, fmt.Errorf("job %q param_source: only {\"static\": [...]} is supported here", job.JobID)
	}
	return src.Static, nil
}

// EnqueueRun enqueues the tasks of a run's open, unclaimed items from Postgres (a rerun),
// under the fan-out lease its caller took, and marks the run enqueued. Task ids are
// deterministic, so tasks still in Redis are left alone.
func (e *Enqueuer) EnqueueRun(ctx context.Context, runID uuid.UUID) (int, error) {
	run, err := e.cfg.Store.GetRun(ctx, runID)
	if err != nil {
		return 0, err
	}
	job, err := e.cfg.Store.GetJob(ctx, run.JobID)
	if err != nil {
		return 0, err
	}
	return e.fanout(ctx, job, runID, func(after int32, limit int) ([]store.ItemTask, error) {
		return e.cfg.Store.OpenItems(ctx, runID, after, limit)
	})
}
