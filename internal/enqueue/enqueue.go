// Package enqueue starts runs: it expands a job's parameter sets into deduplicated items,
// writes the run and its items to Postgres in one transaction, and only then hands one asynq
// task per item to Redis. Postgres being written first makes every later step repeatable:
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
	"golang.org/x/sync/errgroup"

	"github.com/etlexec/etlexec/internal/aggregate"
	"github.com/etlexec/etlexec/internal/params"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/task"
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
	Store  *store.Store
	Client *asynq.Client
	Logger zerolog.Logger
	// Concurrency bounds concurrent Enqueue calls (asynq has no batch enqueue). Defaults to
	// ConcurrencyDefault.
	Concurrency int
	// Headers, when set, returns task headers for ctx (trace propagation).
	Headers func(ctx context.Context) map[string]string
	// ParamSource expands a job's declared param_source; nil means only static lists.
	ParamSource func(ctx context.Context, job store.Job) ([]json.RawMessage, error)
	// QueueWaitPoll is how often a trigger under overlap policy "queue" checks whether the
	// active run ended. Defaults to QueueWaitPollDefault.
	QueueWaitPoll time.Duration
}

const (
	ConcurrencyDefault   = 32
	QueueWaitPollDefault = 500 * time.Millisecond
)

// Enqueuer starts runs.
type Enqueuer struct {
	cfg Config
}

// New builds an Enqueuer.
func New(cfg Config) (*Enqueuer, error) {
	if cfg.Store == nil || cfg.Client == nil {
		return nil, errors.New("enqueue config: Store and Client are required")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = ConcurrencyDefault
	}
	if cfg.QueueWaitPoll <= 0 {
		cfg.QueueWaitPoll = QueueWaitPollDefault
	}
	return &Enqueuer{cfg: cfg}, nil
}

// Request asks for a run.
type Request struct {
	JobID string
	// Params are the raw param sets; empty means the job's declared source, or one `{}`.
	Params       []json.RawMessage
	DryRun       bool
	Trigger      string // manual (default) | schedule | rerun
	ScheduledFor *time.Time
	// Extras pass through to the run's creation (idempotency key, backfill window).
	Extras store.RunExtras
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
		Extras: req.Extras,
	}
	if len(req.Params) == 1 {
		nr.Params = unique[0].Params
	}
	items := make([]store.NewItem, len(unique))
	for i, s := range unique {
		items[i] = store.NewItem{Params: s.Params, ParamHash: s.Hash, TaskID: task.ItemID(runID, s.Hash, 0)}
	}
	log := e.cfg.Logger.With().Str("job_id", job.JobID).Str("run_id", runID.String()).Logger()
	var (
		run     store.Run
		created []store.CreatedItem
	)
	for {
		run, created, err = e.cfg.Store.CreateRun(ctx, nr, items, dropped)
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
	log.Info().Int("items", len(created)).Int("items_deduplicated", dropped).Bool("dry_run", req.DryRun).Msg("run created")
	res := Result{Run: run, Items: len(created), Deduplicated: dropped}
	start := time.Now()
	res.Enqueued, err = e.enqueue(ctx, job, run.RunID, created)
	res.EnqueueTime = time.Since(start)
	if err != nil {
		// Postgres has the run; the reconciler (or EnqueueRun) finishes the fan-out.
		return res, fmt.Errorf("enqueue run %s: %w (the run is recorded; tasks will be re-enqueued from Postgres)", run.RunID, err)
	}
	if err := e.cfg.Store.MarkRunEnqueued(ctx, run.RunID); err != nil {
		return res, err
	}
	log.Info().Int("tasks", res.Enqueued).Dur("elapsed", res.EnqueueTime).Msg("run enqueued")
	// A run whose items all ended before it was marked enqueued is finalised here.
	if _, err := aggregate.Finalise(ctx, e.cfg.Store, run.RunID); err != nil {
		log.Warn().Err(err).Msg("early finalise check failed")
	}
	res.Run, _ = e.cfg.Store.GetRun(ctx, run.RunID)
	return res, nil
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

// EnqueueRun (re-)enqueues a run's PENDING items from Postgres. Task ids are deterministic, so
// tasks still in Redis are left alone (a conflict counts as enqueued).
func (e *Enqueuer) EnqueueRun(ctx context.Context, runID uuid.UUID) (int, error) {
	run, err := e.cfg.Store.GetRun(ctx, runID)
	if err != nil {
		return 0, err
	}
	job, err := e.cfg.Store.GetJob(ctx, run.JobID)
	if err != nil {
		return 0, err
	}
	items, err := e.cfg.Store.PendingItemTasks(ctx, runID)
	if err != nil {
		return 0, err
	}
	n, err := e.enqueue(ctx, job, runID, items)
	if err != nil {
		return n, err
	}
	return n, e.cfg.Store.MarkRunEnqueued(ctx, runID)
}

// enqueue hands the items' tasks to Redis, Concurrency at a time. A task id already in Redis
// counts as enqueued: ids are deterministic, so it is the same task.
func (e *Enqueuer) enqueue(ctx context.Context, job store.Job, runID uuid.UUID, items []store.CreatedItem) (int, error) {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.cfg.Concurrency)
	var enqueued = make([]bool, len(items))
	for i, it := range items {
		g.Go(func() error {
			if _, err := e.EnqueueItem(gctx, job, runID, it); err != nil {
				return err
			}
			enqueued[i] = true
			return nil
		})
	}
	err := g.Wait()
	n := 0
	for _, ok := range enqueued {
		if ok {
			n++
		}
	}
	return n, err
}

// EnqueueItem hands one item's task to Redis, built from the job and the item's stored task id
// (its generation included). It reports false, without error, when a task with that id is
// already in Redis.
func (e *Enqueuer) EnqueueItem(ctx context.Context, job store.Job, runID uuid.UUID, it store.CreatedItem) (bool, error) {
	var headers map[string]string
	if e.cfg.Headers != nil {
		headers = e.cfg.Headers(ctx)
	}
	gen := task.GenerationOf(it.TaskID)
	if id := task.ItemID(runID, it.ParamHash, gen); id != it.TaskID {
		return false, fmt.Errorf("item %d of run %s: stored task id %q is not the id its task would get (%q)", it.ItemNo, runID, it.TaskID, id)
	}
	t, err := task.NewItem(task.Item{RunID: runID, ItemNo: it.ItemNo, Generation: gen}, it.ParamHash, task.OptionsFor(
		job.Queue, int(job.MaxAttempts), time.Duration(job.TimeoutMs)*time.Millisecond, time.Duration(job.RetentionMs)*time.Millisecond), headers)
	if err != nil {
		return false, err
	}
	_, err = e.cfg.Client.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("enqueue item %d of run %s: %w", it.ItemNo, runID, err)
	}
	return true, nil
}
