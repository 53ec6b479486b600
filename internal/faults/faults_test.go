// Package faults_test runs real worker and enqueuer processes against a private Postgres and
// a private Redis per test (internal/servertest: never the shared servers), injects process,
// database, network and delivery faults, and checks the record stays consistent.
package faults_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/params"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

func TestFaultWorkerKilledMidItem(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := newEnv(t, 10*time.Second)
	w1 := e.startWorker("w1")
	e.waitServing(w1, e.startWorker("w2"))
	runID := e.trigger(slowItems("kill", 16, 200, 20, 100), false) // ~1s per item
	e.waitFor("attempts RUNNING on w1", 20*time.Second, func() bool { return e.attemptsOn(runID, "w1", "RUNNING") >= 2 })
	w1.kill(t)
	killed := time.Now()
	// The lost attempts are closed after ETL_LEASE, but their asynq tasks stay "active" in
	// Redis until asynq's own recoverer (lease 30s + 30s cutoff, 1-minute tick, then a 15-45s
	// retry delay) hands them back: allow for that worst case.
	run := e.waitRun(runID, 210*time.Second)
	t.Logf("run SUCCESS %s after the kill", time.Since(killed).Round(time.Millisecond))
	e.logAttempts(runID)
	e.checkInvariants(runID, runstate.StatusSuccess)
	lost := e.count(`SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1 AND worker_id = 'w1' AND status = 'FAILED'
		AND error_category = 'SYSTEM'`, runID)
	require.GreaterOrEqual(t, lost, 2, "the killed worker's attempts are closed FAILED SYSTEM")
	require.Greater(t, int(run.AttemptCount), 16, "lost attempts were retried")
	t.Logf("elapsed %s", time.Since(start).Round(time.Millisecond))
}

func TestFaultRedisFlushMidRun(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := newEnv(t, 10*time.Second)
	e.startWorker("w1")
	e.startWorker("w2")
	// 40 items of ~0.6s over 16 slots: most are still queued in Redis when it loses its data.
	runID := e.trigger(slowItems("flush", 40, 60, 20, 200), false)
	e.waitFor("a few items SUCCESS", 20*time.Second, func() bool { return e.itemsWithStatus(runID, "SUCCESS") >= 3 })
	e.flushRedis()
	require.Less(t, e.itemsWithStatus(runID, "SUCCESS"), 40, "the flush must happen mid-run")
	e.waitRun(runID, 90*time.Second)
	e.logAttempts(runID)
	e.checkInvariants(runID, runstate.StatusSuccess)
	t.Logf("elapsed %s", time.Since(start).Round(time.Millisecond))
}

func TestFaultEnqueuerDiedBeforeFanOut(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := newEnv(t, 10*time.Second)
	e.startWorker("w1")
	e.startWorker("w2")
	ctx := context.Background()
	ps := slowItems("fanout", 10, 50, 25, 10)
	unique, dropped, err := params.Dedupe(raws(t, ps))
	require.NoError(t, err)
	runID, err := uuid.NewV7()
	require.NoError(t, err)
	now, err := e.st.Now(ctx)
	require.NoError(t, err)
	items := make([]store.NewItem, len(unique))
	for i, s := range unique {
		items[i] = store.NewItem{Params: s.Params, ParamHash: s.Hash}
	}
	run, err := e.st.CreateRun(ctx, store.NewRun{RunID: runID, JobID: jobID, Trigger: "manual",
		LogicalStart: &now, Strategy: "modified_date"}, items, dropped)
	require.NoError(t, err)
	require.EqualValues(t, len(ps), run.ItemCount)
	// The enqueuer died long enough ago for its fan-out lease to have lapsed.
	_, err = e.st.Pool().Exec(ctx, `UPDATE dw_etl_runs SET fanout_until = now() WHERE run_id = $1`, runID)
	require.NoError(t, err)
	e.waitRun(runID, 90*time.Second)
	e.checkInvariants(runID, runstate.StatusSuccess)
	t.Logf("elapsed %s", time.Since(start).Round(time.Millisecond))
}

func TestFaultPoisonParams(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := newEnv(t, 2*time.Second)
	e.startWorker("w1")
	ps := []p{
		{"key": "good0", "records": 30, "page_size": 10},
		{"key": "good1", "records": 30, "page_size": 10},
		{"key": "good2", "records": 30, "page_size": 10},
		{"key": "panic", "records": 30, "page_size": 10, "panic": true},
		{"key": "hang", "records": 30, "hang": true},
		{"key": "data", "records": 30, "page_size": 10, "fail_category": "DATA", "fail_attempts": 99},
	}
	runID := e.trigger(ps, false)
	run := e.waitRun(runID, 90*time.Second)
	e.logAttempts(runID)
	e.checkInvariants(runID, runstate.StatusPartialSuccess)
	require.EqualValues(t, 3, run.ItemsSucceeded)
	require.EqualValues(t, 3, run.ItemsFailed)
	ctx := context.Background()
	type att struct {
		category string
		stack    string
	}
	get := func(key string) (out []att) {
		rows, err := e.st.Pool().Query(ctx, `SELECT a.error_category, coalesce(a.error_detail->>'stack', '')
			FROM dw_etl_run_attempts a JOIN dw_etl_run_items i USING (run_id, item_no)
			WHERE a.run_id = $1 AND i.params->>'key' = $2 ORDER BY a.item_attempt`, runID, key)
		require.NoError(t, err)
		defer rows.Close()
		for rows.Next() {
			var a att
			require.NoError(t, rows.Scan(&a.category, &a.stack))
			out = append(out, a)
		}
		require.NoError(t, rows.Err())
		return out
	}
	data := get("data")
	require.Len(t, data, 1, "DATA is not retried")
	require.Equal(t, "DATA", data[0].category)
	pan := get("panic")
	require.Len(t, pan, 3, "panic is SYSTEM, retried up to max_attempts")
	for _, a := range pan {
		require.Equal(t, "SYSTEM", a.category)
		require.Contains(t, a.stack, "synthetic", "panic attempts carry the stack")
	}
	hang := get("hang")
	require.Len(t, hang, 3, "a hang ends by the job timeout and is retried")
	for _, a := range hang {
		require.NotEqual(t, "NONE", a.category)
	}
	t.Logf("hang attempts categories: %v; elapsed %s", hang, time.Since(start).Round(time.Millisecond))
}

func TestFaultSigtermLongItem(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := newEnv(t, 10*time.Second)
	w1 := e.startWorker("w1")
	// 2 pages of 3s: longer than ETL_SHUTDOWN_TIMEOUT=2s.
	runID := e.trigger(slowItems("term", 2, 2, 1, 3000), false)
	e.waitFor("both items RUNNING on w1", 20*time.Second, func() bool { return e.attemptsOn(runID, "w1", "RUNNING") == 2 })
	e.startWorker("w2")
	sent := time.Now()
	require.NoError(t, w1.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-w1.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("worker w1 did not exit within 15s of SIGTERM")
	}
	exitIn := time.Since(sent)
	var exitErr *exec.ExitError
	if errors.As(w1.err, &exitErr) {
		t.Fatalf("worker w1 exited with %v after SIGTERM", w1.err)
	}
	require.NoError(t, w1.err)
	require.Less(t, exitIn, 10*time.Second, "exit bound")
	run := e.waitRun(runID, 120*time.Second)
	e.logAttempts(runID)
	e.checkInvariants(runID, runstate.StatusSuccess)
	require.Equal(t, 2, e.attemptsOn(runID, "w1", "FAILED"), "w1's interrupted attempts are recorded FAILED")
	require.Equal(t, 2, e.count(`SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1 AND worker_id = 'w1' AND error_category = 'SYSTEM'`, runID))
	require.Equal(t, 2, e.attemptsOn(runID, "w2", "SUCCESS"), "retried by w2")
	require.EqualValues(t, 4, run.AttemptCount)
	t.Logf("w1 exited %s after SIGTERM; elapsed %s", exitIn.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

func TestFaultDryRunUnderKillAndFlush(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := newEnv(t, 10*time.Second)
	w1 := e.startWorker("w1")
	e.waitServing(w1, e.startWorker("w2"))
	runID := e.trigger(slowItems("dry", 30, 60, 20, 200), true)
	e.waitFor("attempts RUNNING on w1", 20*time.Second, func() bool { return e.attemptsOn(runID, "w1", "RUNNING") >= 2 })
	w1.kill(t)
	e.waitFor("a few items SUCCESS", 30*time.Second, func() bool { return e.itemsWithStatus(runID, "SUCCESS") >= 3 })
	e.flushRedis()
	e.waitRun(runID, 90*time.Second)
	e.checkInvariants(runID, runstate.StatusSuccess)
	require.Zero(t, e.count(`SELECT count(*) FROM dw_etl_incremental_cursors WHERE job_id = $1`, jobID), "dry run wrote a cursor")
	t.Logf("elapsed %s", time.Since(start).Round(time.Millisecond))
}

func TestFaultTenThousandItems(t *testing.T) {
	t.Parallel()
	loadSensitive(t)
	start := time.Now()
	e := newEnv(t, 10*time.Second)
	// No worker dies here: every attempt beyond 10000 would be a live worker taken for lost.
	e.lease = 15 * time.Second
	e.startWorker("w1")
	e.startWorker("w2")
	const n = 10000
	ps := make([]p, n)
	for i := range ps {
		ps[i] = p{"noop": true, "key": fmt.Sprintf("n%d", i)}
	}
	trig := time.Now()
	runID := e.trigger(ps, false)
	run := e.waitRun(runID, 150*time.Second)
	e.checkInvariants(runID, runstate.StatusSuccess)
	require.EqualValues(t, n, run.ItemsSucceeded)
	require.Equal(t, n, e.count(`SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1 AND status = 'SUCCESS'`, runID))
	// At-least-once: any attempt beyond one per item must be a live worker's attempt that the
	// reconciler took for lost under this machine's load (seen: 4-7 of 10000 during a full make
	// test), never a second success.
	extra := int(run.AttemptCount) - n
	require.GreaterOrEqual(t, extra, 0)
	require.Equal(t, extra, e.count(`SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1 AND status = 'FAILED' AND error_message = 'worker lost'`, runID),
		"every extra attempt is a lost-worker attempt")
	require.Less(t, extra, n/100, "lost-worker false positives must stay rare")
	t.Logf("extra attempts taken for lost: %d", extra)
	t.Logf("10k noop items: trigger→terminal %s; elapsed %s", time.Since(trig).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
