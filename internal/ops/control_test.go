package ops_test

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/ops"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

type bundle struct {
	st    *store.Store
	queue string
	enq   *enqueue.Enqueuer
	insp  *asynq.Inspector
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{st: dbtest.Store(t), queue: redistest.Queue(t)}
	b.enq = newEnqueuer(t, b.st, redistest.ConnOpt(t))
	b.insp = asynq.NewInspector(redistest.ConnOpt(t))
	t.Cleanup(func() { b.insp.Close() })
	_, err := b.st.ApplyJobs(t.Context(), []store.JobDefinition{{Job: store.JobSpec{
		JobID: "regions", Kind: "synthetic", SupportsParams: true, Strategy: "none", CursorPolicy: "run",
		Config: json.RawMessage(`{}`), OverlapPolicy: "allow", Queue: b.queue, MaxAttempts: 1, TimeoutMs: 10000,
		RetentionMs: 60000, Enabled: true,
	}}}, false)
	require.NoError(t, err)
	return b
}

func newEnqueuer(t *testing.T, st *store.Store, redis asynq.RedisConnOpt) *enqueue.Enqueuer {
	t.Helper()
	enq, err := enqueue.New(enqueue.Config{Store: st, Redis: redis, Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = enq.Close() })
	return enq
}

func (b *bundle) pending(t *testing.T) int {
	t.Helper()
	qi, err := b.insp.GetQueueInfo(b.queue)
	if err != nil {
		return 0 // the queue does not exist yet
	}
	return qi.Pending
}

func (b *bundle) runCount(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, b.st.Pool().QueryRow(t.Context(), `SELECT count(*) FROM dw_etl_runs WHERE job_id = 'regions'`).Scan(&n))
	return n
}

var twoRegions = []json.RawMessage{json.RawMessage(`{"r":"eu"}`), json.RawMessage(`{"r":"us"}`)}

// TestTriggerIdempotencyKey: a trigger that recorded its run but failed on Redis, retried with
// the same key, gets the same run (its tasks enqueued now), never a second one.
func TestTriggerIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()

	dead := asynq.RedisClientOpt{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond}
	req := ops.TriggerRequest{JobID: "regions", Params: twoRegions, IdempotencyKey: "nightly-2026-01-01"}
	first, err := ops.Trigger(ctx, b.st, newEnqueuer(t, b.st, dead), req)
	require.Error(t, err, "Redis is down")
	require.NotEqual(t, uuid.Nil, first.Run.RunID, "the run is recorded before the fan-out")
	require.Equal(t, 0, b.pending(t))

	// A retry while the failed trigger's fan-out lease still holds gets the run, unfinished.
	again, err := ops.Trigger(ctx, b.st, b.enq, req)
	require.NoError(t, err)
	require.True(t, again.Replayed)
	require.Equal(t, first.Run.RunID, again.Run.RunID)
	require.Equal(t, runstate.StatusPending, again.Run.Status)
	require.Equal(t, 0, b.pending(t))
	// Once the lease lapsed (FanoutLeaseDefault), a retry finishes the fan-out itself.
	_, err = b.st.Pool().Exec(ctx, `UPDATE dw_etl_runs SET fanout_until = now() - interval '1 second' WHERE run_id = $1`, first.Run.RunID)
	require.NoError(t, err)
	again, err = ops.Trigger(ctx, b.st, b.enq, req)
	require.NoError(t, err)
	require.True(t, again.Replayed)
	require.Equal(t, first.Run.RunID, again.Run.RunID)
	require.Equal(t, 2, again.Enqueued, "the retry finishes the fan-out")
	require.Equal(t, runstate.StatusRunning, again.Run.Status)
	require.Equal(t, 2, b.pending(t))
	require.Equal(t, 1, b.runCount(t))

	// Same key, other params: refused, nothing created.
	_, err = ops.Trigger(ctx, b.st, b.enq, ops.TriggerRequest{JobID: "regions", Params: twoRegions[:1], IdempotencyKey: req.IdempotencyKey})
	require.ErrorIs(t, err, ops.ErrKeyReused)
	require.Equal(t, 1, b.runCount(t))

	// Racing requests with one new key create one run.
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ids = map[uuid.UUID]int{}
	)
	for range 6 {
		wg.Go(func() {
			res, err := ops.Trigger(ctx, b.st, b.enq, ops.TriggerRequest{JobID: "regions", Params: twoRegions, IdempotencyKey: "race"})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			ids[res.Run.RunID]++
			mu.Unlock()
		})
	}
	wg.Wait()
	require.Len(t, ids, 1, "one run for one key: %v", ids)
	require.Equal(t, 2, b.runCount(t))

	// Without a key every trigger is a new run.
	_, err = ops.Trigger(ctx, b.st, b.enq, ops.TriggerRequest{JobID: "regions", Params: twoRegions})
	require.NoError(t, err)
	require.Equal(t, 3, b.runCount(t))
}

func TestPauseRefusesNewWork(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	keyed := ops.TriggerRequest{JobID: "regions", Params: twoRegions, IdempotencyKey: "before-pause"}
	res, err := ops.Trigger(ctx, b.st, b.enq, keyed)
	require.NoError(t, err)
	_, err = ops.Cancel(ctx, b.st, b.enq.Dispatcher(), res.Run.RunID, "test", "to rerun it")
	require.NoError(t, err)

	c, err := ops.PauseJob(ctx, b.st, "regions", "alice", "source migration")
	require.NoError(t, err)
	again, err := ops.Trigger(ctx, b.st, b.enq, keyed)
	require.NoError(t, err, "a retry of a request made before the pause gets its run")
	require.True(t, again.Replayed)
	require.Equal(t, res.Run.RunID, again.Run.RunID)
	require.NoError(t, err)
	require.True(t, c.Paused)
	_, err = ops.Trigger(ctx, b.st, b.enq, ops.TriggerRequest{JobID: "regions", Params: twoRegions})
	require.ErrorIs(t, err, ops.ErrJobPaused)
	require.ErrorContains(t, err, "paused by alice")
	require.ErrorContains(t, err, "source migration")
	require.ErrorContains(t, err, "enqueuer jobs resume regions")
	_, err = ops.Rerun(ctx, b.st, b.enq, res.Run.RunID, store.RerunFilter{}, false)
	require.ErrorIs(t, err, ops.ErrJobPaused)
	_, err = ops.Rerun(ctx, b.st, b.enq, res.Run.RunID, store.RerunFilter{}, true)
	require.NoError(t, err, "a preview changes nothing and stays allowed")
	require.Equal(t, 1, b.runCount(t))

	c, err = ops.ResumeJob(ctx, b.st, "regions")
	require.NoError(t, err)
	require.False(t, c.Paused)
	require.NotNil(t, c.ResumedAt)
	_, err = ops.Trigger(ctx, b.st, b.enq, ops.TriggerRequest{JobID: "regions", Params: twoRegions})
	require.NoError(t, err)

	_, err = ops.PauseJob(ctx, b.st, "nope", "alice", "")
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = ops.Trigger(ctx, b.st, b.enq, ops.TriggerRequest{JobID: "nope"})
	require.ErrorIs(t, err, enqueue.ErrUnknownJob)
}

func TestDeleteJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	res, err := ops.Trigger(ctx, b.st, b.enq, ops.TriggerRequest{JobID: "regions", Params: twoRegions})
	require.NoError(t, err)

	_, err = ops.DeleteJob(ctx, b.st, "regions", true, false, "test")
	require.ErrorIs(t, err, ops.ErrJobActive, "a running run blocks even --with-history")
	_, err = ops.Cancel(ctx, b.st, b.enq.Dispatcher(), res.Run.RunID, "test", "")
	require.NoError(t, err)
	for range 2 {
		_, err = ops.Trigger(ctx, b.st, b.enq, ops.TriggerRequest{JobID: "regions", Params: twoRegions})
		require.NoError(t, err)
	}
	_, err = b.st.Pool().Exec(ctx, `UPDATE dw_etl_runs SET status = 'SUCCESS', ended_at = now() WHERE job_id = 'regions'`)
	require.NoError(t, err)

	pre, err := ops.DeleteJob(ctx, b.st, "regions", true, true, "test")
	require.NoError(t, err)
	require.Equal(t, store.JobHistory{JobID: "regions", Runs: 3, Items: 6}, pre.History)
	require.False(t, pre.Deleted)
	require.Equal(t, 3, b.runCount(t), "preview deletes nothing")

	_, err = ops.DeleteJob(ctx, b.st, "regions", false, false, "test")
	require.ErrorIs(t, err, store.ErrJobHasRuns)
	require.ErrorContains(t, err, "--with-history")

	done, err := ops.DeleteJob(ctx, b.st, "regions", true, false, "test")
	require.NoError(t, err)
	require.True(t, done.Deleted)
	require.Equal(t, 0, b.runCount(t))
	var items int
	require.NoError(t, b.st.Pool().QueryRow(ctx, `SELECT count(*) FROM dw_etl_run_items`).Scan(&items))
	require.Zero(t, items)
	_, err = b.st.GetJob(ctx, "regions")
	require.True(t, errors.Is(err, store.ErrNotFound))
}
