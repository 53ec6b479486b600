package reconcile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/reconcile"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/task"
	"github.com/etlexec/etlexec/internal/testfactory"
	"github.com/etlexec/etlexec/internal/worker"
)

type bundle struct {
	st    *store.Store
	enq   *enqueue.Enqueuer
	insp  *asynq.Inspector
	rdb   redis.UniversalClient
	redis asynq.RedisConnOpt
	queue string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	st := dbtest.Store(t)
	q := redistest.Queue(t)
	opt := redistest.ConnOpt(t)
	insp := asynq.NewInspector(opt)
	t.Cleanup(func() { insp.Close() })
	rdb := opt.MakeRedisClient().(redis.UniversalClient)
	t.Cleanup(func() { rdb.Close() })
	enq, err := enqueue.New(enqueue.Config{Store: st, Redis: opt, Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { enq.Close() })
	return &bundle{st: st, enq: enq, insp: insp, rdb: rdb, redis: opt, queue: q}
}

// job defines a job delivered through the test's queue.
func (b *bundle) job(t *testing.T, id string, maxAttempts int32, runTimeout time.Duration) {
	t.Helper()
	opts := &testfactory.JobOpts{ID: &id, Queue: &b.queue, MaxAttempts: &maxAttempts}
	if runTimeout > 0 {
		opts.RunTimeout = &runTimeout
	}
	testfactory.Job(t.Context(), t, b.st, opts)
}

func (b *bundle) reconciler(t *testing.T) *reconcile.Reconciler {
	t.Helper()
	r, err := reconcile.New(reconcile.Config{Store: b.st, Redis: b.redis, Lease: 2 * time.Second,
		Interval: 20 * time.Millisecond, TimeoutGrace: 100 * time.Millisecond, Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r
}

// trigger starts a run of n items through the enqueuer: tasks pending in the test's queue.
func (b *bundle) trigger(t *testing.T, jobID string, n int) store.Run {
	t.Helper()
	sets := make([]json.RawMessage, n)
	for i := range sets {
		sets[i] = json.RawMessage(fmt.Sprintf(`{"n":%d}`, i+1))
	}
	res, err := b.enq.Trigger(t.Context(), enqueue.Request{JobID: jobID, Params: sets})
	require.NoError(t, err)
	require.Equal(t, n, res.Enqueued)
	return res.Run
}

func (b *bundle) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	_, err := b.st.Pool().Exec(t.Context(), sql, args...)
	require.NoError(t, err, sql)
}

// taskState is the state of an item's task of a generation in Redis ("" when absent).
func (b *bundle) taskState(t *testing.T, runID uuid.UUID, itemNo, gen int32) string {
	t.Helper()
	info, err := b.insp.GetTaskInfo(b.queue, task.Item{RunID: runID, ItemNo: itemNo, Generation: gen}.ID())
	if err != nil {
		return ""
	}
	return info.State.String()
}

// wipeQueue deletes every Redis key of the test's queue, the epoch marker included: what a
// FLUSHALL or a restart without persistence does to it.
func (b *bundle) wipeQueue(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	for _, pat := range []string{"asynq:{" + b.queue + "}:*", "etlexec:{" + b.queue + "}:*"} {
		keys, err := b.rdb.Keys(ctx, pat).Result()
		require.NoError(t, err)
		if len(keys) > 0 {
			require.NoError(t, b.rdb.Del(ctx, keys...).Err())
		}
	}
}

// deadWorker registers a worker process whose lease runs out at once and claims items under it.
func (b *bundle) deadWorker(t *testing.T, runID uuid.UUID, nos ...int32) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	w := testfactory.Worker(t.Context(), t, b.st, &testfactory.WorkerOpts{ID: &id, Name: new("doomed"),
		Lease: new(time.Millisecond), AppName: new(worker.AppName(id)), Shard: new(int16(3))})
	reqs := make([]store.ClaimRequest, len(nos))
	for i, no := range nos {
		reqs[i] = store.ClaimRequest{RunID: runID, ItemNo: no, AttemptID: uuid.Must(uuid.NewV7())}
	}
	cs, err := b.st.ClaimItems(t.Context(), w, false, reqs)
	require.NoError(t, err)
	for _, c := range cs {
		require.True(t, c.Claimed)
	}
	return id
}

func TestDeadWorker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 1, 0)
	run := b.trigger(t, "j", 3)
	id := b.deadWorker(t, run.RunID, 1, 2)
	// The dead worker left a session idle in a transaction that holds item 1's row lock, as a
	// frozen process would: the takeover must not wait for it.
	pcfg, err := pgxpool.ParseConfig(b.st.Pool().Config().ConnString())
	require.NoError(t, err)
	pcfg.ConnConfig.RuntimeParams["application_name"] = worker.AppName(id)
	frozen, err := pgxpool.NewWithConfig(t.Context(), pcfg)
	require.NoError(t, err)
	defer frozen.Close()
	tx, err := frozen.Begin(t.Context())
	require.NoError(t, err)
	_, err = tx.Exec(t.Context(), `SELECT 1 FROM dw_etl_run_items WHERE run_id = $1 AND item_no = 1 FOR UPDATE`, run.RunID)
	require.NoError(t, err)

	r := b.reconciler(t)
	var rep reconcile.Report
	require.Eventually(t, func() bool { // SKIP LOCKED skips item 1 until its session is gone
		got, err := r.Once(t.Context())
		require.NoError(t, err)
		rep.WorkersDead += got.WorkersDead
		rep.SessionsEnded += got.SessionsEnded
		rep.AttemptsLost += got.AttemptsLost
		rep.ItemsRetried += got.ItemsRetried
		return rep.AttemptsLost == 2
	}, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, 1, rep.WorkersDead)
	require.GreaterOrEqual(t, rep.SessionsEnded, 1, "the frozen session was ended")
	require.Equal(t, 2, rep.ItemsRetried, "lost attempts do not count against max_attempts 1")
	require.Error(t, tx.Commit(context.Background()), "a late commit of the dead worker's session fails")

	for _, no := range []int32{1, 2} {
		require.Equal(t, "pending", b.taskState(t, run.RunID, no, 1), "item %d has a task of its new generation", no)
	}
	var msgs []string
	rows, err := b.st.Pool().Query(t.Context(), `SELECT error_message FROM dw_etl_run_attempts WHERE run_id = $1 ORDER BY item_no`, run.RunID)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var m string
		require.NoError(t, rows.Scan(&m))
		msgs = append(msgs, m)
	}
	require.Equal(t, []string{runstate.MsgWorkerLost, runstate.MsgWorkerLost}, msgs)
	again, err := r.Once(t.Context())
	require.NoError(t, err)
	require.Zero(t, again.AttemptsLost, "a pass that finds nothing does nothing")
}

func TestRedisLostTheQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 3, 0)
	run := b.trigger(t, "j", 5)
	r := b.reconciler(t)
	rep, err := r.Once(t.Context())
	require.NoError(t, err)
	require.Zero(t, rep.QueuesRepaired, "the enqueuer marked the queue: nothing is lost")
	require.Zero(t, rep.TasksEnqueued+rep.TasksPresent, "a quiet pass makes no per-item Redis call")

	b.wipeQueue(t)
	rep, err = r.Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, rep.QueuesRepaired)
	require.Equal(t, 5, rep.TasksEnqueued)
	for no := int32(1); no <= 5; no++ {
		require.Equal(t, "pending", b.taskState(t, run.RunID, no, 0))
	}
	rep, err = r.Once(t.Context())
	require.NoError(t, err)
	require.Zero(t, rep.QueuesRepaired)
}

func TestEvictedTasksAreRebuilt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 3, 0)
	run := b.trigger(t, "j", 4)
	r := b.reconciler(t)
	_, err := r.Once(t.Context())
	require.NoError(t, err)
	// Eviction takes two tasks (keys) but leaves the epoch marker.
	for _, no := range []int32{2, 3} {
		id := task.Item{RunID: run.RunID, ItemNo: no}.ID()
		require.NoError(t, b.rdb.Del(t.Context(), "asynq:{"+b.queue+"}:t:"+id).Err())
		require.NoError(t, b.rdb.LRem(t.Context(), "asynq:{"+b.queue+"}:pending", 0, id).Err())
	}
	rep, err := r.Once(t.Context())
	require.NoError(t, err)
	require.Zero(t, rep.QueuesRepaired, "one short pass may be tasks on their way")
	rep, err = r.Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, rep.QueuesRepaired, "a deficit across two passes rebuilds the queue")
	for no := int32(1); no <= 4; no++ {
		require.Equal(t, "pending", b.taskState(t, run.RunID, no, 1), "item %d rebuilt under a new generation", no)
	}
}

func TestEnqueuerDiedMidFanOut(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 3, 0)
	// What a trigger that died mid fan-out leaves: items written, enqueued_at unset.
	runID := testfactory.Run(t.Context(), t, b.st, &testfactory.RunOpts{JobID: "j", Items: 2, NotEnqueued: true}).RunID
	r := b.reconciler(t)
	rep, err := r.Once(t.Context())
	require.NoError(t, err)
	require.Zero(t, rep.RunsEnqueued, "a run whose fan-out lease is live is being triggered: left alone")

	b.exec(t, `UPDATE dw_etl_runs SET fanout_until = now() - interval '1 second' WHERE run_id = $1`, runID)
	rep, err = r.Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, rep.RunsEnqueued)
	require.Equal(t, "pending", b.taskState(t, runID, 1, 0))
	require.Equal(t, "pending", b.taskState(t, runID, 2, 0))
	got, err := b.st.GetRun(t.Context(), runID)
	require.NoError(t, err)
	require.Equal(t, runstate.StatusRunning, got.Status)
	require.NotNil(t, got.EnqueuedAt)
}

func TestRunTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 3, time.Second)
	run := b.trigger(t, "j", 3)
	// Item 1 is claimed by a worker that stays alive but never records (ignores its deadline).
	live := testfactory.Worker(t.Context(), t, b.st, &testfactory.WorkerOpts{Name: new("live"), Lease: new(time.Hour), Shard: new(int16(2))})
	cs, err := b.st.ClaimItems(t.Context(), live, false,
		[]store.ClaimRequest{{RunID: run.RunID, ItemNo: 1, AttemptID: uuid.Must(uuid.NewV7())}})
	require.NoError(t, err)
	require.True(t, cs[0].Claimed)
	require.NotNil(t, cs[0].Deadline, "the claim tells the worker the run's deadline")

	r := b.reconciler(t)
	require.Eventually(t, func() bool {
		_, err := r.Once(t.Context())
		require.NoError(t, err)
		got, err := b.st.GetRun(t.Context(), run.RunID)
		require.NoError(t, err)
		return got.Status != "RUNNING"
	}, 10*time.Second, 50*time.Millisecond)
	got, err := b.st.GetRun(t.Context(), run.RunID)
	require.NoError(t, err)
	require.Equal(t, runstate.StatusFailed, got.Status, "a run past its run_timeout fails, as docs/state-machine.md says")
	require.Contains(t, *got.ErrorMessage, "run timeout")
	require.EqualValues(t, 3, got.ItemsFailed)
	var ended string
	require.NoError(t, b.st.Pool().QueryRow(t.Context(), `SELECT ended_by FROM dw_etl_run_attempts WHERE run_id = $1`, run.RunID).Scan(&ended))
	require.Equal(t, store.EndedByTimeout, ended)
}

func TestActiveTaskWithoutLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 3, 0)
	run := b.trigger(t, "j", 2)
	ctx := t.Context()
	// Reproduce asynq #1144's state for item 1: dequeued to active, but no lease entry, so
	// nothing would ever recover it. Item 2's task is active for the same reason but its item
	// already succeeded.
	for _, no := range []int32{1, 2} {
		id := task.Item{RunID: run.RunID, ItemNo: no}.ID()
		require.NoError(t, b.rdb.LRem(ctx, "asynq:{"+b.queue+"}:pending", 0, id).Err())
		require.NoError(t, b.rdb.LPush(ctx, "asynq:{"+b.queue+"}:active", id).Err())
		require.NoError(t, b.rdb.HSet(ctx, "asynq:{"+b.queue+"}:t:"+id, "state", "active").Err())
	}
	settled, err := b.st.SettleItems(ctx, 1, run.RunID, []int32{2}, runstate.StatusSkipped, etl.CategoryNone, "test")
	require.NoError(t, err)
	require.Len(t, settled, 1)
	require.Equal(t, "active", b.taskState(t, run.RunID, 1, 0))

	r := b.reconciler(t)
	rep, err := r.Once(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, rep.TasksReplaced)
	require.Empty(t, b.taskState(t, run.RunID, 1, 0), "the stuck task is gone")
	require.Empty(t, b.taskState(t, run.RunID, 2, 0), "the settled item's stuck task is gone")
	require.Equal(t, "pending", b.taskState(t, run.RunID, 1, 1), "the waiting item has a task again")
}

func TestUnfinalisedRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 3, 0)
	run := b.trigger(t, "j", 2)
	_, err := b.st.SettleItems(t.Context(), 4, run.RunID, []int32{1, 2}, runstate.StatusSkipped, etl.CategoryNone, "nothing to do")
	require.NoError(t, err)
	rep, err := b.reconciler(t).Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, rep.RunsFinalised)
	got, err := b.st.GetRun(t.Context(), run.RunID)
	require.NoError(t, err)
	require.Equal(t, runstate.StatusSuccess, got.Status)
}

func TestLeadership(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r1, r2 := b.reconciler(t), b.reconciler(t)
	_, err := r1.Once(t.Context())
	require.NoError(t, err)
	require.True(t, r1.Leader())
	_, err = r2.Once(t.Context())
	require.ErrorIs(t, err, reconcile.ErrNotLeader)
	require.False(t, r2.Leader())
	_, err = r1.Once(t.Context())
	require.NoError(t, err, "the leader stays the leader")
	require.NoError(t, r1.Close())
	_, err = r2.Once(t.Context())
	require.NoError(t, err, "leadership passes on when the leader goes")
	require.True(t, r2.Leader())
}

// A leader that stops renewing (frozen) stops acting by its own clock, and another reconciler
// takes over within the lease.
func TestFrozenLeaderIsReplaced(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r1, r2 := b.reconciler(t), b.reconciler(t)
	_, err := r1.Once(t.Context())
	require.NoError(t, err)
	start := time.Now()
	require.Eventually(t, func() bool {
		_, err := r2.Once(t.Context())
		return err == nil
	}, 10*time.Second, 50*time.Millisecond)
	took := time.Since(start)
	require.Less(t, took, 2*2*time.Second, "replaced within 2 × lease")
	require.False(t, r1.Leader(), "the frozen leader knows it lost the lease")
	t.Logf("frozen leader replaced after %s (lease 2s)", took.Round(10*time.Millisecond))
}

// TestRecoversLostRedisEndToEnd loses every task of a run and a worker with an attempt, then
// lets a real worker and the reconciler's loop bring the run to SUCCESS.
func TestRecoversLostRedisEndToEnd(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 1, 0)
	run := b.trigger(t, "j", 5)
	b.deadWorker(t, run.RunID, 1) // a worker took item 1, then died
	b.wipeQueue(t)                // and Redis lost everything

	reg := etl.NewRegistry()
	reg.Register("test", func(context.Context, *etl.Item) error { return nil })
	w, err := worker.New(worker.Config{Store: b.st, Redis: b.redis, Registry: reg, Queues: []string{b.queue},
		Lease: 5 * time.Second, ShutdownTimeout: time.Second, Logger: zerolog.Nop()})
	require.NoError(t, err)
	r := b.reconciler(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 2)
	go func() { done <- w.Run(ctx) }()
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
		require.NoError(t, <-done)
	}()
	require.Eventually(t, func() bool {
		got, err := b.st.GetRun(t.Context(), run.RunID)
		return err == nil && got.Status == "SUCCESS"
	}, 30*time.Second, 20*time.Millisecond)
	var attempts []string
	rows, err := b.st.Pool().Query(t.Context(), `SELECT status || coalesce('/' || error_message, '') FROM dw_etl_run_attempts
		WHERE run_id = $1 AND item_no = 1 ORDER BY attempt_no`, run.RunID)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		attempts = append(attempts, s)
	}
	require.Equal(t, []string{"FAILED/" + runstate.MsgWorkerLost, "SUCCESS"}, attempts)
	var total int
	require.NoError(t, b.st.Pool().QueryRow(t.Context(), `SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1`, run.RunID).Scan(&total))
	require.Equal(t, 6, total, "one attempt per item, plus the lost one")
}

// A rerun whose fan-out never happened (its enqueue failed, or its process died) is finished
// by the reconciler once the rerun's fan-out lease lapsed: it does not stay RUNNING for ever.
func TestRerunWhoseFanOutFailed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 1, 0)
	run := b.trigger(t, "j", 2)
	_, err := b.st.SettleItems(t.Context(), 1, run.RunID, []int32{1, 2}, runstate.StatusFailed, etl.CategoryAPI, "down")
	require.NoError(t, err)
	r := b.reconciler(t)
	_, err = r.Once(t.Context())
	require.NoError(t, err)
	got, err := b.st.GetRun(t.Context(), run.RunID)
	require.NoError(t, err)
	require.Equal(t, runstate.StatusFailed, got.Status)

	reopened, err := b.st.ReopenForRerun(t.Context(), run.RunID, []int32{1, 2}, 1) // ... and the enqueue never comes
	require.NoError(t, err)
	require.Len(t, reopened, 2)
	b.exec(t, `UPDATE dw_etl_runs SET fanout_until = now() - interval '1 second' WHERE run_id = $1`, run.RunID)
	rep, err := r.Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, rep.RunsEnqueued)
	for _, it := range reopened {
		require.Equal(t, "pending", b.taskState(t, run.RunID, it.ItemNo, it.Generation))
	}
}
