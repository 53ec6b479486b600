package store_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/store"
)

// reconcileRun creates a job (max_attempts) and a run of n items on a fresh database.
func reconcileRun(t *testing.T, st *store.Store, jobID string, maxAttempts int32, n int) uuid.UUID {
	t.Helper()
	_, err := st.UpsertJobs(t.Context(), []store.UpsertJob{{
		JobID: jobID, Kind: "test", Strategy: "none", CursorPolicy: "run", Config: json.RawMessage(`{}`),
		OverlapPolicy: "allow", Queue: "etl", MaxAttempts: maxAttempts, TimeoutMs: 1000, RetentionMs: 1000, Enabled: true,
	}})
	require.NoError(t, err)
	runID := uuid.Must(uuid.NewV7())
	items := make([]store.NewItem, n)
	for i := range items {
		h := fmt.Sprintf("h%03d", i+1)
		items[i] = store.NewItem{Params: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i+1)), ParamHash: h, TaskID: runID.String() + ":" + h}
	}
	_, _, err = st.CreateRun(t.Context(), store.NewRun{RunID: runID, JobID: jobID, Trigger: "manual", Strategy: "none"}, items, 0)
	require.NoError(t, err)
	require.NoError(t, st.MarkRunEnqueued(t.Context(), runID))
	return runID
}

func claimAll(t *testing.T, st *store.Store, runID uuid.UUID, n int, maxAttempts int32) {
	t.Helper()
	for no := 1; no <= n; no++ {
		_, err := st.ClaimItem(t.Context(), store.ClaimRequest{RunID: runID, ItemNo: int32(no), AttemptID: uuid.Must(uuid.NewV7()),
			MaxAttempts: maxAttempts, Lease: time.Minute, WorkerID: "w"})
		require.NoError(t, err)
	}
	_, err := st.Pool().Exec(t.Context(), `UPDATE dw_etl_run_items SET heartbeat_at = now() - interval '1 hour' WHERE run_id = $1`, runID)
	require.NoError(t, err)
}

func TestAdvisoryLock(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	a, b := st.AdvisoryLock("etlexec_test_lock"), st.AdvisoryLock("etlexec_test_lock")
	t.Cleanup(func() { _ = a.Release(t.Context()); _ = b.Release(t.Context()) })

	ok, err := a.TryAcquire(t.Context())
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = a.TryAcquire(t.Context())
	require.NoError(t, err)
	require.True(t, ok, "the holder keeps it")
	ok, err = b.TryAcquire(t.Context())
	require.NoError(t, err)
	require.False(t, ok)
	other, err := st.AdvisoryLock("etlexec_other_lock").TryAcquire(t.Context())
	require.NoError(t, err)
	require.True(t, other, "locks of other names are independent")

	require.NoError(t, a.Release(t.Context()))
	require.False(t, a.Held())
	ok, err = b.TryAcquire(t.Context())
	require.NoError(t, err)
	require.True(t, ok)

	// The holder's session dies: it learns so, and the lock is free for others.
	_, err = st.Pool().Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objid = hashtext('etlexec_test_lock')::oid
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	require.NoError(t, err)
	ok, err = b.TryAcquire(t.Context())
	require.Error(t, err)
	require.False(t, ok)
	require.False(t, b.Held())
	// pg_terminate_backend only signals; the lock goes when that backend has exited.
	require.Eventually(t, func() bool {
		ok, err := a.TryAcquire(t.Context())
		return err == nil && ok
	}, 5*time.Second, 10*time.Millisecond)
}

func TestCloseLostAttemptsCountsEveryShard(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	const n = 40 // more items than shards: several items per shard
	runID := reconcileRun(t, st, "j", 1, n)
	claimAll(t, st, runID, n, 1)

	var lost []store.LostAttempt
	for {
		batch, err := st.CloseLostAttempts(t.Context(), time.Minute, 7)
		require.NoError(t, err)
		lost = append(lost, batch...)
		if len(batch) < 7 {
			break
		}
	}
	require.Len(t, lost, n)
	for _, l := range lost {
		require.False(t, l.Retry)
	}
	done, err := st.RunComplete(t.Context(), runID)
	require.NoError(t, err)
	require.True(t, done)
	var open int
	require.NoError(t, st.Pool().QueryRow(t.Context(), `SELECT count(*) FROM dw_etl_run_attempts WHERE status = 'RUNNING'`).Scan(&open))
	require.Zero(t, open)
}

func TestCloseLostAttemptsRetries(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	runID := reconcileRun(t, st, "j", 2, 3)
	claimAll(t, st, runID, 3, 2)
	lost, err := st.CloseLostAttempts(t.Context(), time.Minute, 100)
	require.NoError(t, err)
	require.Len(t, lost, 3)
	for _, l := range lost {
		require.True(t, l.Retry)
	}
	p, err := st.RunProgress(t.Context(), runID)
	require.NoError(t, err)
	require.Zero(t, p.Terminal, "items going back to PENDING are not terminal")
	page, err := st.PendingItemsAfter(t.Context(), time.Nanosecond, store.PendingItem{}, 100)
	require.NoError(t, err)
	require.Len(t, page, 3)
}

func TestFailOpenItemsInBatches(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	const n = 25
	runID := reconcileRun(t, st, "j", 3, n)
	claimAll(t, st, runID, 5, 3) // five running, twenty pending
	total, attempts := 0, 0
	for {
		items, a, err := st.FailOpenItems(t.Context(), runID, "run timeout", 10)
		require.NoError(t, err)
		total, attempts = total+items, attempts+a
		if items < 10 {
			break
		}
	}
	require.Equal(t, n, total)
	require.Equal(t, 5, attempts)
	done, err := st.RunComplete(t.Context(), runID)
	require.NoError(t, err)
	require.True(t, done)
	items, _, err := st.FailOpenItems(t.Context(), runID, "run timeout", 10)
	require.NoError(t, err)
	require.Zero(t, items)
}

func TestPendingItemsAfterPages(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	r1 := reconcileRun(t, st, "j", 3, 4)
	r2 := reconcileRun(t, st, "k", 3, 3)
	var got []store.PendingItem
	var after store.PendingItem
	for {
		page, err := st.PendingItemsAfter(t.Context(), time.Nanosecond, after, 2)
		require.NoError(t, err)
		got = append(got, page...)
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1]
	}
	require.Len(t, got, 7)
	seen := map[uuid.UUID]int{}
	for _, it := range got {
		seen[it.RunID]++
	}
	require.Equal(t, map[uuid.UUID]int{r1: 4, r2: 3}, seen)

	none, err := st.PendingItemsAfter(t.Context(), time.Hour, store.PendingItem{}, 10)
	require.NoError(t, err)
	require.Empty(t, none, "runs younger than grace are left alone")
}

func TestScheduledJobTicks(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	spec := "@hourly"
	_, err := st.UpsertJobs(t.Context(), []store.UpsertJob{
		{JobID: "a", Kind: "test", Strategy: "none", CursorPolicy: "run", Config: json.RawMessage(`{}`), Schedule: &spec,
			OverlapPolicy: "allow", Queue: "etl", MaxAttempts: 1, TimeoutMs: 1000, Enabled: true},
		{JobID: "b", Kind: "test", Strategy: "none", CursorPolicy: "run", Config: json.RawMessage(`{}`), Schedule: &spec,
			OverlapPolicy: "allow", Queue: "etl", MaxAttempts: 1, TimeoutMs: 1000, Enabled: true},
		{JobID: "off", Kind: "test", Strategy: "none", CursorPolicy: "run", Config: json.RawMessage(`{}`), Schedule: &spec,
			OverlapPolicy: "allow", Queue: "etl", MaxAttempts: 1, TimeoutMs: 1000, Enabled: false},
	})
	require.NoError(t, err)
	tick := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	for _, at := range []time.Time{tick.Add(-time.Hour), tick} {
		_, err := st.CreateSkippedRun(t.Context(), store.NewRun{RunID: uuid.Must(uuid.NewV7()), JobID: "a", Trigger: "schedule", ScheduledFor: &at}, "test")
		require.NoError(t, err)
	}
	_, err = st.CreateSkippedRun(t.Context(), store.NewRun{RunID: uuid.Must(uuid.NewV7()), JobID: "a", Trigger: "schedule", ScheduledFor: &tick}, "again")
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
