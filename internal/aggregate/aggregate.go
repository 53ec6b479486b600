// Package aggregate rolls a run's item outcomes into the run's result and its cursors. It is
// the one place where the pure rules of runstate meet the store's finalisation transaction;
// the worker calls it when the last item ends and the reconciler when a run was left open.
package aggregate

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

// Finalise finalises runID if all its items are terminal. It returns true when this call did
// it; a run already final, or with open items, returns false. Safe to call concurrently and
// repeatedly: the store serialises on the run row and writes once.
func Finalise(ctx context.Context, st *store.Store, runID uuid.UUID) (bool, error) {
	job := store.Job{}
	return st.FinaliseRun(ctx, runID, func(o store.RunOutcome) (store.RunResult, error) {
		if o.Pending+o.Running > 0 {
			return store.RunResult{}, store.ErrRunNotDone
		}
		if job.JobID == "" {
			j, err := st.GetJob(ctx, o.Run.JobID)
			if err != nil {
				return store.RunResult{}, err
			}
			job = j
		}
		return Decide(job, o), nil
	})
}

// Decide computes a finished run's result: status and dominant error category from the item
// counts, and every item's cursor decision under the job's strategy and cursor_policy.
func Decide(job store.Job, o store.RunOutcome) store.RunResult {
	status := runstate.RunStatus(runstate.Counts{
		Succeeded: o.Succeeded, Failed: o.Failed, Skipped: o.Skipped, Cancelled: o.Cancelled,
	}, o.Run.CancelRequestedAt != nil)
	cats := map[etl.Category]int{}
	for c, n := range o.FailedCategories {
		cats[etl.Category(c)] = n
	}
	res := store.RunResult{
		Status:        string(status),
		ErrorCategory: string(runstate.DominantCategory(cats)),
		Notes:         make(map[int32]string, len(o.Items)),
	}
	if status == runstate.StatusSuccess {
		res.ErrorCategory = string(etl.CategoryNone)
	} else if o.Failed > 0 {
		msg := fmt.Sprintf("%d of %d items failed", o.Failed, len(o.Items))
		res.ErrorMessage = &msg
	}
	strategy := etl.Strategy(job.Strategy)
	for _, it := range o.Items {
		out := runstate.CursorDecision(runstate.CursorInput{
			Strategy:     strategy,
			Policy:       runstate.CursorPolicy(job.CursorPolicy),
			DryRun:       o.Run.DryRun,
			ItemStatus:   runstate.Status(it.Status),
			RunStatus:    status,
			Current:      it.CursorStart,
			Watermark:    it.CursorEnd,
			LogicalStart: o.Run.LogicalStart,
		})
		res.Notes[it.ItemNo] = out.Note
		if out.Advance && out.Value != nil {
			res.Advances = append(res.Advances, store.CursorAdvance{
				JobID: job.JobID, ParamHash: it.ParamHash, Params: it.Params, Strategy: job.Strategy,
				Value: *out.Value, RunID: o.Run.RunID,
			})
		}
	}
	return res
}
