// Package ops holds the operator's controls on runs: cancel and rerun. The CLI and the web
// console call these same functions, so both behave identically. Postgres is changed first;
// Redis is then brought in line (tasks removed or enqueued), and a failure there is repaired by
// the reconciler from Postgres.
package ops

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/internal/dispatch"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

// CancelResult says what a cancel did.
type CancelResult struct {
	RunID uuid.UUID `json:"run_id"`
	// ItemsCancelled were not started yet; their tasks were removed from Redis.
	ItemsCancelled int `json:"items_cancelled"`
	// TasksRemoved counts tasks deleted from Redis (others had already been taken or gone).
	TasksRemoved int `json:"tasks_removed"`
	// Signalled counts running tasks asked to stop through asynq's cancel channel; workers also
	// see the request in Postgres at their next heartbeat.
	Signalled int `json:"signalled"`
	// Finalised is true when nothing was running, so the run ended CANCELLED at once.
	Finalised bool            `json:"finalised"`
	Status    runstate.Status `json:"status"`
}

// Cancel cancels a run: who/when/why recorded, items not yet started CANCELLED and their tasks
// removed, running attempts stopped through their contexts (they end CANCELLED without retry),
// and the run ends CANCELLED once nothing runs. Cursors do not move.
func Cancel(ctx context.Context, st *store.Store, d *dispatch.Dispatcher, runID uuid.UUID, who, reason string) (CancelResult, error) {
	res := CancelResult{RunID: runID}
	run, err := st.GetRun(ctx, runID)
	if err != nil {
		return res, err
	}
	job, err := st.GetJob(ctx, run.JobID)
	if err != nil {
		return res, err
	}
	// From here on no item of the run is claimed; then the unclaimed ones end CANCELLED.
	if err := st.RequestCancel(ctx, runID, who, reason); err != nil {
		return res, err
	}
	cancelled, err := st.CancelOpenItems(ctx, runID)
	if err != nil {
		return res, err
	}
	res.ItemsCancelled = len(cancelled)
	res.TasksRemoved = d.Delete(job.Queue, cancelled)
	// Running attempts: asynq's cancel channel stops them fast; the worker records them
	// CANCELLED because Postgres says the run was cancelled (asynq alone would retry them).
	running, err := st.ClaimedItems(ctx, runID)
	if err != nil {
		return res, err
	}
	res.Signalled = d.CancelRunning(running)
	fin, err := st.FinaliseRun(ctx, runID)
	if err != nil {
		return res, err
	}
	res.Finalised = fin.Done
	run, err = st.GetRun(ctx, runID)
	if err != nil {
		return res, err
	}
	res.Status = run.Status
	return res, nil
}

// RerunResult says what a rerun did, or would do with preview.
type RerunResult struct {
	RunID    uuid.UUID         `json:"run_id"`
	Preview  bool              `json:"preview"`
	Items    []store.RerunItem `json:"items"`
	Enqueued int               `json:"enqueued"`
}

// ErrNothingToRerun is returned when the filter selects no item.
var ErrNothingToRerun = errors.New("no items match the rerun filter")

// Rerun runs the matching failed or cancelled items of a finished run again inside the same
// run: the run reopens as RUNNING, items get new attempts continuing their numbering under a
// new task id (asynq keeps the old id in its archive), and the run re-aggregates when they end,
// moving cursors by the job's policy. Succeeded items are never rerun (a second success in one
// run would load their data twice: store.ErrRerunSucceeded). With preview nothing changes.
func Rerun(ctx context.Context, st *store.Store, enq *enqueue.Enqueuer, runID uuid.UUID, f store.RerunFilter, preview bool) (RerunResult, error) {
	res := RerunResult{RunID: runID, Preview: preview}
	run, err := st.GetRun(ctx, runID)
	if err != nil {
		return res, err
	}
	if !run.Status.Terminal() {
		return res, fmt.Errorf("rerun run %s: %w (status %s); cancel it or wait", runID, store.ErrRunNotFinished, run.Status)
	}
	if run.Status == runstate.StatusSkipped {
		return res, fmt.Errorf("rerun run %s: a SKIPPED run has no items; trigger the job again", runID)
	}
	job, err := st.GetJob(ctx, run.JobID)
	if err != nil {
		return res, err
	}
	res.Items, err = st.RerunCandidates(ctx, runID, f)
	if err != nil {
		return res, err
	}
	if len(res.Items) == 0 {
		return res, fmt.Errorf("rerun run %s: %w", runID, ErrNothingToRerun)
	}
	if preview {
		return res, nil
	}
	if err := CheckNotPaused(ctx, st, job.JobID); err != nil {
		return res, fmt.Errorf("rerun run %s: %w", runID, err)
	}
	nos := make([]int32, len(res.Items))
	for i, it := range res.Items {
		nos[i] = it.ItemNo
	}
	if _, err := st.ReopenForRerun(ctx, runID, nos, job.MaxAttempts); err != nil {
		return res, err
	}
	res.Enqueued, err = enq.EnqueueRun(ctx, runID)
	if err != nil {
		return res, fmt.Errorf("rerun run %s: reopened in Postgres, enqueue incomplete (the reconciler will finish it): %w", runID, err)
	}
	return res, nil
}
