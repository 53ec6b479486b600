package worker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/worker"
)

// appendKind appends one row per item to its target (no upsert: a second commit of an item
// shows as a second row), then fails when the params say so.
func appendKind(calls *atomic.Int64) etl.HandlerFunc {
	return func(ctx context.Context, it *etl.Item) error {
		calls.Add(1)
		var p struct {
			Rows int    `json:"rows"`
			Fail string `json:"fail"`
			Hang bool   `json:"hang"`
		}
		if err := it.Params(&p); err != nil {
			return err
		}
		if p.Hang {
			<-ctx.Done()
			return ctx.Err()
		}
		for range p.Rows {
			if _, err := it.Target().Exec(ctx, `INSERT INTO appended (run_id, item_no) VALUES ($1, $2)`, it.RunID(), it.ItemNo()); err != nil {
				return etl.DBError(err)
			}
			it.AddWritten(1)
		}
		if p.Fail != "" {
			return etl.DataError(errors.New(p.Fail))
		}
		return nil
	}
}

type ledgerBundle struct {
	st     *store.Store
	enq    *enqueue.Enqueuer
	queue  string
	target *pgxpool.Pool // where appendKind writes
	env    string        // the variable naming a foreign target, "" for etlexec's own database
	calls  atomic.Int64
}

// setupLedger runs one worker whose "append" kind writes to etlexec's own database, or to
// another database named through target_url_env when foreign.
func setupLedger(t *testing.T, foreign bool, maxAttempts int32, runTimeout time.Duration) *ledgerBundle {
	t.Helper()
	b := &ledgerBundle{st: dbtest.Store(t), queue: redistest.Queue(t)}
	b.target = b.st.Pool()
	cfg := map[string]any{}
	if foreign {
		b.target = dbtest.Pool(t)
		var r [6]byte
		_, _ = rand.Read(r[:])
		b.env = "ETL_TEST_TARGET_" + strings.ToUpper(hex.EncodeToString(r[:]))
		require.NoError(t, os.Setenv(b.env, b.target.Config().ConnString()))
		t.Cleanup(func() { _ = os.Unsetenv(b.env) })
		cfg[etl.TargetURLEnvKey] = b.env
	}
	_, err := b.target.Exec(t.Context(), `CREATE TABLE appended (id bigserial PRIMARY KEY, run_id uuid, item_no int)`)
	require.NoError(t, err)
	raw, _ := json.Marshal(cfg)
	var rt *int64
	if runTimeout > 0 {
		ms := runTimeout.Milliseconds()
		rt = &ms
	}
	_, err = b.st.UpsertJobs(t.Context(), []store.JobSpec{{JobID: "append", Kind: "append", SupportsParams: true, Strategy: "none",
		CursorPolicy: "run", Config: raw, OverlapPolicy: "allow", Queue: b.queue, MaxAttempts: maxAttempts, TimeoutMs: 30000,
		RunTimeoutMs: rt, Enabled: true}})
	require.NoError(t, err)
	b.enq, err = enqueue.New(enqueue.Config{Store: b.st, Redis: redistest.ConnOpt(t), Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { b.enq.Close() })
	reg := etl.NewRegistry()
	reg.Register("append", appendKind(&b.calls))
	w, err := worker.New(worker.Config{Store: b.st, Redis: redistest.ConnOpt(t), Registry: reg, Queues: []string{b.queue},
		Concurrency: 4, Lease: 5 * time.Second, ShutdownTimeout: time.Second, Logger: zerolog.Nop(),
		Retry: runstate.RetryPolicy{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return b
}

func (b *ledgerBundle) trigger(t *testing.T, sets ...map[string]any) uuid.UUID {
	t.Helper()
	res, err := b.enq.Trigger(t.Context(), enqueue.Request{JobID: "append", Params: raw(t, func() []any {
		out := make([]any, len(sets))
		for i, s := range sets {
			out[i] = s
		}
		return out
	}()...)})
	require.NoError(t, err)
	return res.Run.RunID
}

func (b *ledgerBundle) wait(t *testing.T, runID uuid.UUID) store.Run {
	t.Helper()
	var run store.Run
	require.Eventually(t, func() bool {
		var err error
		run, err = b.st.GetRun(context.Background(), runID)
		require.NoError(t, err)
		return runstate.Status(run.Status).Terminal()
	}, 30*time.Second, 20*time.Millisecond)
	return run
}

func (b *ledgerBundle) rows(t *testing.T, runID uuid.UUID) int {
	t.Helper()
	var n int
	require.NoError(t, b.target.QueryRow(t.Context(), `SELECT count(*) FROM appended WHERE run_id = $1`, runID).Scan(&n))
	return n
}

func TestOutcomeCommitsWithTheTarget(t *testing.T) {
	t.Parallel()
	for _, foreign := range []bool{false, true} {
		name := map[bool]string{false: "OwnDatabase", true: "ForeignDatabase"}[foreign]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setupLedger(t, foreign, 1, 0)
			runID := b.trigger(t, map[string]any{"rows": 3}, map[string]any{"rows": 2}, map[string]any{"rows": 4, "fail": "bad row"})
			run := b.wait(t, runID)
			require.Equal(t, runstate.StatusPartialSuccess, run.Status)
			require.Equal(t, 5, b.rows(t, runID), "the failed item's writes rolled back")
			require.EqualValues(t, 5, run.RecordsWritten, "records_written counts committed writes only")
			require.EqualValues(t, 4, run.RecordsDiscarded, "the rolled-back writes stay visible as discarded")
			var written, discarded int64
			require.NoError(t, b.st.Pool().QueryRow(t.Context(), `SELECT records_written, records_discarded FROM dw_etl_run_attempts
				WHERE run_id = $1 AND status = 'FAILED'`, runID).Scan(&written, &discarded))
			require.Zero(t, written)
			require.EqualValues(t, 4, discarded)
			if foreign {
				var markers int
				require.NoError(t, b.target.QueryRow(t.Context(), `SELECT count(*) FROM etlexec_item_commits WHERE run_id = $1`, runID).Scan(&markers))
				require.Equal(t, 2, markers, "one commit marker per committed item, in the target")
			}
		})
	}
}

// An attempt that committed a foreign target and died before the ledger heard of it: the next
// attempt finds its marker and records the item without running it again.
func TestMarkerSavesASecondCommit(t *testing.T) {
	t.Parallel()
	b := setupLedger(t, true, 1, 0)
	runID := b.trigger(t, map[string]any{"rows": 1, "hang": true})
	require.Eventually(t, func() bool { return b.calls.Load() > 0 }, 10*time.Second, 10*time.Millisecond, "the handler runs")
	// The hanging attempt stands for one whose worker froze after its commit: write the marker
	// and the row it would have committed, then let the reconciler's rule close the attempt.
	var attemptID, worker uuid.UUID
	require.Eventually(t, func() bool {
		return b.st.Pool().QueryRow(t.Context(), `SELECT current_attempt_id, claim_worker FROM dw_etl_run_items
			WHERE run_id = $1 AND current_attempt_id IS NOT NULL`, runID).Scan(&attemptID, &worker) == nil
	}, 10*time.Second, 20*time.Millisecond)
	_, err := b.target.Exec(t.Context(), `INSERT INTO appended (run_id, item_no) VALUES ($1, 1)`, runID)
	require.NoError(t, err)
	_, err = b.target.Exec(t.Context(), `INSERT INTO etlexec_item_commits (run_id, item_no, generation, attempt_id, records_written)
		VALUES ($1, 1, 0, $2, 1)`, runID, attemptID)
	require.NoError(t, err)
	callsBefore := b.calls.Load()
	_, err = b.st.Pool().Exec(t.Context(), `UPDATE dw_etl_workers SET lease_until = now() - interval '1 second' WHERE worker_id = $1`, worker)
	require.NoError(t, err)
	ok, err := b.st.DeclareWorkerDead(t.Context(), worker)
	require.NoError(t, err)
	require.True(t, ok)
	lost, err := b.st.CloseLostAttempts(t.Context(), worker, 10)
	require.NoError(t, err)
	require.Len(t, lost, 1)
	// Deliver the item's new task as the reconciler would.
	sent, err := b.enq.Dispatcher().Send(t.Context(), mustJob(t, b.st, "append"), []store.ItemTask{{RunID: runID, ItemNo: 1, Generation: lost[0].Generation}})
	require.NoError(t, err)
	require.Equal(t, 1, sent.New)
	run := b.wait(t, runID)
	require.Equal(t, runstate.StatusSuccess, run.Status)
	require.Equal(t, 1, b.rows(t, runID), "exactly one committed row")
	require.Equal(t, callsBefore, b.calls.Load(), "the handler did not run again")
	var note string
	require.NoError(t, b.st.Pool().QueryRow(t.Context(), `SELECT cursor_note FROM dw_etl_run_items WHERE run_id = $1`, runID).Scan(&note))
	require.Contains(t, note, "already holds this item's commit")
}

func mustJob(t *testing.T, st *store.Store, id string) store.Job {
	t.Helper()
	j, err := st.GetJob(t.Context(), id)
	require.NoError(t, err)
	return j
}

// A run past its run_timeout ends FAILED within moments of its deadline, its running handlers'
// contexts cancelled, without waiting for the reconciler's interval.
func TestRunTimeoutCancelsHandlers(t *testing.T) {
	t.Parallel()
	b := setupLedger(t, false, 3, 2*time.Second)
	runID := b.trigger(t, map[string]any{"hang": true, "rows": 1}, map[string]any{"hang": true, "rows": 2})
	run := b.wait(t, runID)
	require.Equal(t, runstate.StatusFailed, run.Status)
	require.Less(t, run.EndedAt.Sub(*run.DeadlineAt), 3*time.Second, "ended within a few seconds of the deadline")
	var msgs []string
	rows, err := b.st.Pool().Query(t.Context(), `SELECT error_message FROM dw_etl_run_attempts WHERE run_id = $1`, runID)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var m string
		require.NoError(t, rows.Scan(&m))
		msgs = append(msgs, m)
	}
	require.Len(t, msgs, 2, "no retry after a run timeout")
	for _, m := range msgs {
		require.Contains(t, m, "run timeout")
	}
}
