package store_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/testfactory"
)

// Every bookkeeping statement at once, on overlapping items, from several "workers": claims
// (some duplicate), ends in shuffled order, progress reports and a reconciler closing a dead
// worker's attempts. The lock order must leave Postgres no deadlock to detect.
func TestNoDeadlocksUnderContention(t *testing.T) {
	t.Parallel()
	u := dbtest.URL(t)
	ctx := t.Context()
	st, err := store.Open(ctx, u, store.Options{Bounded: true, MaxConns: 16})
	require.NoError(t, err)
	// Few items and large batches: concurrent claims overlap on several rows at once, in
	// random orders, which is where an unordered lock would deadlock.
	const items = 60
	runID := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: items, Job: &testfactory.JobOpts{ID: new("j"), MaxAttempts: new(int32(1000))}}).RunID
	dead := testfactory.Worker(t.Context(), t, st, &testfactory.WorkerOpts{Lease: new(time.Hour)})
	_, err = st.Pool().Exec(ctx, `UPDATE dw_etl_workers SET lease_until = now() - interval '1 second' WHERE worker_id = $1`, dead.ID)
	require.NoError(t, err)

	deadline := time.Now().Add(4 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	live := make(chan uuid.UUID, 1024)
	for w := range 4 {
		wg.Go(func() {
			ref := testfactory.Worker(t.Context(), t, st, &testfactory.WorkerOpts{Lease: new(time.Hour)})
			ref.Shard = int16(1 + w)
			for time.Now().Before(deadline) {
				reqs := make([]store.ClaimRequest, 20)
				for i := range reqs {
					reqs[i] = store.ClaimRequest{RunID: runID, ItemNo: int32(1 + rand.IntN(items)), AttemptID: uuid.Must(uuid.NewV7())}
				}
				cs, err := st.ClaimItems(ctx, ref, false, reqs)
				if err != nil {
					fail(err)
					return
				}
				var ends []store.AttemptEnd
				for i, c := range cs {
					if !c.Claimed {
						continue
					}
					select {
					case live <- reqs[i].AttemptID:
					default:
					}
					status := runstate.StatusSuccess
					if rand.IntN(10) != 0 { // mostly retries: items keep cycling through claims
						status = runstate.StatusFailed
					}
					e := end(runID, reqs[i].ItemNo, reqs[i].AttemptID, status)
					if status == runstate.StatusFailed {
						e.ItemStatus, e.Terminal = runstate.StatusPending, false // a retry follows
						b := 10 * time.Millisecond
						e.Backoff = &b
					}
					ends = append(ends, e)
				}
				rand.Shuffle(len(ends), func(i, j int) { ends[i], ends[j] = ends[j], ends[i] })
				if _, err := st.FinishAttempts(ctx, ref, ends); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	wg.Go(func() { // the liveness loop's progress reports
		for time.Now().Before(deadline) {
			var ps []store.AttemptProgress
			for len(ps) < 20 {
				select {
				case id := <-live:
					ps = append(ps, store.AttemptProgress{AttemptID: id, RecordsRead: 1, Message: "working"})
					continue
				default:
				}
				break
			}
			_, err := st.ReportProgress(ctx, ps)
			fail(err)
			time.Sleep(time.Millisecond)
		}
	})
	wg.Go(func() { // a dead worker's claims, closed by the reconciler as they appear
		for time.Now().Before(deadline) {
			reqs := []store.ClaimRequest{{RunID: runID, ItemNo: int32(1 + rand.IntN(items)), AttemptID: uuid.Must(uuid.NewV7())}}
			if _, err := st.ClaimItems(ctx, dead, false, reqs); err != nil {
				fail(err)
				return
			}
			_, err := st.CloseLostAttempts(ctx, dead.ID, 50)
			fail(err)
		}
	})
	wg.Wait()
	require.Empty(t, errs)

	// Backends report their statistics when they exit: close the pools, then read.
	st.Close()
	check, err := pgx.Connect(ctx, u)
	require.NoError(t, err)
	defer check.Close(context.Background())
	var deadlocks int64
	require.NoError(t, check.QueryRow(ctx, `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&deadlocks))
	require.Zero(t, deadlocks, "deadlocks detected in the test's database")

	// The counters agree with the rows they count.
	var started, attempts, succeeded, successItems int
	require.NoError(t, check.QueryRow(ctx, `SELECT
		(SELECT sum(attempts_started) FROM dw_etl_run_progress WHERE run_id = $1),
		(SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1),
		(SELECT sum(succeeded) FROM dw_etl_run_progress WHERE run_id = $1),
		(SELECT count(*) FROM dw_etl_run_items WHERE run_id = $1 AND status = 'SUCCESS')`, runID).
		Scan(&started, &attempts, &succeeded, &successItems))
	require.Equal(t, attempts, started)
	require.Equal(t, successItems, succeeded)
	t.Logf("%d attempts, %d items succeeded, 0 deadlocks", attempts, successItems)
}

// Sessions ended under the ledger's feet (an administrator, a failover, the reconciler of a
// neighbour) cost no attempt: every statement is retried on a fresh connection.
func TestTransientErrorsAreRetried(t *testing.T) {
	t.Parallel()
	u := dbtest.URL(t)
	ctx := t.Context()
	st, err := store.Open(ctx, u, store.Options{Bounded: true, MaxConns: 4, AppName: "etlexec ledger under fire"})
	require.NoError(t, err)
	defer st.Close()
	// The ledger works item by item until the killer has ended enough sessions: a fast
	// machine needs more items than a slow one, so the count of kills, not time, ends it.
	const maxItems, wantKills = 2000, 5
	runID := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: maxItems, Job: &testfactory.JobOpts{ID: new("j"), MaxAttempts: new(int32(1))}}).RunID
	w := testfactory.Worker(t.Context(), t, st, &testfactory.WorkerOpts{Lease: new(time.Hour)})
	killer, err := pgx.Connect(ctx, u)
	require.NoError(t, err)
	defer killer.Close(context.Background())
	stop := make(chan struct{})
	var killed atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
			}
			var n int64
			if killer.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE application_name = 'etlexec ledger under fire'`).Scan(&n) == nil {
				killed.Add(n)
			}
		}
	})
	items := 0
	for no := int32(1); no <= maxItems && killed.Load() < wantKills; no++ {
		id := uuid.Must(uuid.NewV7())
		cs, err := st.ClaimItems(ctx, w, false, []store.ClaimRequest{{RunID: runID, ItemNo: no, AttemptID: id}})
		require.NoError(t, err)
		require.True(t, cs[0].Claimed, "item %d", no)
		res, err := st.FinishAttempts(ctx, w, []store.AttemptEnd{end(runID, no, id, runstate.StatusSuccess)})
		require.NoError(t, err)
		require.True(t, res[0].Recorded, "item %d", no)
		items++
	}
	close(stop)
	wg.Wait()
	require.GreaterOrEqual(t, killed.Load(), int64(wantKills), "the test must actually have ended sessions")
	c, err := st.RunCounters(ctx, runID)
	require.NoError(t, err)
	require.EqualValues(t, items, c.Succeeded)
	require.EqualValues(t, items, c.AttemptsStarted, "exactly one attempt per item")
	t.Logf("%d sessions ended during %d claims and ends", killed.Load(), 2*items)
}
