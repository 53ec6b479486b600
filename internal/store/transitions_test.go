package store_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/testfactory"
)

// statusTriggersSQL records every status a run or item is created in and every status change
// afterwards into status_changes. An item's status is the one its readers show: RUNNING while
// an attempt holds it (current_attempt_id set, the column still PENDING), so a claim and an end
// are transitions too.
var statusTriggersSQL = fmt.Sprintf(`
CREATE TABLE status_changes (id bigserial PRIMARY KEY, tbl text NOT NULL, run_id uuid NOT NULL,
  item_no int, old_status text, new_status text NOT NULL);

CREATE FUNCTION record_run_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO status_changes (tbl, run_id, old_status, new_status)
  VALUES ('run', NEW.run_id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status);
  RETURN NULL;
END $$;

CREATE FUNCTION record_item_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO status_changes (tbl, run_id, item_no, old_status, new_status)
  VALUES ('item', NEW.run_id, NEW.item_no,
    CASE WHEN TG_OP = 'UPDATE' THEN
      CASE WHEN OLD.current_attempt_id IS NOT NULL THEN '%[1]s' ELSE OLD.status END END,
    CASE WHEN NEW.current_attempt_id IS NOT NULL THEN '%[1]s' ELSE NEW.status END);
  RETURN NULL;
END $$;

CREATE TRIGGER record_status AFTER INSERT OR UPDATE OF status ON dw_etl_runs
  FOR EACH ROW EXECUTE FUNCTION record_run_status();
CREATE TRIGGER record_status AFTER INSERT OR UPDATE OF status, current_attempt_id ON dw_etl_run_items
  FOR EACH ROW EXECUTE FUNCTION record_item_status();
`, runstate.StatusRunning)

// observed is one recorded status change; From is "" for a creation.
type observed struct {
	Table    string
	From, To runstate.Status
	Step     string
}

func (o observed) String() string {
	if o.From == "" {
		return fmt.Sprintf("%s created %s (%s)", o.Table, o.To, o.Step)
	}
	return fmt.Sprintf("%s %s → %s (%s)", o.Table, o.From, o.To, o.Step)
}

// statusRecorder reads what the triggers recorded since its last read and names it by the
// step that caused it.
type statusRecorder struct {
	st   *store.Store
	last int64
	seen []observed
}

func (r *statusRecorder) after(t *testing.T, step string) []observed {
	t.Helper()
	rows, err := r.st.Pool().Query(t.Context(),
		`SELECT id, tbl, coalesce(old_status, ''), new_status FROM status_changes WHERE id > $1 ORDER BY id`, r.last)
	require.NoError(t, err)
	defer rows.Close()
	var got []observed
	for rows.Next() {
		var o observed
		var from, to string
		require.NoError(t, rows.Scan(&r.last, &o.Table, &from, &to))
		o.From, o.To, o.Step = runstate.Status(from), runstate.Status(to), step
		if o.From != o.To { // an UPDATE that kept the status is no transition
			got = append(got, o)
		}
	}
	require.NoError(t, rows.Err())
	r.seen = append(r.seen, got...)
	return got
}

// want checks that step caused exactly the given changes (as "item PENDING → RUNNING" or "run
// created PENDING", in any order, each once per row).
func (r *statusRecorder) want(t *testing.T, step string, changes ...string) {
	t.Helper()
	var got []string
	for _, o := range r.after(t, step) {
		got = append(got, strings.TrimSuffix(o.String(), " ("+step+")"))
	}
	slices.Sort(got)
	slices.Sort(changes)
	require.Equal(t, changes, got, "status changes of %s", step)
}

// openRun creates a job with the given run timeout (nil: none) and a run of n items whose
// fan-out was not recorded (the run stays PENDING), as an enqueuer does before its tasks are in
// Redis.
func openRun(t *testing.T, st *store.Store, jobID string, maxAttempts int32, runTimeout *time.Duration, n int) uuid.UUID {
	t.Helper()
	job := store.JobSpec{JobID: jobID, Kind: "test", Strategy: "none", CursorPolicy: "run", Config: json.RawMessage(`{}`),
		OverlapPolicy: "allow", Queue: "etl", MaxAttempts: maxAttempts, TimeoutMs: 1000, Enabled: true}
	if runTimeout != nil {
		ms := runTimeout.Milliseconds()
		job.RunTimeoutMs = &ms
	}
	_, err := st.UpsertJobs(t.Context(), []store.JobSpec{job})
	require.NoError(t, err)
	runID := uuid.Must(uuid.NewV7())
	items := make([]store.NewItem, n)
	for i := range items {
		items[i] = store.NewItem{Params: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i+1)), ParamHash: fmt.Sprintf("h%03d", i+1)}
	}
	_, err = st.CreateRun(t.Context(), store.NewRun{RunID: runID, JobID: jobID, Trigger: "manual", Strategy: "none"}, items, 0)
	require.NoError(t, err)
	return runID
}

// TestStatusTransitionsMatchRunstate drives every store path that changes a run's or an item's
// status through the store's API on a database whose triggers record each change, and checks
// the record against runstate's machines both ways: every change the SQL made is one the
// machine allows, and every change the machine allows is one some path makes (no dead edges).
func TestStatusTransitionsMatchRunstate(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	ctx := t.Context()
	_, err := st.Pool().Exec(ctx, statusTriggersSQL)
	require.NoError(t, err)
	rec := &statusRecorder{st: st}

	const (
		P  = runstate.StatusPending
		R  = runstate.StatusRunning
		S  = runstate.StatusSuccess
		PS = runstate.StatusPartialSuccess
		F  = runstate.StatusFailed
		SK = runstate.StatusSkipped
		C  = runstate.StatusCancelled
	)
	tr := func(table string, from, to runstate.Status) string {
		return fmt.Sprintf("%s %s → %s", table, from, to)
	}
	created := func(table string, s runstate.Status) string { return fmt.Sprintf("%s created %s", table, s) }
	times := func(n int, s string) []string { return slices.Repeat([]string{s}, n) }
	finish := func(step string, w store.WorkerRef, ends ...store.AttemptEnd) {
		t.Helper()
		res, err := st.FinishAttempts(ctx, w, ends)
		require.NoError(t, err, step)
		for i, r := range res {
			require.True(t, r.Recorded, "%s: end %d", step, i)
		}
	}
	finalise := func(step string, runID uuid.UUID, want runstate.Status) {
		t.Helper()
		res, err := st.FinaliseRun(ctx, runID)
		require.NoError(t, err, step)
		require.True(t, res.Done, step)
		require.Equal(t, want, res.Status, step)
	}
	rerun := func(step string, runID uuid.UUID, f store.RerunFilter) []store.ItemTask {
		t.Helper()
		cands, err := st.RerunCandidates(ctx, runID, f)
		require.NoError(t, err, step)
		nos := make([]int32, len(cands))
		for i, c := range cands {
			nos[i] = c.ItemNo
		}
		tasks, err := st.ReopenForRerun(ctx, runID, nos, 1)
		require.NoError(t, err, step)
		require.Len(t, tasks, len(cands), step)
		return tasks
	}
	w := testfactory.Worker(t.Context(), t, st, &testfactory.WorkerOpts{Lease: new(time.Minute)})

	t.Run("SuccessRetryFailureRerun", func(t *testing.T) {
		runID := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: 3, Job: &testfactory.JobOpts{ID: new("j"), MaxAttempts: new(int32(2))}}).RunID
		rec.want(t, "create and enqueue", append(times(3, created("item", P)), created("run", P), tr("run", P, R))...)

		_, ids := claim(t, st, w, runID, 1, 2, 3)
		rec.want(t, "claim", times(3, tr("item", P, R))...)

		retry := end(runID, 2, ids[1], F)
		backoff := time.Second
		retry.ItemStatus, retry.Terminal, retry.Backoff, retry.ErrorCategory = P, false, &backoff, etl.CategoryAPI
		failed := end(runID, 3, ids[2], F)
		failed.ErrorCategory = etl.CategoryData
		finish("finish", w, end(runID, 1, ids[0], S), retry, failed)
		rec.want(t, "finish", tr("item", R, S), tr("item", R, P), tr("item", R, F))

		_, again := claim(t, st, w, runID, 2)
		finish("claim and finish the retry", w, end(runID, 2, again[0], S))
		rec.want(t, "claim and finish the retry", tr("item", P, R), tr("item", R, S))

		finalise("finalise", runID, PS)
		rec.want(t, "finalise", tr("run", R, PS))

		_, err := st.RerunCandidates(ctx, runID, store.RerunFilter{Statuses: []string{string(S)}})
		require.ErrorIs(t, err, store.ErrRerunSucceeded)
		tasks := rerun("rerun", runID, store.RerunFilter{})
		rec.want(t, "rerun", tr("run", PS, R), tr("item", F, P))

		stale, _ := claim(t, st, w, runID, tasks[0].ItemNo)
		require.False(t, stale[0].Claimed, "the old task's generation is spent")
		ids = []uuid.UUID{uuid.Must(uuid.NewV7())}
		cs, err := st.ClaimItems(ctx, w, false, []store.ClaimRequest{{RunID: runID, ItemNo: tasks[0].ItemNo, Generation: tasks[0].Generation, AttemptID: ids[0]}})
		require.NoError(t, err)
		require.True(t, cs[0].Claimed)
		finish("finish the rerun", w, end(runID, tasks[0].ItemNo, ids[0], S))
		finalise("finalise the rerun", runID, S)
		rec.want(t, "rerun to the end", tr("item", P, R), tr("item", R, S), tr("run", R, S))
	})

	t.Run("FailedRunRerunOutOfAttempts", func(t *testing.T) {
		runID := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: 1, Job: &testfactory.JobOpts{ID: new("j"), MaxAttempts: new(int32(1))}}).RunID
		rec.after(t, "create and enqueue")
		_, ids := claim(t, st, w, runID, 1)
		finish("finish", w, end(runID, 1, ids[0], F))
		finalise("finalise", runID, F)
		rec.want(t, "fail", tr("item", P, R), tr("item", R, F), tr("run", R, F))

		rerun("rerun", runID, store.RerunFilter{})
		rec.want(t, "rerun", tr("run", F, R), tr("item", F, P))
		// The worker settles an item it finds out of attempts (c.Exhausted), as the reconciler
		// does the open items of a timed-out run.
		settled, err := st.SettleItems(ctx, w.Shard, runID, []int32{1}, F, etl.CategorySystem, "out of attempts")
		require.NoError(t, err)
		require.Len(t, settled, 1)
		finalise("finalise", runID, F)
		rec.want(t, "settle and finalise", tr("item", P, F), tr("run", R, F))
	})

	t.Run("Cancel", func(t *testing.T) {
		runID := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: 2, Job: &testfactory.JobOpts{ID: new("j"), MaxAttempts: new(int32(2))}}).RunID
		rec.after(t, "create and enqueue")
		_, ids := claim(t, st, w, runID, 1)
		rec.after(t, "claim")
		// ops.Cancel's store calls, in its order.
		require.NoError(t, st.RequestCancel(ctx, runID, "me", "test"))
		cancelled, err := st.CancelOpenItems(ctx, runID)
		require.NoError(t, err)
		require.Len(t, cancelled, 1)
		running, err := st.ClaimedItems(ctx, runID)
		require.NoError(t, err)
		require.Len(t, running, 1)
		res, err := st.FinaliseRun(ctx, runID)
		require.NoError(t, err)
		require.False(t, res.Done, "an attempt still runs")
		rec.want(t, "cancel", tr("item", P, C))
		finish("the running attempt stops", w, end(runID, 1, ids[0], C))
		finalise("finalise", runID, C)
		rec.want(t, "stop and finalise", tr("item", R, C), tr("run", R, C))

		rerun("rerun", runID, store.RerunFilter{})
		rec.want(t, "rerun", tr("run", C, R), tr("item", C, P), tr("item", C, P))
	})

	t.Run("EndedBeforeItsFanoutWasRecorded", func(t *testing.T) {
		// An enqueuer that died mid fan-out leaves its run PENDING until the reconciler
		// finishes the fan-out; it can be cancelled meanwhile.
		cancelled := openRun(t, st, "k", 2, nil, 1)
		rec.want(t, "create", created("run", P), created("item", P))
		require.NoError(t, st.RequestCancel(ctx, cancelled, "me", "test"))
		_, err := st.CancelOpenItems(ctx, cancelled)
		require.NoError(t, err)
		finalise("cancel", cancelled, C)
		rec.want(t, "cancel", tr("item", P, C), tr("run", P, C))

		// Workers take the tasks already in Redis while the fan-out goes on: the last page can
		// end before the enqueuer records the fan-out, and the run ends from PENDING.
		fast := openRun(t, st, "k", 2, nil, 2)
		rec.after(t, "create")
		_, ids := claim(t, st, w, fast, 1, 2)
		finish("finish", w, end(fast, 1, ids[0], S), end(fast, 2, ids[1], S))
		finalise("finalise", fast, S)
		rec.want(t, "fast run", tr("item", P, R), tr("item", P, R), tr("item", R, S), tr("item", R, S), tr("run", P, S))
		require.NoError(t, st.MarkRunEnqueued(ctx, fast))
		rec.want(t, "the late fan-out record")

		partial := openRun(t, st, "k", 2, nil, 2)
		rec.after(t, "create")
		_, ids = claim(t, st, w, partial, 1, 2)
		finish("finish", w, end(partial, 1, ids[0], S), end(partial, 2, ids[1], F))
		finalise("finalise", partial, PS)
		rec.want(t, "partial run", tr("item", P, R), tr("item", P, R), tr("item", R, S), tr("item", R, F), tr("run", P, PS))
	})

	t.Run("Skipped", func(t *testing.T) {
		runID := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: 2, Job: &testfactory.JobOpts{ID: new("j"), MaxAttempts: new(int32(2))}}).RunID
		rec.after(t, "create and enqueue")
		skipped, err := st.CreateSkippedRun(ctx, store.NewRun{RunID: uuid.Must(uuid.NewV7()), JobID: "j", Trigger: "schedule"}, "overlap")
		require.NoError(t, err)
		rec.want(t, "skipped run", created("run", SK))
		_, err = st.ReopenForRerun(ctx, skipped.RunID, nil, 1)
		require.ErrorIs(t, err, store.ErrRunNotFinished, "a SKIPPED run has nothing to rerun")
		rec.want(t, "rerun of a skipped run")

		_, err = st.SettleItems(ctx, store.ReconcilerShard, runID, []int32{1}, SK, etl.CategoryNone, "nothing to do")
		require.NoError(t, err)
		_, ids := claim(t, st, w, runID, 2)
		finish("finish", w, end(runID, 2, ids[0], S))
		finalise("finalise", runID, S)
		rec.want(t, "skip an item", tr("item", P, SK), tr("item", P, R), tr("item", R, S), tr("run", R, S))

		// A succeeded run's skipped items can be run after all.
		tasks := rerun("rerun", runID, store.RerunFilter{Statuses: []string{string(SK)}})
		rec.want(t, "rerun", tr("run", S, R), tr("item", SK, P))
		ids = []uuid.UUID{uuid.Must(uuid.NewV7())}
		_, err = st.ClaimItems(ctx, w, false, []store.ClaimRequest{{RunID: runID, ItemNo: 1, Generation: tasks[0].Generation, AttemptID: ids[0]}})
		require.NoError(t, err)
		finish("finish", w, end(runID, 1, ids[0], S))
		finalise("finalise", runID, S)
		rec.want(t, "rerun to the end", tr("item", P, R), tr("item", R, S), tr("run", R, S))
	})

	t.Run("LostWorkers", func(t *testing.T) {
		runID := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: 1, Job: &testfactory.JobOpts{ID: new("j"), MaxAttempts: new(int32(1))}}).RunID
		rec.after(t, "create and enqueue")
		// die stops the worker that holds the item (a lease that ended), declares it dead and
		// closes its attempts, as the reconciler does.
		die := func(wk store.WorkerRef) []store.LostAttempt {
			t.Helper()
			require.NoError(t, st.StopWorker(ctx, wk.ID))
			require.Eventually(t, func() bool {
				ok, err := st.DeclareWorkerDead(ctx, wk.ID)
				require.NoError(t, err)
				return ok
			}, 5*time.Second, 10*time.Millisecond)
			lost, err := st.CloseLostAttempts(ctx, wk.ID, 10)
			require.NoError(t, err)
			require.Len(t, lost, 1)
			return lost
		}
		gen := int32(0)
		for death := 1; death <= runstate.SuspectAfter+1; death++ {
			wk := testfactory.Worker(t.Context(), t, st, &testfactory.WorkerOpts{Lease: new(time.Minute)})
			alone := death > runstate.SuspectAfter
			cs, err := st.ClaimItems(ctx, wk, alone, []store.ClaimRequest{{RunID: runID, ItemNo: 1, Generation: gen, AttemptID: uuid.Must(uuid.NewV7())}})
			require.NoError(t, err)
			require.True(t, cs[0].Claimed, "death %d", death)
			lost := die(wk)
			gen = lost[0].Generation
			if alone {
				require.False(t, lost[0].Outcome.Retry, "the suspect fails")
				rec.want(t, "the suspect's worker dies", tr("item", P, R), tr("item", R, F))
			} else {
				require.True(t, lost[0].Outcome.Retry)
				rec.want(t, fmt.Sprintf("worker death %d", death), tr("item", P, R), tr("item", R, P))
			}
		}
		finalise("finalise", runID, F)
		rec.want(t, "finalise", tr("run", R, F))
	})

	t.Run("RunTimeout", func(t *testing.T) {
		timeout := 300 * time.Millisecond
		runID := openRun(t, st, "slow", 2, &timeout, 2)
		require.NoError(t, st.MarkRunEnqueued(ctx, runID))
		never := openRun(t, st, "slow", 2, &timeout, 1) // its fan-out never got recorded
		rec.after(t, "create")
		_, _ = claim(t, st, w, runID, 1)
		rec.want(t, "claim", tr("item", P, R))
		require.Eventually(t, func() bool {
			runs, err := st.TimedOutRuns(ctx, 10)
			require.NoError(t, err)
			return len(runs) == 2
		}, 10*time.Second, 20*time.Millisecond)
		cs, _ := claim(t, st, w, runID, 2)
		require.False(t, cs[0].Claimed, "no claim past the deadline")
		rec.want(t, "claim past the deadline")

		// The reconciler's run-timeout pass (reconcile.runTimeouts): open items fail, claims
		// whose worker had the grace to record them are closed, the run is finalised.
		for _, id := range []uuid.UUID{runID, never} {
			open, err := st.OpenItems(ctx, id, 0, 100)
			require.NoError(t, err)
			nos := make([]int32, len(open))
			for i, o := range open {
				nos[i] = o.ItemNo
			}
			_, err = st.SettleItems(ctx, store.ReconcilerShard, id, nos, F, etl.CategorySystem, "run timeout")
			require.NoError(t, err)
			_, err = st.CloseTimedOutClaims(ctx, id, 0, "run timeout", 100)
			require.NoError(t, err)
			finalise("finalise", id, F)
		}
		rec.want(t, "time out", tr("item", P, F), tr("item", R, F), tr("run", R, F), tr("item", P, F), tr("run", P, F))
	})

	t.Run("RefusedByRunstate", func(t *testing.T) {
		runID := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: 1, Job: &testfactory.JobOpts{ID: new("j"), MaxAttempts: new(int32(2))}}).RunID
		rec.after(t, "create and enqueue")
		_, err := st.SettleItems(ctx, store.ReconcilerShard, runID, []int32{1}, S, etl.CategoryNone, "")
		require.ErrorIs(t, err, runstate.ErrInvalidTransition, "an item succeeds only by an attempt")
		_, ids := claim(t, st, w, runID, 1)
		rec.after(t, "claim")
		skip := end(runID, 1, ids[0], SK)
		res, err := st.FinishAttempts(ctx, w, []store.AttemptEnd{skip})
		require.NoError(t, err)
		require.ErrorIs(t, res[0].Err, runstate.ErrInvalidTransition, "an attempt does not end its item SKIPPED")
		retry := end(runID, 1, ids[0], F)
		retry.ItemStatus = P // Terminal left true: a retry that says it settled the item
		res, err = st.FinishAttempts(ctx, w, []store.AttemptEnd{retry})
		require.NoError(t, err)
		require.ErrorIs(t, res[0].Err, runstate.ErrInvalidTransition)
		require.NoError(t, st.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.FinishAttempts(ctx, w, []store.AttemptEnd{skip})
			require.ErrorIs(t, err, runstate.ErrInvalidTransition)
			return nil
		}))
		rec.want(t, "refused changes")
	})

	// Both ways: what the SQL did is allowed, and what is allowed the SQL does.
	machines := map[string]runstate.Machine{"run": runstate.Runs, "item": runstate.Items}
	seen := map[string]map[runstate.Transition]bool{"run": {}, "item": {}}
	for _, o := range rec.seen {
		m := machines[o.Table]
		seen[o.Table][runstate.Transition{From: o.From, To: o.To}] = true
		switch {
		case o.From == "" && !m.CanStart(o.To):
			t.Errorf("runstate does not allow: %s", o)
		case o.From != "" && !m.CanTransition(o.From, o.To):
			t.Errorf("runstate does not allow: %s", o)
		}
	}
	for table, m := range machines {
		for _, s := range m.Starts() {
			if !seen[table][runstate.Transition{To: s}] {
				t.Errorf("runstate lets a %s be created %s, but no store path does", table, s)
			}
		}
		for _, tr := range m.Transitions() {
			if !seen[table][tr] {
				t.Errorf("runstate allows %s %s, but no store path makes it", table, tr)
			}
		}
	}
	if t.Failed() {
		for _, o := range rec.seen {
			t.Log(o)
		}
	}
}
