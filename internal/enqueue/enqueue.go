// Package enqueue starts runs: it expands a job's parameter sets into deduplicated items,
// writes the run and its items to Postgres in one transaction, and only then hands one asynq
// task per item to Redis (through dispatch), under a fan-out lease that keeps the reconciler
// away until it lapses. Postgres being written first makes every later step repeatable:
// EnqueueRun rebuilds the tasks of any run from Postgres alone.
package enqueue

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

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
	// ParamSource expands a job's declared param_source; nil means DeclaredParamSource.
	ParamSource func(ctx context.Context, job store.Job) (iter.Seq2[json.RawMessage, error], error)
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
	// Params are the raw param sets; empty (and no Source) means the job's declared
	// param_source, or one `{}`.
	Params []json.RawMessage
	// Source streams param sets instead of (or after) Params, pulled while the run's items are
	// written, so a run of any size is held in memory one set at a time.
	Source       iter.Seq2[json.RawMessage, error]
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
	// RequestHash fingerprints the request's param sets and dry-run flag (params.Fingerprint),
	// set once they were read, also when the run could not be created.
	RequestHash string
}

// Trigger starts a run of a job: the run and its deduplicated items are written in one
// transaction, streaming the param sets through canonicalisation, the size check and dedupe
// into one COPY; then the tasks are enqueued.
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
	sets, err := e.paramSets(ctx, job, req)
	if err != nil {
		return Result{}, err
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
	if len(req.Params) == 1 && req.Source == nil {
		c, _, err := params.Canon(req.Params[0])
		if err != nil {
			return Result{}, fmt.Errorf("params of job %q: parameter set 0: %w", job.JobID, err)
		}
		nr.Params = c
	}
	log := e.cfg.Logger.With().Str("job_id", job.JobID).Str("run_id", runID.String()).Logger()
	var (
		run store.Run
		src *itemSource
	)
	for {
		// The run row goes in first: a skip or a wait for the active run consumes no param set.
		src = newItemSource(job, sets, req.DryRun)
		run, err = e.cfg.Store.CreateRunFrom(ctx, nr, src)
		// CreateRunFrom has read what it will. When it stopped before the end (an active run,
		// a failed insert) the pull iterator's goroutine would otherwise live on, one per
		// skipped trigger of a long-running enqueuer.
		src.stop()
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
	switch {
	case src.err != nil:
		return Result{}, src.err
	case errors.Is(err, store.ErrNoItems):
		return Result{}, fmt.Errorf("job %q: %w", job.JobID, ErrNoParams)
	case err != nil:
		return Result{RequestHash: src.RequestHash()}, fmt.Errorf("create run of job %q: %w", job.JobID, err)
	}
	items := int(run.ItemCount)
	log.Info().Int("items", items).Int("items_deduplicated", src.dropped).Bool("dry_run", req.DryRun).Msg("run created")
	res := Result{Run: run, Items: items, Deduplicated: src.dropped, RequestHash: src.RequestHash()}
	start := time.Now()
	res.Enqueued, err = e.fanout(ctx, job, run.RunID, func(after int32, limit int) ([]store.ItemTask, error) {
		// The items are numbered 1..n as created; no need to read them back.
		var page []store.ItemTask
		for no := after + 1; no <= int32(items) && len(page) < limit; no++ {
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

// itemSource turns a stream of raw param sets into a run's items: canonical form, size check,
// param_hash, and first occurrence kept. The set of hashes seen is the only thing that grows
// with the run: 16 bytes of each hash, ~40 MB at a million items.
type itemSource struct {
	job     store.Job
	next    func() (json.RawMessage, error, bool)
	stop    func()
	seen    map[[16]byte]struct{}
	fp      *params.Fingerprint
	index   int
	dropped int
	err     error
}

func newItemSource(job store.Job, sets iter.Seq2[json.RawMessage, error], dryRun bool) *itemSource {
	next, stop := iter.Pull2(sets)
	return &itemSource{job: job, next: next, stop: stop, seen: map[[16]byte]struct{}{}, fp: params.NewFingerprint(dryRun)}
}

// RequestHash implements store.ItemSource: the fingerprint of the sets read so far.
func (s *itemSource) RequestHash() string { return s.fp.Sum() }

// Next implements store.ItemSource; an error is also kept in err, for Trigger to report as is.
func (s *itemSource) Next() (store.NewItem, bool, error) {
	for {
		raw, err, ok := s.next()
		if !ok {
			s.stop()
			return store.NewItem{}, false, nil
		}
		i := s.index
		s.index++
		if err == nil {
			var it store.NewItem
			if it, err = s.item(raw); err == nil {
				s.fp.Add(it.Params)
				var key [16]byte
				hex.Decode(key[:], []byte(it.ParamHash[:32])) //nolint:errcheck // a param_hash is hex
				if _, dup := s.seen[key]; dup {
					s.dropped++
					continue
				}
				s.seen[key] = struct{}{}
				return it, true, nil
			}
			err = fmt.Errorf("params of job %q: parameter set %d: %w", s.job.JobID, i, err)
		}
		s.err = err
		s.stop()
		return store.NewItem{}, false, err
	}
}

func (s *itemSource) item(raw json.RawMessage) (store.NewItem, error) {
	c, h, err := params.Canon(raw)
	if err != nil {
		return store.NewItem{}, err
	}
	if err := params.CheckSize(c); err != nil {
		return store.NewItem{}, err
	}
	if !s.job.SupportsParams && string(c) != "{}" {
		return store.NewItem{}, fmt.Errorf("%w: job %q has supports_params false; drop --param/--params-file", ErrParamsNotSupported, s.job.JobID)
	}
	return store.NewItem{Params: c, ParamHash: h}, nil
}

// Deduplicated implements store.ItemSource.
func (s *itemSource) Deduplicated() int { return s.dropped }

// paramSets picks the param sets of a trigger: the given ones (Params, then Source), the job's
// declared source, or `{}`.
func (e *Enqueuer) paramSets(ctx context.Context, job store.Job, req Request) (iter.Seq2[json.RawMessage, error], error) {
	if len(req.Params) > 0 || req.Source != nil {
		return func(yield func(json.RawMessage, error) bool) {
			for _, p := range req.Params {
				if !yield(p, nil) {
					return
				}
			}
			if req.Source != nil {
				for p, err := range req.Source {
					if !yield(p, err) || err != nil {
						return
					}
				}
			}
		}, nil
	}
	if job.SupportsParams && len(job.ParamSource) > 0 && string(job.ParamSource) != "null" {
		if e.cfg.ParamSource != nil {
			return e.cfg.ParamSource(ctx, job)
		}
		return DeclaredParamSource(job)
	}
	return each([]json.RawMessage{json.RawMessage(`{}`)}), nil
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

// fanout sends a run's tasks page by page (next returns the items after the given item_no),
// renewing the run's fan-out lease between pages, then marks the run enqueued and finalises it
// if its items already all ended.
func (e *Enqueuer) fanout(ctx context.Context, job store.Job, runID uuid.UUID, next func(after int32, limit int) ([]store.ItemTask, error)) (int, error) {
	if err := e.d.EnsureEpoch(ctx, e.cfg.Store, job.Queue); err != nil {
		return 0, err
	}
	// The next page is read from Postgres while the current one goes to Redis, so the
	// senders never wait for the ledger between pages.
	pages := make(chan []store.ItemTask, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(pages)
		for after := int32(0); ; {
			page, err := next(after, fanoutPage)
			if err != nil || len(page) == 0 {
				return err
			}
			select {
			case pages <- page:
			case <-gctx.Done():
				return gctx.Err()
			}
			after = page[len(page)-1].ItemNo
		}
	})
	total := 0
	g.Go(func() error {
		for page := range pages {
			sent, err := e.d.Send(gctx, job, page)
			total += sent.New + sent.Present
			if err != nil {
				return err
			}
			if ok, err := e.cfg.Store.TakeFanout(gctx, runID, store.FanoutLeaseDefault, true); err != nil || !ok {
				if err == nil {
					err = errors.New("the run's fan-out lease was lost (the run ended or the reconciler took the fan-out over)")
				}
				return err
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return total, err
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
