package store_test

import (
	"context"
	"encoding/json"
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

// claim claims the items and returns what each claim found with its attempt id.
func claim(t *testing.T, st *store.Store, w store.WorkerRef, runID uuid.UUID, nos ...int32) ([]store.Claim, []uuid.UUID) {
	t.Helper()
	reqs := make([]store.ClaimRequest, len(nos))
	ids := make([]uuid.UUID, len(nos))
	for i, no := range nos {
		ids[i] = uuid.Must(uuid.NewV7())
		reqs[i] = store.ClaimRequest{RunID: runID, ItemNo: no, AttemptID: ids[i]}
	}
	out, err := st.ClaimItems(t.Context(), w, false, reqs)
	require.NoError(t, err)
	return out, ids
}

func TestClaimItems(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	runID := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: 4, Job: &testfactory.JobOpts{ID: new("j"), MaxAttempts: new(int32(2))}}).RunID
	w := testfactory.Worker(t.Context(), t, st, &testfactory.WorkerOpts{Lease: new(time.Minute)})

	t.Run("BatchClaimsEachOnce", func(t *testing.T) {
		req := []store.ClaimRequest{
			{RunID: runID, ItemNo: 1, AttemptID: uuid.Must(uuid.NewV7())},
			{RunID: runID, ItemNo: 2, AttemptID: uuid.Must(uuid.NewV7())},
			{RunID: runID, ItemNo: 1, AttemptID: uuid.Must(uuid.NewV7())}, // a duplicate delivery in the same batch
		}
		cs, err := st.ClaimItems(t.Context(), w, false, req)
		require.NoError(t, err)
		require.True(t, cs[0].Claimed)
		require.True(t, cs[1].Claimed)
		require.False(t, cs[2].Claimed, "one attempt per item")
		require.EqualValues(t, 1, cs[0].ItemAttempt)
		require.Equal(t, "j", cs[0].JobID)
		require.JSONEq(t, `{"i":1}`, string(cs[0].Params))

		again, err := st.ClaimItems(t.Context(), w, false, req[:1])
		require.NoError(t, err)
		require.True(t, again[0].Claimed, "a retried claim with the same attempt id finds its own claim")
		require.Equal(t, cs[0].AttemptNo, again[0].AttemptNo)

		other, _ := claim(t, st, w, runID, 1)
		require.False(t, other[0].Claimed)
		require.True(t, other[0].Held)

		var running, rows int
		require.NoError(t, st.Pool().QueryRow(t.Context(), `SELECT
			(SELECT count(*) FROM dw_etl_run_items WHERE run_id = $1 AND current_attempt_id IS NOT NULL AND current_attempt_no IS NOT NULL),
			(SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1)`, runID).Scan(&running, &rows))
		require.Equal(t, 2, running, "a running attempt lives on its item")
		require.Zero(t, rows, "an attempt's row is written when it ends")
		c, err := st.RunCounters(t.Context(), runID)
		require.NoError(t, err)
		require.EqualValues(t, 2, c.AttemptsStarted)
	})

	t.Run("StaleGenerationAndMissing", func(t *testing.T) {
		cs, err := st.ClaimItems(t.Context(), w, false, []store.ClaimRequest{
			{RunID: runID, ItemNo: 3, Generation: 1, AttemptID: uuid.Must(uuid.NewV7())},
			{RunID: runID, ItemNo: 99, AttemptID: uuid.Must(uuid.NewV7())},
		})
		require.NoError(t, err)
		require.False(t, cs[0].Claimed)
		require.True(t, cs[0].Found)
		require.Zero(t, cs[0].Generation, "the item is at generation 0; the task's 1 is not its")
		require.False(t, cs[1].Found)
	})

	t.Run("CancelledRunIsNotClaimed", func(t *testing.T) {
		run2 := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: 1, Job: &testfactory.JobOpts{ID: new("j2"), MaxAttempts: new(int32(2))}}).RunID
		require.NoError(t, st.RequestCancel(t.Context(), run2, "me", "why"))
		cs, _ := claim(t, st, w, run2, 1)
		require.False(t, cs[0].Claimed)
		require.True(t, cs[0].CancelRequested)
	})
}

func end(runID uuid.UUID, no int32, attempt uuid.UUID, status runstate.Status) store.AttemptEnd {
	return store.AttemptEnd{RunID: runID, ItemNo: no, AttemptID: attempt, AttemptStatus: status, ItemStatus: status,
		Terminal: true, ErrorCategory: etl.CategoryNone, RecordsRead: 10, RecordsWritten: 10, Pages: 1}
}

func TestFinishAttempts(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	runID := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: 4, Job: &testfactory.JobOpts{ID: new("j"), MaxAttempts: new(int32(3))}}).RunID
	w := testfactory.Worker(t.Context(), t, st, &testfactory.WorkerOpts{Lease: new(time.Minute)})
	reqs := make([]store.ClaimRequest, 4)
	for i := range reqs {
		reqs[i] = store.ClaimRequest{RunID: runID, ItemNo: int32(i + 1), AttemptID: uuid.Must(uuid.NewV7())}
	}
	_, err := st.ClaimItems(t.Context(), w, false, reqs)
	require.NoError(t, err)

	// A message Postgres would refuse raw (NUL, invalid UTF-8, a rune cut by a byte limit),
	// and a row its constraints refuse, next to ordinary ends in one batch.
	ugly := "bad\x00body \xff" + string([]byte("é")[:1])
	bad := end(runID, 2, reqs[1].AttemptID, "BOGUS")
	failed := end(runID, 3, reqs[2].AttemptID, runstate.StatusFailed)
	failed.ErrorCategory, failed.ErrorMessage = etl.CategoryAPI, &ugly
	failed.ErrorDetail = json.RawMessage(`{"body":"x\u0000y"}`)
	ends := []store.AttemptEnd{end(runID, 1, reqs[0].AttemptID, runstate.StatusSuccess), bad, failed}
	res, err := st.FinishAttempts(t.Context(), w, ends)
	require.NoError(t, err)
	require.True(t, res[0].Recorded)
	require.Error(t, res[1].Err, "the constraint-breaking end fails alone")
	require.True(t, res[2].Recorded, "its neighbours are recorded")
	var msg, detail string
	require.NoError(t, st.Pool().QueryRow(t.Context(), `SELECT error_message, error_detail::text FROM dw_etl_run_attempts WHERE attempt_id = $1`,
		reqs[2].AttemptID).Scan(&msg, &detail))
	require.Equal(t, "badbody \uFFFD", msg, "NUL dropped, the invalid bytes replaced")
	require.JSONEq(t, `{"body":"xy"}`, detail)

	// The same end again (a retried statement whose commit was not acknowledged) is recorded.
	again, err := st.FinishAttempts(t.Context(), w, ends[:1])
	require.NoError(t, err)
	require.True(t, again[0].Recorded)
	require.Equal(t, runstate.StatusSuccess, again[0].Status)
	// An end from an attempt that does not hold the item changes nothing.
	lost, err := st.FinishAttempts(t.Context(), w, []store.AttemptEnd{end(runID, 4, uuid.Must(uuid.NewV7()), runstate.StatusSuccess)})
	require.NoError(t, err)
	require.True(t, lost[0].Lost())

	c, err := st.RunCounters(t.Context(), runID)
	require.NoError(t, err)
	require.EqualValues(t, 1, c.Succeeded)
	require.EqualValues(t, 1, c.Failed)
	require.EqualValues(t, 1, c.FailedBy[etl.CategoryAPI])
	require.EqualValues(t, 20, c.RecordsRead)
	require.EqualValues(t, 20, c.RecordsWritten, "the counters add what each end reports")
	require.EqualValues(t, 2, c.AttemptsEnded)
}

func TestLostAttemptsOfADeadWorker(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	runID := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: 3, Job: &testfactory.JobOpts{ID: new("j"), MaxAttempts: new(int32(1))}}).RunID
	w := testfactory.Worker(t.Context(), t, st, &testfactory.WorkerOpts{Lease: new(time.Second)})
	claim(t, st, w, runID, 1, 2, 3)
	// The worker stops heartbeating: one lease later it is dead.
	require.Eventually(t, func() bool {
		dead, err := st.DeadWorkers(t.Context(), 10)
		require.NoError(t, err)
		return len(dead) == 1
	}, 10*time.Second, 50*time.Millisecond)
	ok, err := st.DeclareWorkerDead(t.Context(), w.ID)
	require.NoError(t, err)
	require.True(t, ok)
	_, err = st.Heartbeat(t.Context(), w.ID, nil)
	require.ErrorIs(t, err, store.ErrWorkerDead, "a worker declared dead learns so at its next heartbeat")

	var lost []store.LostAttempt
	for {
		batch, err := st.CloseLostAttempts(t.Context(), w.ID, 2)
		require.NoError(t, err)
		lost = append(lost, batch...)
		if len(batch) < 2 {
			break
		}
	}
	require.Len(t, lost, 3)
	for _, l := range lost {
		require.True(t, l.Outcome.Retry, "a lost attempt does not count against max_attempts 1")
		require.Equal(t, runstate.MsgWorkerLost, l.Outcome.Message)
		require.EqualValues(t, 1, l.Generation, "a new task generation: the old task is stuck under the dead worker")
	}
	c, err := st.RunCounters(t.Context(), runID)
	require.NoError(t, err)
	require.Zero(t, c.Running())
	require.EqualValues(t, 3, c.AttemptsLost)
	require.Zero(t, c.Settled())

	// Claimed again (a second death): the next attempt must run alone.
	w2 := testfactory.Worker(t.Context(), t, st, &testfactory.WorkerOpts{Lease: new(time.Minute)})
	cs, err := st.ClaimItems(t.Context(), w2, false, []store.ClaimRequest{{RunID: runID, ItemNo: 1, Generation: 1, AttemptID: uuid.Must(uuid.NewV7())}})
	require.NoError(t, err)
	require.True(t, cs[0].Claimed)
	require.EqualValues(t, 2, cs[0].ItemAttempt)
	require.EqualValues(t, 1, cs[0].LostAttempts)
}

func TestLease(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	a, b := st.Lease("test", "a", 2*time.Second), st.Lease("test", "b", 2*time.Second)
	ok, err := a.TryAcquire(t.Context())
	require.NoError(t, err)
	require.True(t, ok)
	require.True(t, a.Held())
	ok, err = b.TryAcquire(t.Context())
	require.NoError(t, err)
	require.False(t, ok, "a live lease is not taken")
	other, err := st.Lease("other", "b", time.Second).TryAcquire(t.Context())
	require.NoError(t, err)
	require.True(t, other, "leases of other names are independent")

	// The holder freezes (stops renewing): by its own clock it stops leading before the
	// database lets another take over, and then the other does.
	require.Eventually(t, func() bool { return !a.Held() }, 5*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		ok, err := b.TryAcquire(t.Context())
		return err == nil && ok
	}, 5*time.Second, 50*time.Millisecond)
	ok, err = a.TryAcquire(t.Context())
	require.NoError(t, err)
	require.False(t, ok, "the old holder does not get it back while the new one renews")
	h, err := st.LeaseHolder(t.Context(), "test")
	require.NoError(t, err)
	require.Equal(t, "b", h.Label)
	require.NoError(t, b.Release(t.Context()))
	ok, err = a.TryAcquire(t.Context())
	require.NoError(t, err)
	require.True(t, ok, "a released lease is free at once")
}

func TestFinaliseRunFromCounters(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	runID := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: 2, Job: &testfactory.JobOpts{ID: new("j"), MaxAttempts: new(int32(1))}}).RunID
	w := testfactory.Worker(t.Context(), t, st, &testfactory.WorkerOpts{Lease: new(time.Minute)})
	_, ids := claim(t, st, w, runID, 1, 2)
	res, err := st.FinaliseRun(t.Context(), runID)
	require.NoError(t, err)
	require.False(t, res.Done, "items are open")

	// A run being finalised holds its row; log lines of the run (KEY SHARE through the
	// foreign key) must not wait for it.
	tx, err := st.Pool().Begin(t.Context())
	require.NoError(t, err)
	defer tx.Rollback(context.Background()) //nolint:errcheck
	_, err = tx.Exec(t.Context(), `SELECT 1 FROM dw_etl_runs WHERE run_id = $1 FOR NO KEY UPDATE`, runID)
	require.NoError(t, err)
	_, err = st.CopyLogs(t.Context(), []store.LogRow{{TS: time.Now(), RunID: runID, JobID: "j", Level: "info", Message: "during finalise"}})
	require.NoError(t, err, "a log line of a run being finalised is written at once")
	require.NoError(t, tx.Rollback(t.Context()))

	f := end(runID, 2, ids[1], runstate.StatusFailed)
	f.ErrorCategory = etl.CategoryDB
	_, err = st.FinishAttempts(t.Context(), w, []store.AttemptEnd{end(runID, 1, ids[0], runstate.StatusSuccess), f})
	require.NoError(t, err)
	res, err = st.FinaliseRun(t.Context(), runID)
	require.NoError(t, err)
	require.True(t, res.Done)
	require.Equal(t, runstate.StatusPartialSuccess, res.Status)
	run, err := st.GetRun(t.Context(), runID)
	require.NoError(t, err)
	require.Equal(t, runstate.StatusPartialSuccess, run.Status)
	require.Equal(t, etl.CategoryDB, run.ErrorCategory)
	require.EqualValues(t, 1, run.ItemsSucceeded)
	require.EqualValues(t, 2, run.AttemptCount)
	again, err := st.FinaliseRun(t.Context(), runID)
	require.NoError(t, err)
	require.False(t, again.Done, "exactly once")
}

func TestScheduledJobTicks(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	for _, j := range []testfactory.JobOpts{{ID: new("a")}, {ID: new("b")}, {ID: new("off"), Enabled: new(false)}} {
		j.Schedule = new("@hourly")
		testfactory.Job(t.Context(), t, st, &j)
	}
	tick := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	for _, at := range []time.Time{tick.Add(-time.Hour), tick} {
		_, err := st.CreateSkippedRun(t.Context(), store.NewRun{RunID: uuid.Must(uuid.NewV7()), JobID: "a", Trigger: "schedule", ScheduledFor: &at}, "test")
		require.NoError(t, err)
	}
	_, err := st.CreateSkippedRun(t.Context(), store.NewRun{RunID: uuid.Must(uuid.NewV7()), JobID: "a", Trigger: "schedule", ScheduledFor: &tick}, "again")
	require.True(t, store.IsTickTaken(err), "a tick is taken once: %v", err)

	jobs, err := st.ScheduledJobTicks(t.Context())
	require.NoError(t, err)
	require.Len(t, jobs, 2)
	require.Equal(t, "a", jobs[0].JobID)
	require.NotNil(t, jobs[0].LastScheduledFor)
	require.True(t, jobs[0].LastScheduledFor.Equal(tick))
	require.Equal(t, "b", jobs[1].JobID)
	require.Nil(t, jobs[1].LastScheduledFor)
}

// TestRunningAttemptLivesOnItsItem follows one item through a failed attempt and a running one:
// the running attempt is on the item (its progress too) and ends up last in the item's
// attempts, and its row, progress kept, is written when it ends.
func TestRunningAttemptLivesOnItsItem(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	runID := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: 1, Job: &testfactory.JobOpts{ID: new("j"), MaxAttempts: new(int32(3))}}).RunID
	w := testfactory.Worker(t.Context(), t, st, &testfactory.WorkerOpts{Lease: new(time.Minute)})
	ctx := t.Context()

	_, ids := claim(t, st, w, runID, 1)
	failed := end(runID, 1, ids[0], runstate.StatusFailed)
	backoff := time.Second
	failed.ItemStatus, failed.Terminal, failed.Backoff, failed.ErrorCategory = runstate.StatusPending, false, &backoff, etl.CategoryAPI
	_, err := st.FinishAttempts(ctx, w, []store.AttemptEnd{failed})
	require.NoError(t, err)
	cs, ids := claim(t, st, w, runID, 1)
	require.True(t, cs[0].Claimed)
	n, err := st.ReportProgress(ctx, []store.AttemptProgress{{RunID: runID, ItemNo: 1, AttemptID: ids[0], RecordsRead: 7, Message: "page 2"}})
	require.NoError(t, err)
	require.EqualValues(t, 1, n)

	item := int32(1)
	var seen []store.AttemptRow
	for after := ""; ; {
		p, err := st.HistoryAttempts(ctx, store.AttemptFilter{RunID: runID, ItemNo: &item, Limit: 1, After: after})
		require.NoError(t, err)
		seen = append(seen, p.Items...)
		if after = p.Next; after == "" {
			break
		}
	}
	require.Len(t, seen, 2)
	require.Equal(t, runstate.StatusFailed, seen[0].Status)
	require.Equal(t, runstate.StatusRunning, seen[1].Status)
	require.Equal(t, ids[0], seen[1].AttemptID)
	require.Equal(t, cs[0].AttemptNo, seen[1].AttemptNo)
	require.Greater(t, seen[1].AttemptNo, seen[0].AttemptNo)
	require.EqualValues(t, 2, seen[1].ItemAttempt)
	require.EqualValues(t, 7, seen[1].RecordsRead)
	require.Equal(t, "page 2", *seen[1].Progress)
	require.NotNil(t, seen[1].WorkerID)

	run, err := st.HistoryAttempts(ctx, store.AttemptFilter{RunID: runID})
	require.NoError(t, err)
	require.Len(t, run.Items, 1, "a run's listing holds the attempts that ended")

	_, err = st.FinishAttempts(ctx, w, []store.AttemptEnd{end(runID, 1, ids[0], runstate.StatusSuccess)})
	require.NoError(t, err)
	p, err := st.HistoryAttempts(ctx, store.AttemptFilter{RunID: runID, ItemNo: &item})
	require.NoError(t, err)
	require.Len(t, p.Items, 2)
	got := p.Items[1]
	require.Equal(t, runstate.StatusSuccess, got.Status)
	require.Equal(t, cs[0].AttemptNo, got.AttemptNo, "the number drawn at the claim")
	require.Equal(t, "page 2", *got.Progress, "the last progress message is kept")
	require.Equal(t, w.Name, *got.WorkerID)
	require.NotNil(t, got.DurationMs)
}

func TestClaimShardIsAnotherWorkerShard(t *testing.T) {
	t.Parallel()
	for s := int16(1); s < store.ProgressShards; s++ {
		c := store.WorkerRef{Shard: s}.ClaimShard()
		if c == s || c < 1 || c >= store.ProgressShards {
			t.Errorf("shard %d: claim shard %d, want another in [1, %d)", s, c, store.ProgressShards)
		}
	}
}
