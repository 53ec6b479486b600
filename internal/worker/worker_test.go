package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/logsink"
	"github.com/etlexec/etlexec/internal/ops"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/task"
	"github.com/etlexec/etlexec/internal/telemetry"
	"github.com/etlexec/etlexec/internal/worker"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// testKind behaves as its params say, so one job can mix outcomes.
type testParams struct {
	N           int    `json:"n"`
	Records     int64  `json:"records"`
	Fail        string `json:"fail"`         // category of a permanent failure
	FailAttempt int    `json:"fail_attempt"` // fail (API) the first N attempts
	Panic       bool   `json:"panic"`
	Watermark   string `json:"watermark"`
	Hang        bool   `json:"hang"`
}

func testKind(ctx context.Context, it *etl.Item) error {
	var p testParams
	if err := it.Params(&p); err != nil {
		return err
	}
	if p.Panic {
		panic("boom")
	}
	if p.Hang {
		<-ctx.Done()
		return ctx.Err()
	}
	if it.ItemAttempt() <= p.FailAttempt {
		return etl.APIError(fmt.Errorf("flaky source, attempt %d", it.ItemAttempt()))
	}
	switch p.Fail {
	case "DATA":
		return etl.DataError(errors.New("bad row"))
	case "API":
		return etl.APIError(errors.New("source down"))
	}
	it.AddRead(p.Records)
	it.AddPages(1)
	if it.Target() != nil {
		tag, err := it.Target().Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS t_probe (x int)`)
		_ = tag
		if err != nil {
			return err
		}
	}
	it.AddWritten(p.Records)
	if p.Watermark != "" {
		ts, err := time.Parse(time.RFC3339, p.Watermark)
		if err != nil {
			return etl.DataError(err)
		}
		it.ObserveWatermark(ts)
	}
	it.Log().Info().Int("n", p.N).Msg("test item done")
	return nil
}

type bundle struct {
	st    *store.Store
	enq   *enqueue.Enqueuer
	queue string
}

func setup(t *testing.T, workers int) *bundle {
	t.Helper()
	st := dbtest.Store(t)
	q := redistest.Queue(t)
	opt := redistest.ConnOpt(t)
	enq, err := enqueue.New(enqueue.Config{Store: st, Redis: opt, Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { enq.Close() })
	reg := etl.NewRegistry()
	reg.Register("test", testKind)
	for i := 0; i < workers; i++ {
		w, err := worker.New(worker.Config{
			Store: st, Redis: opt, Registry: reg, Queues: []string{q}, Concurrency: 8, Prefetch: 2,
			ShutdownTimeout: time.Second, Lease: 5 * time.Second, Name: fmt.Sprintf("w%d", i),
			Retry:  runstate.RetryPolicy{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond, Jitter: 0.1},
			Logger: zerolog.Nop(),
		})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	return &bundle{st: st, enq: enq, queue: q}
}

func (b *bundle) job(t *testing.T, id string, strategy etl.Strategy, policy runstate.CursorPolicy, maxAttempts int32) {
	t.Helper()
	_, err := b.st.UpsertJobs(context.Background(), []store.JobSpec{{
		JobID: id, Kind: "test", SupportsParams: true, SupportsIncremental: strategy != "none", Strategy: strategy,
		CursorPolicy: policy, Config: json.RawMessage(`{}`), OverlapPolicy: "allow", Queue: b.queue,
		MaxAttempts: maxAttempts, TimeoutMs: 10000, RetentionMs: 60000, Enabled: true,
	}})
	require.NoError(t, err)
}

func (b *bundle) waitRun(t *testing.T, runID uuid.UUID) store.Run {
	t.Helper()
	var run store.Run
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var err error
		run, err = b.st.GetRun(context.Background(), runID)
		require.NoError(c, err)
		assert.True(c, runstate.Status(run.Status).Terminal(), "run %s still %s", runID, run.Status)
	}, 30*time.Second, 20*time.Millisecond)
	return run
}

func raw(t *testing.T, vs ...any) []json.RawMessage {
	out := make([]json.RawMessage, len(vs))
	for i, v := range vs {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		out[i] = b
	}
	return out
}

func TestRunOutcomes(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	ctx := context.Background()
	b.job(t, "mixed", "none", "run", 3)

	t.Run("AllSucceed", func(t *testing.T) {
		res, err := b.enq.Trigger(ctx, enqueue.Request{JobID: "mixed", Params: raw(t,
			map[string]any{"n": 1, "records": 10}, map[string]any{"n": 2, "records": 5}, map[string]any{"records": 10, "n": 1})})
		require.NoError(t, err)
		require.Equal(t, 2, res.Items)
		require.Equal(t, 1, res.Deduplicated)
		run := b.waitRun(t, res.Run.RunID)
		require.Equal(t, runstate.StatusSuccess, run.Status)
		require.Equal(t, etl.CategoryNone, run.ErrorCategory)
		require.EqualValues(t, 2, run.ItemsSucceeded)
		require.EqualValues(t, 15, run.RecordsRead)
		require.EqualValues(t, 2, run.PageCount)
		require.EqualValues(t, 2, run.AttemptCount)
	})
	t.Run("PartialWithRetriesAndPanic", func(t *testing.T) {
		res, err := b.enq.Trigger(ctx, enqueue.Request{JobID: "mixed", Params: raw(t,
			map[string]any{"n": 1, "records": 1},
			map[string]any{"n": 2, "fail": "DATA"},
			map[string]any{"n": 3, "fail_attempt": 2, "records": 3},
			map[string]any{"n": 4, "panic": true},
		)})
		require.NoError(t, err)
		run := b.waitRun(t, res.Run.RunID)
		require.Equal(t, runstate.StatusPartialSuccess, run.Status)
		require.EqualValues(t, 2, run.ItemsSucceeded)
		require.EqualValues(t, 2, run.ItemsFailed)
		// item 1: 1 attempt; item 2 (DATA): 1 attempt, never retried; item 3: 3 attempts;
		// item 4 (panic, SYSTEM): 3 attempts.
		require.EqualValues(t, 1+1+3+3, run.AttemptCount)
		rows, err := b.st.Pool().Query(ctx, `SELECT item_no, item_attempt, status, error_category, backoff_ms IS NOT NULL,
			coalesce(error_detail->>'stack', '') FROM dw_etl_run_attempts WHERE run_id = $1 ORDER BY attempt_no`, run.RunID)
		require.NoError(t, err)
		defer rows.Close()
		last := map[int32]int32{}
		for rows.Next() {
			var itemNo, itemAttempt int32
			var status, cat, stack string
			var hasBackoff bool
			require.NoError(t, rows.Scan(&itemNo, &itemAttempt, &status, &cat, &hasBackoff, &stack))
			require.Equal(t, last[itemNo]+1, itemAttempt, "attempts of item %d in attempt_no order", itemNo)
			last[itemNo] = itemAttempt
			switch itemNo {
			case 2:
				require.Equal(t, "DATA", cat)
				require.False(t, hasBackoff, "DATA is not retried")
			case 3:
				if itemAttempt < 3 {
					require.Equal(t, "API", cat)
					require.True(t, hasBackoff)
				} else {
					require.Equal(t, "SUCCESS", status)
				}
			case 4:
				require.Equal(t, "SYSTEM", cat)
				require.Contains(t, stack, "testKind")
			}
		}
		require.NoError(t, rows.Err())
	})
	t.Run("AllFail", func(t *testing.T) {
		res, err := b.enq.Trigger(ctx, enqueue.Request{JobID: "mixed", Params: raw(t,
			map[string]any{"n": 1, "fail": "DATA"}, map[string]any{"n": 2, "fail": "DATA"})})
		require.NoError(t, err)
		run := b.waitRun(t, res.Run.RunID)
		require.Equal(t, runstate.StatusFailed, run.Status)
		require.Equal(t, etl.CategoryData, run.ErrorCategory)
	})
}

func TestCursorsAndDryRun(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	b.job(t, "inc", "modified_date", "run", 1)
	b.job(t, "inc_item", "modified_date", "item", 1)
	cursor := func(job string, p any) *time.Time {
		var v *time.Time
		pj, _ := json.Marshal(p)
		err := b.st.Pool().QueryRow(ctx, `SELECT cursor_value FROM dw_etl_incremental_cursors WHERE job_id = $1 AND params = $2::jsonb`, job, string(pj)).Scan(&v)
		if err != nil {
			return nil
		}
		return v
	}
	good := map[string]any{"n": 1, "watermark": "2026-03-01T00:00:00Z"}
	bad := map[string]any{"n": 2, "fail": "DATA"}

	// Dry run: metrics recorded, cursors untouched.
	res, err := b.enq.Trigger(ctx, enqueue.Request{JobID: "inc", DryRun: true, Params: raw(t, good)})
	require.NoError(t, err)
	run := b.waitRun(t, res.Run.RunID)
	require.Equal(t, runstate.StatusSuccess, run.Status)
	require.Nil(t, cursor("inc", good))

	// Policy run: a failed sibling holds every cursor.
	res, err = b.enq.Trigger(ctx, enqueue.Request{JobID: "inc", Params: raw(t, good, bad)})
	require.NoError(t, err)
	run = b.waitRun(t, res.Run.RunID)
	require.Equal(t, runstate.StatusPartialSuccess, run.Status)
	require.Nil(t, cursor("inc", good))
	var note string
	require.NoError(t, b.st.Pool().QueryRow(ctx, `SELECT cursor_note FROM dw_etl_runs WHERE run_id = $1`, run.RunID).Scan(&note))
	require.Equal(t, "run PARTIAL_SUCCESS: cursors held (cursor policy run)", note)
	require.NoError(t, b.st.Pool().QueryRow(ctx, `SELECT cursor_note FROM dw_etl_run_items WHERE run_id = $1 AND item_no = 1`, run.RunID).Scan(&note))
	require.Equal(t, "advances to 2026-03-01T00:00:00Z if the run succeeds", note)

	// Policy item: the good item advances despite the failed sibling.
	res, err = b.enq.Trigger(ctx, enqueue.Request{JobID: "inc_item", Params: raw(t, good, bad)})
	require.NoError(t, err)
	b.waitRun(t, res.Run.RunID)
	got := cursor("inc_item", good)
	require.NotNil(t, got)
	require.True(t, got.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)))

	// Never backwards: an older watermark leaves the cursor where it is.
	older := map[string]any{"n": 1, "watermark": "2026-01-01T00:00:00Z"}
	res, err = b.enq.Trigger(ctx, enqueue.Request{JobID: "inc", Params: raw(t, good)})
	require.NoError(t, err)
	b.waitRun(t, res.Run.RunID)
	require.True(t, cursor("inc", good).Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)))
	_ = older
}

func TestJobWithoutParams(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	_, err := b.st.UpsertJobs(ctx, []store.JobSpec{{
		JobID: "plain", Kind: "test", Strategy: "none", CursorPolicy: "run", Config: json.RawMessage(`{}`),
		OverlapPolicy: "skip", Queue: b.queue, MaxAttempts: 1, TimeoutMs: 10000, Enabled: true,
	}})
	require.NoError(t, err)
	_, err = b.enq.Trigger(ctx, enqueue.Request{JobID: "plain", Params: raw(t, map[string]any{"n": 1})})
	require.ErrorIs(t, err, enqueue.ErrParamsNotSupported)
	res, err := b.enq.Trigger(ctx, enqueue.Request{JobID: "plain"})
	require.NoError(t, err)
	require.Equal(t, 1, res.Items)
	run := b.waitRun(t, res.Run.RunID)
	require.Equal(t, runstate.StatusSuccess, run.Status)
	var params string
	require.NoError(t, b.st.Pool().QueryRow(ctx, `SELECT params::text FROM dw_etl_run_items WHERE run_id = $1`, run.RunID).Scan(&params))
	require.Equal(t, "{}", params)
}

func TestRerunFailedItemsThenSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	b.job(t, "rerun", "modified_date", "run", 1)
	good := map[string]any{"n": 1, "watermark": "2026-05-01T00:00:00Z"}
	flaky := map[string]any{"n": 2, "fail_attempt": 1, "watermark": "2026-05-02T00:00:00Z"}
	res, err := b.enq.Trigger(ctx, enqueue.Request{JobID: "rerun", Params: raw(t, good, flaky)})
	require.NoError(t, err)
	run := b.waitRun(t, res.Run.RunID)
	require.Equal(t, runstate.StatusPartialSuccess, run.Status)
	var cursors int
	require.NoError(t, b.st.Pool().QueryRow(ctx, `SELECT count(*) FROM dw_etl_incremental_cursors WHERE job_id = 'rerun'`).Scan(&cursors))
	require.Zero(t, cursors, "policy run: no cursor moves while the run is not successful")

	prev, err := ops.Rerun(ctx, b.st, b.enq, run.RunID, store.RerunFilter{}, true)
	require.NoError(t, err)
	require.Len(t, prev.Items, 1)
	require.EqualValues(t, 2, prev.Items[0].ItemNo)
	again, err := b.st.GetRun(ctx, run.RunID)
	require.NoError(t, err)
	require.Equal(t, runstate.StatusPartialSuccess, again.Status, "preview changes nothing")

	_, err = ops.Rerun(ctx, b.st, b.enq, run.RunID, store.RerunFilter{}, false)
	require.NoError(t, err)
	run = b.waitRun(t, run.RunID)
	require.Equal(t, runstate.StatusSuccess, run.Status)
	require.EqualValues(t, 2, run.ItemsSucceeded)
	require.EqualValues(t, 3, run.AttemptCount)
	require.NoError(t, b.st.Pool().QueryRow(ctx, `SELECT count(*) FROM dw_etl_incremental_cursors WHERE job_id = 'rerun'`).Scan(&cursors))
	require.Equal(t, 2, cursors, "the run now succeeded: every item's cursor advances")
	var attempts []int32
	rows, err := b.st.Pool().Query(ctx, `SELECT item_attempt FROM dw_etl_run_attempts WHERE run_id = $1 AND item_no = 2 ORDER BY attempt_no`, run.RunID)
	require.NoError(t, err)
	for rows.Next() {
		var a int32
		require.NoError(t, rows.Scan(&a))
		attempts = append(attempts, a)
	}
	require.Equal(t, []int32{1, 2}, attempts, "the rerun continues the item's attempt numbering")

	_, err = ops.Rerun(ctx, b.st, b.enq, run.RunID, store.RerunFilter{}, false)
	require.ErrorIs(t, err, ops.ErrNothingToRerun)
}

func TestCancelMidRun(t *testing.T) {
	t.Parallel()
	b := setup(t, 1) // 8 handlers and 2 claimed ahead: 8 items hang running, 2 wait claimed, 2 wait in Redis
	ctx := context.Background()
	b.job(t, "cancel", "modified_date", "run", 3)
	var sets []any
	for i := 0; i < 12; i++ {
		sets = append(sets, map[string]any{"n": i, "hang": true})
	}
	res, err := b.enq.Trigger(ctx, enqueue.Request{JobID: "cancel", Params: raw(t, sets...)})
	require.NoError(t, err)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var running int
		require.NoError(c, b.st.Pool().QueryRow(ctx, `SELECT count(*) FROM dw_etl_run_items WHERE run_id = $1 AND current_attempt_id IS NOT NULL`, res.Run.RunID).Scan(&running))
		assert.Equal(c, 10, running, "items running")
	}, 20*time.Second, 20*time.Millisecond)
	cres, err := ops.Cancel(ctx, b.st, b.enq.Dispatcher(), res.Run.RunID, "tester", "wrong params")
	require.NoError(t, err)
	require.Equal(t, 2, cres.ItemsCancelled, "the items no attempt holds")
	run := b.waitRun(t, res.Run.RunID)
	require.Equal(t, runstate.StatusCancelled, run.Status)
	require.EqualValues(t, 12, run.ItemsCancelled)
	require.Equal(t, "tester", *run.CancelledBy)
	require.Equal(t, "wrong params", *run.CancelReason)
	require.NotNil(t, run.CancelRequestedAt)
	var notCancelled, retried int
	require.NoError(t, b.st.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE status <> 'CANCELLED'), count(*) FILTER (WHERE backoff_ms IS NOT NULL)
		FROM dw_etl_run_attempts WHERE run_id = $1`, run.RunID).Scan(&notCancelled, &retried))
	require.Zero(t, notCancelled, "running attempts end CANCELLED")
	require.Zero(t, retried, "cancelled attempts are not retried")
	_, err = ops.Cancel(ctx, b.st, b.enq.Dispatcher(), res.Run.RunID, "tester", "again")
	require.ErrorIs(t, err, store.ErrRunNotActive)
}

// Two deliveries of one item at the same moment: one claim wins, one SUCCESS attempt.
func TestConcurrentDeliveriesOneSuccess(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	ctx := context.Background()
	_, err := st.UpsertJobs(ctx, []store.JobSpec{{
		JobID: "dup", Kind: "test", Strategy: "none", CursorPolicy: "run", Config: json.RawMessage(`{}`),
		OverlapPolicy: "allow", Queue: "unused", MaxAttempts: 3, TimeoutMs: 10000, Enabled: true,
	}})
	require.NoError(t, err)
	runID, _ := uuid.NewV7()
	_, err = st.CreateRun(ctx, store.NewRun{RunID: runID, JobID: "dup", Trigger: "manual", Strategy: "none"},
		[]store.NewItem{{Params: json.RawMessage(`{"records":1}`), ParamHash: "h1"}}, 0)
	require.NoError(t, err)
	reg := etl.NewRegistry()
	reg.Register("test", testKind)
	w, err := worker.New(worker.Config{Store: st, Redis: redistest.ConnOpt(t), Registry: reg, Queues: []string{redistest.Queue(t)}, Logger: zerolog.Nop()})
	require.NoError(t, err)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() { cancel(); <-done })
	payload := task.Item{RunID: runID, ItemNo: 1}.Encode()
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() { errs <- w.HandleItem(ctx, asynq.NewTask(task.TypeItem, payload)) }()
	}
	<-errs
	<-errs
	// A success is recorded in the background after the handler returns: wait for the run.
	var run store.Run
	require.Eventually(t, func() bool {
		run, err = st.GetRun(ctx, runID)
		return err == nil && run.Status == "SUCCESS"
	}, 10*time.Second, 10*time.Millisecond, "run status %q", run.Status)
	var success, total int
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'SUCCESS'), count(*) FROM dw_etl_run_attempts WHERE run_id = $1`, runID).Scan(&success, &total))
	require.Equal(t, 1, success)
	require.Equal(t, 1, total, "the losing delivery must not even start an attempt")
}

// One trace runs from the trigger through the task headers to the item's attempt, with the
// attempt's Postgres queries as child spans. Not parallel: it installs the global provider.
func TestTraceFromTriggerToAttempt(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() { otel.SetTracerProvider(prevTP); otel.SetTextMapPropagator(prevProp) })

	st, err := store.Connect(context.Background(), dbtest.URL(t)) // pools built now carry the pgx tracer
	require.NoError(t, err)
	t.Cleanup(st.Close)
	q := redistest.Queue(t)
	b := &bundle{st: st, queue: q}
	b.job(t, "traced", "none", "run", 1)
	enq, err := enqueue.New(enqueue.Config{Store: st, Redis: redistest.ConnOpt(t), Logger: zerolog.Nop(), Headers: telemetry.Headers})
	require.NoError(t, err)
	t.Cleanup(func() { enq.Close() })
	reg := etl.NewRegistry()
	reg.Register("test", testKind)
	w, err := worker.New(worker.Config{Store: st, Redis: redistest.ConnOpt(t), Registry: reg, Queues: []string{q}, Logger: zerolog.Nop()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	tctx, span := telemetry.StartEnqueue(context.Background(), "traced", "")
	res, err := enq.Trigger(tctx, enqueue.Request{JobID: "traced", Params: raw(t, map[string]any{"records": 1})})
	span.End()
	require.NoError(t, err)
	b.waitRun(t, res.Run.RunID)
	traceID := span.SpanContext().TraceID()
	var consumer, queries int
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID() != traceID {
			continue
		}
		switch {
		case s.Name == "asynq.process etl:item":
			consumer++
		case s.SpanKind == trace.SpanKindClient:
			queries++
		}
	}
	require.Equal(t, 1, consumer, "the attempt continues the trigger's trace")
	require.Positive(t, queries, "Postgres queries are child spans of the trace")
}

// Lines a handler logs land in dw_etl_run_logs with job, run, attempt and item set.
func TestRunLogsQueryableByRunAndAttempt(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	ctx := context.Background()
	sink, err := logsink.New(st, logsink.Config{})
	require.NoError(t, err)
	sink.Start(ctx)
	q := redistest.Queue(t)
	b := &bundle{st: st, queue: q}
	b.job(t, "logged", "none", "run", 2)
	enq, err := enqueue.New(enqueue.Config{Store: st, Redis: redistest.ConnOpt(t), Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { enq.Close() })
	reg := etl.NewRegistry()
	reg.Register("test", testKind)
	w, err := worker.New(worker.Config{Store: st, Redis: redistest.ConnOpt(t), Registry: reg, Queues: []string{q},
		Logger: zerolog.New(sink).With().Timestamp().Logger(),
		Retry:  runstate.RetryPolicy{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond, Jitter: 0.1}})
	require.NoError(t, err)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	res, err := enq.Trigger(ctx, enqueue.Request{JobID: "logged", Params: raw(t,
		map[string]any{"n": 7, "records": 1}, map[string]any{"n": 8, "fail_attempt": 1, "records": 1})})
	require.NoError(t, err)
	b.waitRun(t, res.Run.RunID)
	cancel()
	<-done
	require.NoError(t, sink.Close(ctx))

	var handlerLines, withAttempt, failedAttemptLines int
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT
			count(*) FILTER (WHERE message = 'test item done'),
			count(*) FILTER (WHERE attempt_id IS NOT NULL AND item_no IS NOT NULL AND job_id = 'logged'),
			count(*) FILTER (WHERE attempt_id IN (SELECT attempt_id FROM dw_etl_run_attempts WHERE run_id = $1 AND status = 'FAILED'))
		FROM dw_etl_run_logs WHERE run_id = $1`, res.Run.RunID).Scan(&handlerLines, &withAttempt, &failedAttemptLines))
	require.Equal(t, 2, handlerLines, "one handler line per succeeded item")
	require.Positive(t, withAttempt)
	require.Positive(t, failedAttemptLines, "the failed first attempt's lines are findable by its attempt_id")
}
