package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

// Row types are sqlc's, re-exported so callers never import sqlcdb.
type (
	Job        = sqlcdb.DwEtlJob
	JobSummary = sqlcdb.ListJobsRow
	Run        = sqlcdb.DwEtlRun
	Cursor     = sqlcdb.DwEtlIncrementalCursor
	UpsertJob  = sqlcdb.UpsertJobParams
)

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
	Strategy string
}

// NewItem is one deduplicated param set of a new run.
type NewItem struct {
	Params    json.RawMessage
	ParamHash string
}

// CreateRun writes the run and its items (COPY), each item's window start and cursor meta
// taken from the stored cursor, in one transaction: a run is either fully expanded in Postgres
// or absent. The run starts under a fan-out lease (FanoutLeaseDefault) held by the caller, so
// the reconciler leaves its fan-out alone until the lease lapses. Items are numbered 1..n in
// the order given.
func (s *Store) CreateRun(ctx context.Context, nr NewRun, items []NewItem, deduplicated int) (Run, error) {
	var run Run
	if nr.Params == nil {
		nr.Params = json.RawMessage(`{}`)
	}
	err := s.InTx(ctx, func(tx *Tx) error {
		var err error
		run, err = tx.q.InsertRun(ctx, sqlcdb.InsertRunParams{
			RunID: nr.RunID, JobID: nr.JobID, Status: string(runstate.StatusPending), DryRun: nr.DryRun, Trigger: nr.Trigger,
			Params: nr.Params, LogicalStart: nr.LogicalStart, ScheduledFor: nr.ScheduledFor, Exclusive: nr.Exclusive,
			FanoutMs: FanoutLeaseDefault.Milliseconds(),
		})
		if IsUniqueViolation(err, oneActiveIndex) {
			return ErrActiveRun
		}
		if err != nil {
			return fmt.Errorf("insert run: %w", mapErr(err))
		}
		type cursor struct {
			value *time.Time
			meta  json.RawMessage
		}
		cursors := map[string]cursor{}
		if nr.Strategy == string(etl.StrategyModifiedDate) || nr.Strategy == string(etl.StrategyLastRun) {
			hashes := make([]string, len(items))
			for i, it := range items {
				hashes[i] = it.ParamHash
			}
			rows, err := tx.q.CursorsForHashes(ctx, sqlcdb.CursorsForHashesParams{JobID: nr.JobID, ParamHashes: hashes})
			if err != nil {
				return fmt.Errorf("read cursors: %w", err)
			}
			for _, r := range rows {
				cursors[r.ParamHash] = cursor{value: r.CursorValue, meta: r.CursorMeta}
			}
		}
		var windowEnd *time.Time
		if nr.Strategy == string(etl.StrategyLastRun) {
			windowEnd = nr.LogicalStart
		}
		copyRows := make([]sqlcdb.CopyItemsParams, len(items))
		for i, it := range items {
			c := cursors[it.ParamHash]
			copyRows[i] = sqlcdb.CopyItemsParams{
				RunID: nr.RunID, ItemNo: int32(i + 1), Params: it.Params, ParamHash: it.ParamHash,
				CursorStart: c.value, CursorMeta: c.meta, CursorEnd: windowEnd,
			}
		}
		if _, err := tx.q.CopyItems(ctx, copyRows); err != nil {
			return fmt.Errorf("copy %d items: %w", len(items), err)
		}
		if err := tx.q.SetRunItems(ctx, sqlcdb.SetRunItemsParams{RunID: nr.RunID, ItemCount: int32(len(items)), ItemsDeduplicated: int32(deduplicated)}); err != nil {
			return err
		}
		run.ItemCount = int32(len(items))
		run.ItemsDeduplicated = int32(deduplicated)
		return nil
	})
	if err != nil {
		return Run{}, err
	}
	return run, nil
}

// CreateSkippedRun records a trigger that the overlap policy skipped, with the reason.
func (s *Store) CreateSkippedRun(ctx context.Context, nr NewRun, reason string) (Run, error) {
	if nr.Params == nil {
		nr.Params = json.RawMessage(`{}`)
	}
	run, err := s.q.InsertRun(ctx, sqlcdb.InsertRunParams{
		RunID: nr.RunID, JobID: nr.JobID, Status: string(runstate.StatusSkipped), DryRun: nr.DryRun, Trigger: nr.Trigger,
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
	return r, nil
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
	return j, nil
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
	jobs, err = s.q.ListJobs(ctx, sqlcdb.ListJobsParams{After: after, PageSize: int32(limit + 1)})
	if err != nil {
		return nil, "", fmt.Errorf("list jobs: %w", err)
	}
	if len(jobs) > limit {
		jobs = jobs[:limit]
		next = jobs[limit-1].JobID
	}
	return jobs, next, nil
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
	return s.q.ListScheduledJobs(ctx)
}

// UpsertJobs writes job definitions all-or-nothing; it reports which were new.
func (s *Store) UpsertJobs(ctx context.Context, jobs []UpsertJob) (inserted []bool, err error) {
	err = s.InTx(ctx, func(tx *Tx) error {
		inserted = inserted[:0]
		for _, j := range jobs {
			ins, err := tx.q.UpsertJob(ctx, j)
			if err != nil {
				return fmt.Errorf("upsert job %q: %w", j.JobID, err)
			}
			inserted = append(inserted, ins)
		}
		return nil
	})
	return inserted, err
}

// ListCursors lists a job's cursors, newest first.
func (s *Store) ListCursors(ctx context.Context, jobID string) ([]Cursor, error) {
	return s.q.ListCursors(ctx, jobID)
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
