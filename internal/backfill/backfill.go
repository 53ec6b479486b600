// Package backfill runs a last_run job over past windows: from From to To by Step, one run per
// window, each window's items loading [window start, window end) (the run's logical start is
// the window end, every item's cursor start the window start) with the backfill's param sets.
//
// One run per window, not one item per window and param set, because a window is then what
// the ledger already knows how to handle: its own status, retries, rerun, cancel, cursor
// decision and history row. A failed window is rerun with `enqueuer rerun` like any run, and
// a job with many param sets keeps each window's items together.
//
// A backfill is bounded (at most Concurrency window runs open at once; they stay out of the
// job's single active slot, so the schedule goes on beside them) and resumable: its definition
// is recorded (the same job, bounds, step, params and dry run name the same backfill), and each
// window's run is created with the idempotency key backfill:<id>:<window start>, so a backfill
// stopped at any point and started again finds the runs it made and makes the rest.
package backfill

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/ops"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

const (
	// WindowsMax bounds the windows of one backfill.
	WindowsMax = 10000
	// ConcurrencyMax bounds the window runs open at once.
	ConcurrencyMax = 64
	// PollDefault is how often open window runs are checked.
	PollDefault = time.Second
)

// ErrNotLastRun is returned for a job whose strategy is not last_run.
var ErrNotLastRun = errors.New("backfill needs a job with strategy last_run")

// Spec is what to backfill.
type Spec struct {
	JobID    string
	From, To time.Time
	Step     time.Duration
	// Params are the param sets every window's run gets; empty means the job's own.
	Params      []json.RawMessage
	DryRun      bool
	Concurrency int
	CreatedBy   string
}

// Window is one window of a backfill and its run, if it has one.
type Window struct {
	Start  time.Time       `json:"start"`
	End    time.Time       `json:"end"`
	RunID  *uuid.UUID      `json:"run_id"`
	Status runstate.Status `json:"status,omitempty"`
}

// Windows cuts [from, to) into steps; the last window ends at to.
func Windows(from, to time.Time, step time.Duration) ([]Window, error) {
	switch {
	case step <= 0:
		return nil, fmt.Errorf("--step %s: want a positive step", step)
	case !from.Before(to):
		return nil, fmt.Errorf("--from %s: must be before --to %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	if n := to.Sub(from) / step; n >= WindowsMax {
		return nil, fmt.Errorf("--step %s: %d windows from %s to %s, more than %d; use a longer step", step, n, from.Format(time.RFC3339),
			to.Format(time.RFC3339), WindowsMax)
	}
	var out []Window
	for s := from; s.Before(to); s = s.Add(step) {
		end := s.Add(step)
		if end.After(to) {
			end = to
		}
		out = append(out, Window{Start: s, End: end})
	}
	return out, nil
}

// Report is the state of a backfill's windows.
type Report struct {
	Backfill store.Backfill `json:"backfill"`
	Resumed  bool           `json:"resumed"`
	Preview  bool           `json:"preview"`
	Windows  []Window       `json:"windows"`
	// Created counts window runs this invocation created; Succeeded and Other count windows
	// whose run ended SUCCESS or otherwise.
	Created   int `json:"created"`
	Succeeded int `json:"succeeded"`
	Other     int `json:"other"`
}

// Config configures a Runner.
type Config struct {
	Store    *store.Store
	Enqueuer *enqueue.Enqueuer
	// Poll is how often open window runs are checked. Defaults to PollDefault.
	Poll time.Duration
	// Progress, when set, is called whenever a window's run starts or ends.
	Progress func(r Report)
	Logger   zerolog.Logger
}

// Runner runs backfills.
type Runner struct {
	cfg Config
	log zerolog.Logger
}

// New builds a Runner.
func New(cfg Config) (*Runner, error) {
	if cfg.Store == nil || cfg.Enqueuer == nil {
		return nil, errors.New("backfill config: Store and Enqueuer are required")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = PollDefault
	}
	return &Runner{cfg: cfg, log: cfg.Logger.With().Str("component", "backfill").Logger()}, nil
}

// specHash names a backfill by what it does.
func specHash(s Spec) (string, error) {
	ph, err := ops.RequestHash(s.Params, s.DryRun)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(fmt.Appendf(nil, "%s\n%d\n%d\n%d\n%s", s.JobID, s.From.UnixMicro(), s.To.UnixMicro(), s.Step.Milliseconds(), ph))
	return hex.EncodeToString(h[:]), nil
}

func key(id uuid.UUID, w Window) string { return fmt.Sprintf("backfill:%s:%d", id, w.Start.Unix()) }

// check refuses what cannot be backfilled: an unknown, paused or non-last_run job, bad bounds.
func (r *Runner) check(ctx context.Context, s *Spec) ([]Window, error) {
	job, err := r.cfg.Store.GetJob(ctx, s.JobID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w %q", enqueue.ErrUnknownJob, s.JobID)
	}
	if err != nil {
		return nil, err
	}
	if job.Strategy != "last_run" {
		return nil, fmt.Errorf("%w; job %q has strategy %s (a modified_date job resumes from its watermark)", ErrNotLastRun, s.JobID, job.Strategy)
	}
	if err := ops.CheckNotPaused(ctx, r.cfg.Store, s.JobID); err != nil {
		return nil, err
	}
	if s.Concurrency == 0 {
		s.Concurrency = 1
	}
	if s.Concurrency < 1 || s.Concurrency > ConcurrencyMax {
		return nil, fmt.Errorf("--concurrency %d: want 1..%d", s.Concurrency, ConcurrencyMax)
	}
	s.From, s.To = s.From.UTC(), s.To.UTC()
	return Windows(s.From, s.To, s.Step)
}

// prepare checks s and returns its windows and its record (without an id yet).
func (r *Runner) prepare(ctx context.Context, s Spec) ([]Window, store.Backfill, error) {
	windows, err := r.check(ctx, &s)
	if err != nil {
		return nil, store.Backfill{}, err
	}
	hash, err := specHash(s)
	if err != nil {
		return nil, store.Backfill{}, err
	}
	return windows, store.Backfill{JobID: s.JobID, SpecHash: hash, WindowFrom: s.From, WindowTo: s.To,
		StepMs: s.Step.Milliseconds(), Params: s.Params, DryRun: s.DryRun, Concurrency: int32(s.Concurrency), CreatedBy: s.CreatedBy}, nil
}

// Preview lists the windows and the runs a backfill with s already has; it changes nothing.
func (r *Runner) Preview(ctx context.Context, s Spec) (Report, error) {
	windows, rec, err := r.prepare(ctx, s)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Preview: true, Windows: windows, Backfill: rec}
	b, err := r.cfg.Store.FindBackfill(ctx, rec.JobID, rec.SpecHash)
	if errors.Is(err, store.ErrNotFound) {
		return rep, nil
	}
	if err != nil {
		return rep, err
	}
	rep.Backfill, rep.Resumed = b, true
	return rep, r.fill(ctx, &rep)
}

// fill sets each window's run and status from the backfill's idempotency keys.
func (r *Runner) fill(ctx context.Context, rep *Report) error {
	keyed, err := r.cfg.Store.IdempotencyKeysWithPrefix(ctx, rep.Backfill.JobID, "backfill:"+rep.Backfill.BackfillID.String()+":")
	if err != nil {
		return err
	}
	runs := map[string]store.KeyedRun{}
	for _, k := range keyed {
		runs[k.Key] = k
	}
	rep.Succeeded, rep.Other = 0, 0
	for i := range rep.Windows {
		w := &rep.Windows[i]
		if k, ok := runs[key(rep.Backfill.BackfillID, *w)]; ok {
			id := k.RunID
			w.RunID, w.Status = &id, k.Status
		}
		switch {
		case w.Status == runstate.StatusSuccess:
			rep.Succeeded++
		case w.Status.Terminal():
			rep.Other++
		}
	}
	return nil
}

// Spec of a recorded backfill, for resuming it by id.
func SpecOf(b store.Backfill, concurrency int) Spec {
	if concurrency == 0 {
		concurrency = int(b.Concurrency)
	}
	return Spec{JobID: b.JobID, From: b.WindowFrom, To: b.WindowTo, Step: time.Duration(b.StepMs) * time.Millisecond,
		Params: b.Params, DryRun: b.DryRun, Concurrency: concurrency, CreatedBy: b.CreatedBy}
}

// Run runs (or resumes) a backfill until every window's run has ended or ctx ends: windows in
// order, at most Concurrency runs open at once. Windows whose runs exist are not run again,
// whatever their status (rerun a failed one with `enqueuer rerun`).
func (r *Runner) Run(ctx context.Context, s Spec) (Report, error) {
	windows, rec, err := r.prepare(ctx, s)
	if err != nil {
		return Report{}, err
	}
	if s.Concurrency == 0 {
		s.Concurrency = 1
	}
	if rec.BackfillID, err = uuid.NewV7(); err != nil {
		return Report{}, err
	}
	b, resumed, err := r.cfg.Store.UpsertBackfill(ctx, rec)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Backfill: b, Resumed: resumed, Windows: windows}
	log := r.log.With().Str("job_id", s.JobID).Str("backfill_id", b.BackfillID.String()).Logger()
	log.Info().Int("windows", len(windows)).Bool("resumed", resumed).Int("concurrency", s.Concurrency).Msg("backfill starting")
	t := time.NewTicker(r.cfg.Poll)
	defer t.Stop()
	for {
		if err := r.fill(ctx, &rep); err != nil {
			return rep, err
		}
		open := 0
		for _, w := range rep.Windows {
			if w.Status == runstate.StatusPending || w.Status == runstate.StatusRunning {
				open++
			}
		}
		started := false
		for i := range rep.Windows {
			w := &rep.Windows[i]
			if w.RunID != nil || open >= s.Concurrency {
				continue
			}
			start, end := w.Start, w.End
			res, err := ops.Trigger(ctx, r.cfg.Store, r.cfg.Enqueuer, ops.TriggerRequest{JobID: s.JobID, Params: s.Params, DryRun: s.DryRun,
				IdempotencyKey: key(b.BackfillID, *w), Extras: store.RunExtras{WindowStart: &start, WindowEnd: &end, NotExclusive: true}})
			if err != nil && res.Run.RunID == uuid.Nil {
				return rep, fmt.Errorf("backfill window %s: %w", start.Format(time.RFC3339), err)
			}
			if err != nil {
				log.Warn().Err(err).Str("run_id", res.Run.RunID.String()).Msg("window run recorded, fan-out incomplete; the reconciler finishes it")
			}
			id := res.Run.RunID
			w.RunID, w.Status = &id, res.Run.Status
			if !res.Replayed {
				rep.Created++
			}
			open++
			started = true
			log.Info().Time("window_start", start).Time("window_end", end).Str("run_id", id.String()).Msg("backfill window run started")
		}
		if started && r.cfg.Progress != nil {
			r.cfg.Progress(rep)
		}
		if open == 0 {
			if err := r.cfg.Store.FinishBackfill(ctx, b.BackfillID); err != nil {
				return rep, err
			}
			log.Info().Int("succeeded", rep.Succeeded).Int("other", rep.Other).Msg("backfill done")
			return rep, nil
		}
		select {
		case <-ctx.Done():
			return rep, fmt.Errorf("stopped waiting for backfill %s (its runs go on; run it again to resume): %w", b.BackfillID, ctx.Err())
		case <-t.C:
		}
	}
}
