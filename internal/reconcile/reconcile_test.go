package reconcile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/reconcile"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/task"
	"github.com/etlexec/etlexec/internal/worker"
)

type bundle struct {
	st    *store.Store
	enq   *enqueue.Enqueuer
	insp  *asynq.Inspector
	redis asynq.RedisConnOpt
	queue string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	st := dbtest.Store(t)
	q := redistest.Queue(t)
	opt := redistest.ConnOpt(t)
	client := asynq.NewClient(opt)
	t.Cleanup(func() { client.Close() })
	insp := asynq.NewInspector(opt)
	t.Cleanup(func() { insp.Close() })
	enq, err := enqueue.New(enqueue.Config{Store: st, Client: client, Logger: zerolog.Nop()})
	require.NoError(t, err)
	return &bundle{st: st, enq: enq, insp: insp, redis: opt, queue: q}
}

// job defines a job delivered through the test's queue.
func (b *bundle) job(t *testing.T, id string, maxAttempts int32, runTimeout time.Duration) {
	t.Helper()
	var rt *int64
	if runTimeout > 0 {
		ms := runTimeout.Milliseconds()
		rt = &ms
	}
	_, err := b.st.UpsertJobs(t.Context(), []store.UpsertJob{{
		JobID: id, Kind: "test", SupportsParams: true, Strategy: "none", CursorPolicy: "run",
		Config: json.RawMessage(`{}`), OverlapPolicy: "allow", Queue: b.queue, MaxAttempts: maxAttempts,
		TimeoutMs: 10000, RunTimeoutMs: rt, RetentionMs: 60000, Enabled: true,
	}})
	require.NoError(t, err)
}

func (b *bundle) reconciler(t *testing.T) *reconcile.Reconciler {
	t.Helper()
	r, err := reconcile.New(reconcile.Config{
		Store: b.st, Redis: b.redis, Lease: 5 * time.Second, Grace: time.Nanosecond,
		Interval: 20 * time.Millisecond, Logger: zerolog.Nop(),
	})
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

func (b *bundle) taskIDs(t *testing.T, runID uuid.UUID) []string {
	t.Helper()
	rows, err := b.st.Pool().Query(t.Context(), `SELECT task_id FROM dw_etl_run_items WHERE run_id = $1 ORDER BY item_no`, runID)
	require.NoError(t, err)
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	return ids
}

func (b *bundle) requireTaskState(t *testing.T, id string, want asynq.TaskState) {
	t.Helper()
	info, err := b.insp.GetTaskInfo(b.queue, id)
	require.NoError(t, err, "task %s", id)
	require.Equal(t, want, info.State, "task %s", id)
}

func (b *bundle) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	_, err := b.st.Pool().Exec(t.Context(), sql, args...)
	require.NoError(t, err, sql)
}

func (b *bundle) claim(t *testing.T, runID uuid.UUID, itemNo, maxAttempts int32) (uuid.UUID, store.Claim) {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	c, err := b.st.ClaimItem(t.Context(), store.ClaimRequest{
		RunID: runID, ItemNo: itemNo, AttemptID: id, MaxAttempts: maxAttempts, Lease: 5 * time.Second, WorkerID: "w-test",
	})
	require.NoError(t, err)
	return id, c
}

type itemRow struct {
	Status, Category string
	Message          *string
	Attempts         int32
	Current          *uuid.UUID
}

func (b *bundle) item(t *testing.T, runID uuid.UUID, itemNo int32) itemRow {
	t.Helper()
	var r itemRow
	require.NoError(t, b.st.Pool().QueryRow(t.Context(), `SELECT status, error_category, error_message, attempts, current_attempt_id
		FROM dw_etl_run_items WHERE run_id = $1 AND item_no = $2`, runID, itemNo).
		Scan(&r.Status, &r.Category, &r.Message, &r.Attempts, &r.Current))
	return r
}

func (b *bundle) attempt(t *testing.T, id uuid.UUID) (status, category, message string) {
	t.Helper()
	var msg *string
	require.NoError(t, b.st.Pool().QueryRow(t.Context(), `SELECT status, error_category, error_message
		FROM dw_etl_run_attempts WHERE attempt_id = $1`, id).Scan(&status, &category, &msg))
	if msg != nil {
		message = *msg
	}
	return status, category, message
}

// workerFinish is what a worker records when its attempt ends in success.
func workerFinish(runID uuid.UUID, itemNo, itemCount int32, attemptID uuid.UUID) store.AttemptEnd {
	return store.AttemptEnd{RunID: runID, ItemNo: itemNo, ItemCount: itemCount, AttemptID: attemptID,
		AttemptStatus: "SUCCESS", ItemStatus: "SUCCESS", Terminal: true, ErrorCategory: "NONE"}
}

func TestMissingTasks(t *testing.T) {
	t.Parallel()

	t.Run("DeletedTasksAreReenqueued", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.job(t, "j", 3, 0)
		run := b.trigger(t, "j", 3)
		type delivery struct {
			Type, Payload      string
			MaxRetry           int
			Timeout, Retention time.Duration
		}
		deliveries := func() []delivery {
			var out []delivery
			for _, id := range b.taskIDs(t, run.RunID) {
				info, err := b.insp.GetTaskInfo(b.queue, id)
				require.NoError(t, err)
				require.Equal(t, asynq.TaskStatePending, info.State)
				out = append(out, delivery{info.Type, string(info.Payload), info.MaxRetry, info.Timeout, info.Retention})
			}
			return out
		}
		original := deliveries()
		n, err := b.insp.DeleteAllPendingTasks(b.queue)
		require.NoError(t, err)
		require.Equal(t, 3, n)

		r := b.reconciler(t)
		rep, err := r.Once(t.Context())
		require.NoError(t, err)
		require.Equal(t, reconcile.Report{TasksChecked: 3, TasksMissing: 3}, rep)
		require.Equal(t, original, deliveries(), "rebuilt tasks are the enqueuer's, option for option")

		rep, err = r.Once(t.Context())
		require.NoError(t, err)
		require.Equal(t, reconcile.Report{TasksChecked: 3}, rep, "a second pass finds everything in place")
	})

	t.Run("QueueGoneWithRedisData", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.job(t, "j", 3, 0)
		run := b.trigger(t, "j", 2)
		require.NoError(t, b.insp.DeleteQueue(b.queue, true))

		rep, err := b.reconciler(t).Once(t.Context())
		require.NoError(t, err)
		require.Equal(t, 2, rep.TasksMissing)
		for _, id := range b.taskIDs(t, run.RunID) {
			b.requireTaskState(t, id, asynq.TaskStatePending)
		}
	})

	t.Run("ArchivedTaskOfPendingItemIsReplaced", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.job(t, "j", 3, 0)
		run := b.trigger(t, "j", 2)
		ids := b.taskIDs(t, run.RunID)
		require.NoError(t, b.insp.ArchiveTask(b.queue, ids[0]))

		rep, err := b.reconciler(t).Once(t.Context())
		require.NoError(t, err)
		require.Equal(t, reconcile.Report{TasksChecked: 2, TasksReplaced: 1}, rep)
		b.requireTaskState(t, ids[0], asynq.TaskStatePending)
		b.requireTaskState(t, ids[1], asynq.TaskStatePending)
	})

	t.Run("TerminalItemsAreNotChecked", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.job(t, "j", 3, 0)
		run := b.trigger(t, "j", 2)
		_, err := b.insp.DeleteAllPendingTasks(b.queue)
		require.NoError(t, err)
		attemptID, _ := b.claim(t, run.RunID, 1, 3)
		_, err = b.st.FinishAttempt(t.Context(), workerFinish(run.RunID, 1, 2, attemptID))
		require.NoError(t, err)

		rep, err := b.reconciler(t).Once(t.Context())
		require.NoError(t, err)
		require.Equal(t, reconcile.Report{TasksChecked: 1, TasksMissing: 1}, rep)
		_, err = b.insp.GetTaskInfo(b.queue, b.taskIDs(t, run.RunID)[0])
		require.ErrorIs(t, err, asynq.ErrTaskNotFound)
	})

	t.Run("YoungRunsAreLeftToTheirEnqueuer", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.job(t, "j", 3, 0)
		b.trigger(t, "j", 2)
		_, err := b.insp.DeleteAllPendingTasks(b.queue)
		require.NoError(t, err)
		r, err := reconcile.New(reconcile.Config{Store: b.st, Redis: b.redis, Grace: time.Hour, Logger: zerolog.Nop()})
		require.NoError(t, err)
		t.Cleanup(func() { r.Close() })
		rep, err := r.Once(t.Context())
		require.NoError(t, err)
		require.Equal(t, reconcile.Report{}, rep)
	})
}

func TestEnqueuerDiedBeforeFanOut(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 3, 0)
	runID := uuid.Must(uuid.NewV7())
	items := []store.NewItem{
		{Params: json.RawMessage(`{"n":1}`), ParamHash: "h1", TaskID: task.ItemID(runID, "h1", 0)},
		{Params: json.RawMessage(`{"n":2}`), ParamHash: "h2", TaskID: task.ItemID(runID, "h2", 0)},
	}
	_, _, err := b.st.CreateRun(t.Context(), store.NewRun{RunID: runID, JobID: "j", Trigger: "manual", Strategy: "none"}, items, 0)
	require.NoError(t, err)

	rep, err := b.reconciler(t).Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, reconcile.Report{RunsEnqueued: 1, TasksEnqueued: 2, TasksChecked: 2}, rep)
	run, err := b.st.GetRun(t.Context(), runID)
	require.NoError(t, err)
	require.NotNil(t, run.EnqueuedAt)
	require.Equal(t, "RUNNING", run.Status)
	for _, it := range items {
		b.requireTaskState(t, it.TaskID, asynq.TaskStatePending)
	}
}

func TestLostWorker(t *testing.T) {
	t.Parallel()

	backdate := func(b *bundle, runID uuid.UUID) {
		b.exec(t, `UPDATE dw_etl_run_items SET heartbeat_at = now() - interval '1 hour' WHERE run_id = $1 AND status = 'RUNNING'`, runID)
		b.exec(t, `UPDATE dw_etl_run_attempts SET heartbeat_at = now() - interval '1 hour' WHERE run_id = $1 AND status = 'RUNNING'`, runID)
	}

	t.Run("AttemptsRemain", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.job(t, "j", 3, 0)
		run := b.trigger(t, "j", 2)
		lostID, first := b.claim(t, run.RunID, 1, 3)
		backdate(b, run.RunID)

		rep, err := b.reconciler(t).Once(t.Context())
		require.NoError(t, err)
		require.Equal(t, reconcile.Report{AttemptsLost: 1, ItemsRetried: 1, TasksChecked: 2}, rep)
		status, cat, msg := b.attempt(t, lostID)
		require.Equal(t, []string{"FAILED", "SYSTEM", reconcile.MsgWorkerLost}, []string{status, cat, msg})
		it := b.item(t, run.RunID, 1)
		require.Equal(t, "PENDING", it.Status)
		require.EqualValues(t, 1, it.Attempts)
		require.Nil(t, it.Current)

		// The lost worker comes back and tries to record its end: it no longer holds the item.
		require.ErrorIs(t, second(b.st.FinishAttempt(t.Context(), workerFinish(run.RunID, 1, 2, lostID))), store.ErrLostClaim)
		// The retry policy continues: the next claim is the item's second attempt.
		_, second := b.claim(t, run.RunID, 1, 3)
		require.EqualValues(t, 2, second.ItemAttempt)
		require.Greater(t, second.AttemptNo, first.AttemptNo)
		require.Zero(t, second.LostAttempts, "the reconciler already closed the lost attempt")
	})

	t.Run("TaskGoneIsReenqueued", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.job(t, "j", 3, 0)
		run := b.trigger(t, "j", 1)
		b.claim(t, run.RunID, 1, 3)
		backdate(b, run.RunID)
		_, err := b.insp.DeleteAllPendingTasks(b.queue)
		require.NoError(t, err)

		rep, err := b.reconciler(t).Once(t.Context())
		require.NoError(t, err)
		require.Equal(t, reconcile.Report{AttemptsLost: 1, ItemsRetried: 1, TasksChecked: 1, TasksMissing: 1}, rep)
		b.requireTaskState(t, b.taskIDs(t, run.RunID)[0], asynq.TaskStatePending)
	})

	t.Run("OutOfAttemptsFailsAndFinalises", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.job(t, "j", 1, 0)
		run := b.trigger(t, "j", 1)
		lostID, _ := b.claim(t, run.RunID, 1, 1)
		backdate(b, run.RunID)

		rep, err := b.reconciler(t).Once(t.Context())
		require.NoError(t, err)
		require.Equal(t, reconcile.Report{AttemptsLost: 1, ItemsFailed: 1, RunsFinalised: 1}, rep)
		status, _, _ := b.attempt(t, lostID)
		require.Equal(t, "FAILED", status)
		it := b.item(t, run.RunID, 1)
		require.Equal(t, "FAILED", it.Status)
		require.Equal(t, reconcile.MsgWorkerLost, *it.Message)
		done, err := b.st.RunComplete(t.Context(), run.RunID)
		require.NoError(t, err)
		require.True(t, done, "the failure is counted in the progress shards")
		got, err := b.st.GetRun(t.Context(), run.RunID)
		require.NoError(t, err)
		require.Equal(t, "FAILED", got.Status)
		require.Equal(t, "SYSTEM", got.ErrorCategory)
	})

	t.Run("LiveWorkerFinishWins", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.job(t, "j", 3, 0)
		run := b.trigger(t, "j", 1)
		attemptID, _ := b.claim(t, run.RunID, 1, 3)
		backdate(b, run.RunID)
		r := b.reconciler(t)
		// The worker is recording its end (holding the item's row) while the reconciler passes.
		err := b.st.InTx(t.Context(), func(tx *store.Tx) error {
			if _, err := tx.FinishAttempt(t.Context(), workerFinish(run.RunID, 1, 1, attemptID)); err != nil {
				return err
			}
			rep, err := r.Once(t.Context())
			require.NoError(t, err)
			require.Zero(t, rep.AttemptsLost)
			return nil
		})
		require.NoError(t, err)
		require.Equal(t, "SUCCESS", b.item(t, run.RunID, 1).Status)
		status, _, _ := b.attempt(t, attemptID)
		require.Equal(t, "SUCCESS", status)
		rep, err := r.Once(t.Context())
		require.NoError(t, err)
		require.Equal(t, reconcile.Report{RunsFinalised: 1}, rep)
	})

	t.Run("FreshHeartbeatIsLeftAlone", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.job(t, "j", 3, 0)
		run := b.trigger(t, "j", 1)
		b.claim(t, run.RunID, 1, 3)
		rep, err := b.reconciler(t).Once(t.Context())
		require.NoError(t, err)
		require.Equal(t, reconcile.Report{}, rep)
		require.Equal(t, "RUNNING", b.item(t, run.RunID, 1).Status)
	})

	t.Run("PendingOutOfAttemptsFails", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.job(t, "j", 3, 0)
		run := b.trigger(t, "j", 1)
		b.exec(t, `UPDATE dw_etl_run_items SET attempts = 3 WHERE run_id = $1`, run.RunID)
		rep, err := b.reconciler(t).Once(t.Context())
		require.NoError(t, err)
		require.Equal(t, reconcile.Report{ItemsFailed: 1, RunsFinalised: 1}, rep)
	})

	t.Run("RerunRaisedAttemptLimit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.job(t, "j", 1, 0)
		run := b.trigger(t, "j", 1)
		// A rerun granted max_attempts more to an item that had used its one attempt.
		b.exec(t, `UPDATE dw_etl_run_items SET attempts = 1, attempt_limit = 2 WHERE run_id = $1`, run.RunID)
		lostID, _ := b.claim(t, run.RunID, 1, 1)
		backdate(b, run.RunID)
		r := b.reconciler(t)
		rep, err := r.Once(t.Context())
		require.NoError(t, err)
		require.Equal(t, reconcile.Report{AttemptsLost: 1, ItemsFailed: 1, RunsFinalised: 1}, rep,
			"attempt 2 of 2 was lost: no attempts remain")
		status, _, _ := b.attempt(t, lostID)
		require.Equal(t, "FAILED", status)

		run = b.trigger(t, "j", 1)
		b.exec(t, `UPDATE dw_etl_run_items SET attempts = 1, attempt_limit = 3 WHERE run_id = $1`, run.RunID)
		b.claim(t, run.RunID, 1, 1)
		backdate(b, run.RunID)
		rep, err = r.Once(t.Context())
		require.NoError(t, err)
		require.Equal(t, reconcile.Report{AttemptsLost: 1, ItemsRetried: 1, TasksChecked: 1}, rep,
			"attempt 2 of 3 was lost: the item is retried")
	})
}

func TestUnfinalisedRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 3, 0)
	run := b.trigger(t, "j", 2)
	// Both items ended, but the worker died before finalising.
	b.exec(t, `UPDATE dw_etl_run_items SET status = 'SUCCESS', records_read = 5 WHERE run_id = $1`, run.RunID)
	b.exec(t, `UPDATE dw_etl_run_progress SET terminal = items WHERE run_id = $1`, run.RunID)
	got, err := b.st.GetRun(t.Context(), run.RunID)
	require.NoError(t, err)
	require.Equal(t, "RUNNING", got.Status)

	rep, err := b.reconciler(t).Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, reconcile.Report{RunsFinalised: 1}, rep)
	got, err = b.st.GetRun(t.Context(), run.RunID)
	require.NoError(t, err)
	require.Equal(t, "SUCCESS", got.Status)
	require.EqualValues(t, 2, got.ItemsSucceeded)
	require.EqualValues(t, 10, got.RecordsRead)
	require.NotNil(t, got.EndedAt)
}

func TestRunTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 3, time.Minute)
	run := b.trigger(t, "j", 3)
	// Item 1 succeeded, item 2 is running on a live worker, item 3 waits.
	a1, _ := b.claim(t, run.RunID, 1, 3)
	_, err := b.st.FinishAttempt(t.Context(), workerFinish(run.RunID, 1, 3, a1))
	require.NoError(t, err)
	a2, _ := b.claim(t, run.RunID, 2, 3)
	r := b.reconciler(t)

	rep, err := r.Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, reconcile.Report{TasksChecked: 1}, rep, "within its run timeout: nothing to do")

	b.exec(t, `UPDATE dw_etl_runs SET started_at = now() - interval '1 hour' WHERE run_id = $1`, run.RunID)
	rep, err = r.Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, reconcile.Report{RunsTimedOut: 1, ItemsTimedOut: 2, RunsFinalised: 1}, rep)
	for _, no := range []int32{2, 3} {
		it := b.item(t, run.RunID, no)
		require.Equal(t, "FAILED", it.Status)
		require.Equal(t, "SYSTEM", it.Category)
		require.Equal(t, reconcile.MsgRunTimeout, *it.Message)
	}
	status, cat, msg := b.attempt(t, a2)
	require.Equal(t, []string{"FAILED", "SYSTEM", reconcile.MsgRunTimeout}, []string{status, cat, msg})
	require.ErrorIs(t, second(b.st.FinishAttempt(t.Context(), workerFinish(run.RunID, 2, 3, a2))), store.ErrLostClaim,
		"the worker still running item 2 sees its claim gone")
	got, err := b.st.GetRun(t.Context(), run.RunID)
	require.NoError(t, err)
	require.Equal(t, "PARTIAL_SUCCESS", got.Status)
	require.Equal(t, "SYSTEM", got.ErrorCategory)
	require.EqualValues(t, 1, got.ItemsSucceeded)
	require.EqualValues(t, 2, got.ItemsFailed)

	rep, err = r.Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, reconcile.Report{}, rep)
}

func TestLeadership(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 3, 0)
	b.trigger(t, "j", 1)
	_, err := b.insp.DeleteAllPendingTasks(b.queue)
	require.NoError(t, err)

	r1, r2 := b.reconciler(t), b.reconciler(t)
	rep, err := r1.Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, rep.TasksMissing)
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

func TestRunLoop(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 3, 0)
	run := b.trigger(t, "j", 1)
	b.exec(t, `UPDATE dw_etl_run_items SET status = 'SUCCESS' WHERE run_id = $1`, run.RunID)
	b.exec(t, `UPDATE dw_etl_run_progress SET terminal = items WHERE run_id = $1`, run.RunID)

	ctx, cancel := context.WithCancel(t.Context())
	r := b.reconciler(t)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	require.Eventually(t, func() bool {
		got, err := b.st.GetRun(t.Context(), run.RunID)
		return err == nil && got.Status == "SUCCESS"
	}, 10*time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	// Run released leadership on return: another reconciler leads. When the cancel hit a lock
	// query in flight, the lock goes with the closed session, which the server ends a moment
	// later, so allow that moment.
	next := b.reconciler(t)
	require.Eventually(t, func() bool {
		_, err := next.Once(t.Context())
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
}

// TestRecoversLostRedisEndToEnd loses every task of a run and a worker's attempt, then lets a
// real worker and the reconciler's loop bring the run to SUCCESS.
func TestRecoversLostRedisEndToEnd(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "j", 3, 0)
	run := b.trigger(t, "j", 5)
	b.claim(t, run.RunID, 1, 3) // a worker took item 1, then died
	b.exec(t, `UPDATE dw_etl_run_items SET heartbeat_at = now() - interval '1 hour' WHERE run_id = $1`, run.RunID)
	require.NoError(t, b.insp.DeleteQueue(b.queue, true)) // and Redis lost everything

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
	require.Equal(t, []string{"FAILED/" + reconcile.MsgWorkerLost, "SUCCESS"}, attempts)
}

// second returns the error of a (value, error) pair.
func second[T any](_ T, err error) error { return err }
