package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

// JobSpec is how a job runs, as jobs.yaml defines it: what UpsertJobs writes. A job's pause
// state and policies are written apart (JobDefinition, PauseJob).
type JobSpec struct {
	JobID               string                `json:"job_id"`
	Kind                string                `json:"kind"`
	Description         string                `json:"description"`
	SupportsParams      bool                  `json:"supports_params"`
	SupportsIncremental bool                  `json:"supports_incremental"`
	Strategy            etl.Strategy          `json:"strategy"`
	CursorPolicy        runstate.CursorPolicy `json:"cursor_policy"`
	Config              json.RawMessage       `json:"config"`
	ParamSource         json.RawMessage       `json:"param_source"`
	Schedule            *string               `json:"schedule"`
	OverlapPolicy       string                `json:"overlap_policy"`
	Queue               string                `json:"queue"`
	MaxAttempts         int32                 `json:"max_attempts"`
	TimeoutMs           int64                 `json:"timeout_ms"`
	RunTimeoutMs        *int64                `json:"run_timeout_ms"`
	RetentionMs         int64                 `json:"retention_ms"`
	Enabled             bool                  `json:"enabled"`
	// MaxRunningItems is the most items of the job running at once across the fleet; 0 means
	// no limit.
	MaxRunningItems int32 `json:"max_running_items"`
}

// Job is a job as stored: its definition, pause state and policies. Its JSON is the API's Job
// (snake_case, one level), which the CLI prints too.
type Job struct {
	JobSpec
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	JobPause
	JobPolicy
}

// Control is the job's pause state and policies.
func (j Job) Control() JobControl {
	return JobControl{JobID: j.JobID, JobPause: j.JobPause, JobPolicy: j.JobPolicy}
}

// JobSummary is a job with its last run, as the job listings (API, CLI, console) show it. The
// last run's fields are nil for a job that never ran.
type JobSummary struct {
	Job
	LastRunID     *uuid.UUID       `json:"last_run_id"`
	LastStatus    *runstate.Status `json:"last_status"`
	LastStartedAt *time.Time       `json:"last_started_at"`
}

func jobOf(r sqlcdb.DwEtlJob) Job {
	return Job{
		JobSpec: JobSpec{JobID: r.JobID, Kind: r.Kind, Description: r.Description, SupportsParams: r.SupportsParams,
			SupportsIncremental: r.SupportsIncremental, Strategy: r.Strategy, CursorPolicy: r.CursorPolicy,
			Config: r.Config, ParamSource: nilIfEmpty(r.ParamSource), Schedule: r.Schedule, OverlapPolicy: r.OverlapPolicy,
			Queue: r.Queue, MaxAttempts: r.MaxAttempts, TimeoutMs: r.TimeoutMs, RunTimeoutMs: r.RunTimeoutMs,
			RetentionMs: r.RetentionMs, Enabled: r.Enabled, MaxRunningItems: r.MaxRunningItems},
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		JobPause: JobPause{Paused: r.Paused, PausedAt: r.PausedAt, PausedBy: r.PausedBy, PauseReason: r.PauseReason,
			ResumedAt: r.ResumedAt},
		JobPolicy: JobPolicy{HistoryRetentionMs: r.HistoryRetentionMs, AlertOn: r.AlertOn,
			ExpectedDurationMs: r.ExpectedDurationMs, CatchupPolicy: r.CatchupPolicy, CatchupLimit: r.CatchupLimit},
	}
}

func jobSummaryOf(r sqlcdb.ListJobsRow) JobSummary {
	s := JobSummary{Job: jobOf(r.DwEtlJob), LastRunID: r.LastRunID, LastStartedAt: r.LastStartedAt}
	if r.LastRunID != nil {
		// The query gives '' for no run (see ListJobs in queries/jobs.sql).
		s.LastStatus = &r.LastStatus
	}
	return s
}

func upsertJobParams(j JobSpec) sqlcdb.UpsertJobParams {
	return sqlcdb.UpsertJobParams{JobID: j.JobID, Kind: j.Kind, Description: j.Description,
		SupportsParams: j.SupportsParams, SupportsIncremental: j.SupportsIncremental, Strategy: j.Strategy,
		CursorPolicy: j.CursorPolicy, Config: j.Config, ParamSource: j.ParamSource, Schedule: j.Schedule,
		OverlapPolicy: j.OverlapPolicy, Queue: j.Queue, MaxAttempts: j.MaxAttempts, TimeoutMs: j.TimeoutMs,
		RunTimeoutMs: j.RunTimeoutMs, RetentionMs: j.RetentionMs, Enabled: j.Enabled, MaxRunningItems: j.MaxRunningItems}
}

// nilIfEmpty makes an absent JSON value nil, which encodes as null (an empty RawMessage does
// not encode at all).
func nilIfEmpty(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return b
}

// ErrActiveRun is returned by CreateRun when the job already has an exclusive run that is
// PENDING or RUNNING; the database's partial unique index decides, so two enqueuers racing
// still create one active run.
var ErrActiveRun = errors.New("job has an active run")

const oneActiveIndex = "dw_etl_runs_one_active_idx"

// NewRun describes a run to create.
type NewRun struct {
	RunID        uuid.UUID
	JobID        string
	DryRun       bool
	Trigger      string
	Params       json.RawMessage
	LogicalStart *time.Time
	ScheduledFor *time.Time
	Exclusive    bool
	// Strategy of the job: last_run items get the logical start as their window end.
	Strategy etl.Strategy
	// Extras are optional parts written in the same transaction (idempotency key, a backfill
	// window); see RunExtras.
	Extras RunExtras
}

// NewItem is one deduplicated param set of a new run.
type NewItem struct {
	Params    json.RawMessage
	ParamHash string
}

// ItemSource yields a new run's items one at a time, pulled while the run's transaction is
// open (so a run of a million items is never held in memory): Next returns false when the
// items are exhausted, Deduplicated how many param sets it dropped as duplicates.
type ItemSource interface {
	Next() (NewItem, bool, error)
	Deduplicated() int
	// RequestHash fingerprints the request once every item was read; it is recorded with an
	// idempotency key (RunExtras) unless the extras carry one.
	RequestHash() string
}

// ErrNoItems is returned by CreateRunFrom when the source yields no item.
var ErrNoItems = errors.New("no items")

// CreateRun writes the run and its items (see CreateRunFrom) from a slice.
func (s *Store) CreateRun(ctx context.Context, nr NewRun, items []NewItem, deduplicated int) (Run, error) {
	return s.CreateRunFrom(ctx, nr, &sliceSource{items: items, dropped: deduplicated})
}

type sliceSource struct {
	items   []NewItem
	dropped int
}

func (s *sliceSource) Next() (NewItem, bool, error) {
	if len(s.items) == 0 {
		return NewItem{}, false, nil
	}
	it := s.items[0]
	s.items = s.items[1:]
	return it, true, nil
}

func (s *sliceSource) Deduplicated() int { return s.dropped }

func (s *sliceSource) RequestHash() string { return "" }

var itemColumns = []string{"run_id", "item_no", "params", "param_hash", "cursor_end"}

// CreateRunFrom writes the run and streams its items into one COPY, in one transaction: a run
// is either fully expanded in Postgres or absent (a source error rolls it all back). Items are
// numbered 1..n in the order given; each item's window start and cursor meta are the stored
// cursor's (one set-based statement after the COPY, for incremental jobs). The run starts under
// a fan-out lease (FanoutLeaseDefault) held by the caller, so the reconciler leaves its fan-out
// alone until the lease lapses.
func (s *Store) CreateRunFrom(ctx context.Context, nr NewRun, src ItemSource) (Run, error) {
	var run sqlcdb.DwEtlRun
	if nr.Params == nil {
		nr.Params = json.RawMessage(`{}`)
	}
	// Extras: a window replaces the logical start and every item's stored cursor.
	if nr.Extras.WindowEnd != nil {
		nr.LogicalStart = nr.Extras.WindowEnd
	}
	if nr.Extras.NotExclusive {
		nr.Exclusive = false
	}
	err := s.InTx(ctx, func(tx *Tx) error {
		var err error
		run, err = tx.q.InsertRun(ctx, sqlcdb.InsertRunParams{
			RunID: nr.RunID, JobID: nr.JobID, Status: runstate.StatusPending, DryRun: nr.DryRun, Trigger: nr.Trigger,
			Params: nr.Params, LogicalStart: nr.LogicalStart, ScheduledFor: nr.ScheduledFor, Exclusive: nr.Exclusive,
			FanoutMs: FanoutLeaseDefault.Milliseconds(),
		})
		if IsUniqueViolation(err, oneActiveIndex) {
			return ErrActiveRun
		}
		if err != nil {
			return fmt.Errorf("insert run: %w", mapErr(err))
		}
		var windowEnd *time.Time
		if nr.Strategy == etl.StrategyLastRun {
			windowEnd = nr.LogicalStart
		}
		runID := pgtype.UUID{Bytes: nr.RunID, Valid: true}
		var no int32
		n, err := tx.tx.CopyFrom(ctx, pgx.Identifier{"dw_etl_run_items"}, itemColumns, pgx.CopyFromFunc(func() ([]any, error) {
			it, ok, err := src.Next()
			if err != nil || !ok {
				return nil, err
			}
			no++
			return []any{runID, no, it.Params, it.ParamHash, windowEnd}, nil
		}))
		if err != nil {
			return fmt.Errorf("copy items: %w", err)
		}
		if n == 0 {
			return ErrNoItems
		}
		switch {
		case nr.Extras.WindowStart != nil:
			// A backfill window: every item starts there, whatever its stored cursor says.
			if err := tx.q.StartItemsAt(ctx, sqlcdb.StartItemsAtParams{RunID: nr.RunID, WindowStart: nr.Extras.WindowStart}); err != nil {
				return fmt.Errorf("set the window start: %w", err)
			}
		case nr.Strategy == etl.StrategyModifiedDate || nr.Strategy == etl.StrategyLastRun:
			if err := tx.q.StartItemsAtCursors(ctx, sqlcdb.StartItemsAtCursorsParams{RunID: nr.RunID, JobID: nr.JobID}); err != nil {
				return fmt.Errorf("read cursors: %w", err)
			}
		}
		if err := tx.q.SetRunItems(ctx, sqlcdb.SetRunItemsParams{RunID: nr.RunID, ItemCount: int32(n), ItemsDeduplicated: int32(src.Deduplicated())}); err != nil {
			return err
		}
		// After the items: the key's fingerprint covers every param set, read by now.
		if nr.Extras.RequestHash == "" {
			nr.Extras.RequestHash = src.RequestHash()
		}
		if err := tx.recordExtras(ctx, nr); err != nil {
			return fmt.Errorf("record run extras: %w", err)
		}
		run.ItemCount = int32(n)
		run.ItemsDeduplicated = int32(src.Deduplicated())
		return nil
	})
	if err != nil {
		return Run{}, err
	}
	return runOf(run), nil
}

// CreateSkippedRun records a trigger that the overlap policy skipped, with the reason.
func (s *Store) CreateSkippedRun(ctx context.Context, nr NewRun, reason string) (Run, error) {
	if nr.Params == nil {
		nr.Params = json.RawMessage(`{}`)
	}
	run, err := s.q.InsertRun(ctx, sqlcdb.InsertRunParams{
		RunID: nr.RunID, JobID: nr.JobID, Status: runstate.StatusSkipped, DryRun: nr.DryRun, Trigger: nr.Trigger,
		Params: nr.Params, LogicalStart: nr.LogicalStart, ScheduledFor: nr.ScheduledFor, Exclusive: false,
		ErrorMessage: &reason,
	})
	if err != nil {
		return Run{}, fmt.Errorf("insert skipped run: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `UPDATE dw_etl_runs SET ended_at = now(), duration_ms = 0, fanout_until = NULL, deadline_at = NULL WHERE run_id = $1`, run.RunID); err != nil {
		return Run{}, err
	}
	return s.GetRun(ctx, run.RunID)
}

// MarkRunEnqueued records that every task was handed to Redis and the run is RUNNING.
func (s *Store) MarkRunEnqueued(ctx context.Context, runID uuid.UUID) error {
	if err := s.q.MarkRunEnqueued(ctx, runID); err != nil {
		return fmt.Errorf("mark run %s enqueued: %w", runID, err)
	}
	return nil
}

// GetRun loads one run.
func (s *Store) GetRun(ctx context.Context, runID uuid.UUID) (Run, error) {
	r, err := s.q.GetRun(ctx, runID)
	if err != nil {
		return Run{}, fmt.Errorf("get run %s: %w", runID, mapErr(err))
	}
	return runOf(r), nil
}

// ActiveRun returns the job's exclusive PENDING/RUNNING run, or ErrNotFound.
func (s *Store) ActiveRun(ctx context.Context, jobID string) (uuid.UUID, error) {
	r, err := s.q.ActiveRun(ctx, jobID)
	if err != nil {
		return uuid.Nil, mapErr(err)
	}
	return r.RunID, nil
}

// GetJob loads one job.
func (s *Store) GetJob(ctx context.Context, jobID string) (Job, error) {
	j, err := s.q.GetJob(ctx, jobID)
	if err != nil {
		return Job{}, fmt.Errorf("get job %q: %w", jobID, mapErr(err))
	}
	return jobOf(j), nil
}

// Job listing page sizes.
const (
	JobsPageDefault = 100
	JobsPageMax     = 1000
)

// ListJobs lists jobs with their last run, in job_id order after the given job id (""
// for the first page), limit at a time (JobsPageDefault when <= 0, at most JobsPageMax).
// next is the job id to pass as after for the following page, "" on the last one. Each job
// costs one probe of (job_id, started_at DESC), so pages keep the listing fast at 5k jobs.
func (s *Store) ListJobs(ctx context.Context, after string, limit int) (jobs []JobSummary, next string, err error) {
	if limit <= 0 {
		limit = JobsPageDefault
	}
	limit = min(limit, JobsPageMax)
	rows, err := s.q.ListJobs(ctx, sqlcdb.ListJobsParams{After: after, PageSize: int32(limit + 1)})
	if err != nil {
		return nil, "", fmt.Errorf("list jobs: %w", err)
	}
	p := paginate(rows, int32(limit), jobSummaryOf, func(j JobSummary) string { return j.JobID })
	return p.Items, p.Next, nil
}

// AllJobs lists every job with its last run, page by page.
func (s *Store) AllJobs(ctx context.Context) ([]JobSummary, error) {
	var all []JobSummary
	after := ""
	for {
		page, next, err := s.ListJobs(ctx, after, JobsPageMax)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		after = next
	}
}

// ListScheduledJobs lists enabled jobs that have a cron schedule.
func (s *Store) ListScheduledJobs(ctx context.Context) ([]Job, error) {
	rows, err := s.q.ListScheduledJobs(ctx)
	if err != nil {
		return nil, fmt.Errorf("list scheduled jobs: %w", err)
	}
	return convert(rows, jobOf), nil
}

// UpsertJobs writes job definitions all-or-nothing; it reports which were new.
func (s *Store) UpsertJobs(ctx context.Context, jobs []JobSpec) (inserted []bool, err error) {
	err = s.InTx(ctx, func(tx *Tx) error {
		inserted = inserted[:0]
		for _, j := range jobs {
			ins, err := tx.q.UpsertJob(ctx, upsertJobParams(j))
			if err != nil {
				return fmt.Errorf("upsert job %q: %w", j.JobID, err)
			}
			inserted = append(inserted, ins)
		}
		return nil
	})
	return inserted, err
}

// convert maps sqlc rows to the store's own type with its conversion function.
func convert[R, T any](rows []R, of func(R) T) []T {
	out := make([]T, len(rows))
	for i, r := range rows {
		out[i] = of(r)
	}
	return out
}

// Progress is a live view of a run for progress displays.
type Progress struct {
	Items, Settled, Failed, Running int64
}

// RunProgress reads how many items of a run settled, failed and are running, from its
// counters (never the items).
func (s *Store) RunProgress(ctx context.Context, runID uuid.UUID) (Progress, error) {
	run, err := s.GetRun(ctx, runID)
	if err != nil {
		return Progress{}, err
	}
	c, err := s.RunCounters(ctx, runID)
	if err != nil {
		return Progress{}, err
	}
	return Progress{Items: int64(run.ItemCount), Settled: c.Settled(), Failed: c.Failed, Running: c.Running()}, nil
}
