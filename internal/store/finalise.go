package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

// RunCounters are a run's progress counters summed over its shards.
type RunCounters struct {
	AttemptsStarted, AttemptsEnded, AttemptsLost, Retries int64
	BackoffMs                                             int64
	MaxItemAttempt                                        int
	Succeeded, Failed, Skipped, Cancelled                 int64
	// FailedBy counts failed items per error category.
	FailedBy                                             map[etl.Category]int64
	RecordsRead, RecordsWritten, RecordsDiscarded, Pages int64
}

// Settled is how many items reached a final status.
func (c RunCounters) Settled() int64 { return c.Succeeded + c.Failed + c.Skipped + c.Cancelled }

// Running is how many attempts are running.
func (c RunCounters) Running() int64 { return max(c.AttemptsStarted-c.AttemptsEnded, 0) }

func countersOf(r sqlcdb.RunCountersRow) RunCounters {
	return RunCounters{
		AttemptsStarted: r.AttemptsStarted, AttemptsEnded: r.AttemptsEnded, AttemptsLost: r.AttemptsLost,
		Retries: r.Retries, BackoffMs: r.BackoffMs, MaxItemAttempt: int(r.MaxItemAttempt),
		Succeeded: r.Succeeded, Failed: r.Failed, Skipped: r.Skipped, Cancelled: r.Cancelled,
		FailedBy: map[etl.Category]int64{etl.CategoryAPI: r.FailedApi, etl.CategoryDB: r.FailedDb,
			etl.CategoryData: r.FailedData, etl.CategorySystem: r.FailedSystem},
		RecordsRead: r.RecordsRead, RecordsWritten: r.RecordsWritten, RecordsDiscarded: r.RecordsDiscarded, Pages: r.PageCount,
	}
}

// RunCounters reads a run's counters (at most ProgressShards rows).
func (s *Store) RunCounters(ctx context.Context, runID uuid.UUID) (RunCounters, error) {
	var r sqlcdb.RunCountersRow
	err := Retry(ctx, RetryQuick, func(ctx context.Context) error {
		var err error
		r, err = s.q.RunCounters(ctx, runID)
		return err
	})
	if err != nil {
		return RunCounters{}, fmt.Errorf("read counters of run %s: %w", runID, err)
	}
	return countersOf(r), nil
}

// RunOpenItems is how many items of an open run have not settled (from its counters, taking no
// lock); ok is false when the run is not open.
func (s *Store) RunOpenItems(ctx context.Context, runID uuid.UUID) (open int64, ok bool, err error) {
	err = Retry(ctx, RetryQuick, func(ctx context.Context) error {
		var err error
		open, err = s.q.RunOpenItems(ctx, runID)
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("count open items of run %s: %w", runID, err)
	}
	return open, true, nil
}

// Finalised is what finalisation decided.
type Finalised struct {
	// Done is true when this call ended the run; false when it was already final or still
	// has open items.
	Done     bool
	Status   runstate.Status
	Counters RunCounters
	// CursorsAdvanced counts the cursors moved at finalisation (cursor policy run).
	CursorsAdvanced int64
}

// FinaliseRun ends an open run whose items all settled, exactly once, in one transaction that
// reads everything it decides on under the run's row lock: the counters (never the items), the
// job's cursor rules, the cancel request and the deadline. runstate decides the status and
// whether the run's cursor candidates move; the cursors are then moved in one statement and the
// run row written. Safe to call concurrently and repeatedly; transient errors are retried.
func (s *Store) FinaliseRun(ctx context.Context, runID uuid.UUID) (Finalised, error) {
	var res Finalised
	err := Retry(ctx, RetryBookkeeping, func(ctx context.Context) error {
		res = Finalised{}
		return s.InTx(ctx, func(tx *Tx) error {
			run, err := tx.q.LockRunForFinalise(ctx, runID)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // already final (or gone): exactly once
			}
			if err != nil {
				return fmt.Errorf("lock run: %w", err)
			}
			row, err := tx.q.RunCounters(ctx, runID)
			if err != nil {
				return fmt.Errorf("read counters: %w", err)
			}
			c := countersOf(row)
			res.Counters = c
			open := int64(run.ItemCount) - c.Settled()
			if open > 0 {
				return nil
			}
			timedOut := run.TimedOut
			status := runstate.RunStatus(runstate.Counts{
				Succeeded: int(c.Succeeded), Failed: int(c.Failed), Skipped: int(c.Skipped), Cancelled: int(c.Cancelled),
			}, run.CancelRequestedAt != nil, timedOut)
			if err := runstate.Runs.Check(run.Status, status); err != nil {
				return err
			}
			category := runstate.DominantCategory(toIntCounts(c.FailedBy))
			var msg *string
			switch {
			case status == runstate.StatusSuccess:
				category = etl.CategoryNone
			case timedOut && status == runstate.StatusFailed:
				m := fmt.Sprintf("run timeout: the run did not finish by %s; %d of %d items succeeded",
					run.DeadlineAt.UTC().Format("2006-01-02T15:04:05Z07:00"), c.Succeeded, run.ItemCount)
				msg = &m
			case c.Failed > 0:
				m := fmt.Sprintf("%d of %d items failed", c.Failed, run.ItemCount)
				msg = &m
			}
			advance, note := runstate.RunCursors(run.Strategy, run.CursorPolicy, run.DryRun, status)
			if advance {
				n, err := tx.q.AdvanceRunCursors(ctx, sqlcdb.AdvanceRunCursorsParams{JobID: run.JobID, Strategy: string(run.Strategy), RunID: runID})
				if err != nil {
					return fmt.Errorf("advance cursors: %w", err)
				}
				res.CursorsAdvanced = n
				note = fmt.Sprintf("%s: %d", note, n)
			}
			if err := tx.q.FinishRun(ctx, sqlcdb.FinishRunParams{
				Status: status, ErrorCategory: category, ErrorMessage: msg,
				AttemptCount: int32(c.AttemptsStarted), ItemsSucceeded: int32(c.Succeeded), ItemsFailed: int32(c.Failed),
				ItemsSkipped: int32(c.Skipped), ItemsCancelled: int32(c.Cancelled), RecordsRead: c.RecordsRead,
				RecordsWritten: c.RecordsWritten, RecordsDiscarded: c.RecordsDiscarded, PageCount: c.Pages,
				CursorNote: &note, RunID: runID,
			}); err != nil {
				return fmt.Errorf("write run result: %w", err)
			}
			res.Done, res.Status = true, status
			return nil
		})
	})
	if err != nil {
		return Finalised{}, fmt.Errorf("finalise run %s: %w", runID, err)
	}
	return res, nil
}

func toIntCounts(m map[etl.Category]int64) map[etl.Category]int {
	out := make(map[etl.Category]int, len(m))
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}
