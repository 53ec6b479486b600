package faults_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/ops"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/servertest"
	"github.com/etlexec/etlexec/internal/store"
)

func TestFaultPostgresRestartMidRun(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("fault tests start processes; skipped with -short")
	}
	disruptive(t)
	start := time.Now()
	// Each restart can cost an in-flight item one attempt: leave room for both. fsync on: the
	// immediate restart runs crash recovery over real, flushed WAL.
	e := newEnvWith(t, envOpts{timeout: 10 * time.Second, maxAttempts: 5, pg: servertest.PostgresOptions{Fsync: true}})
	e.startWorker("w1")
	e.startWorker("w2")
	// 40 items of 8 pages x 150ms (~1.2s) over 16 slots: ~3 waves, several seconds.
	runID := e.trigger(slowItems("pgr", 40, 80, 10, 150), false)

	e.waitFor("5 items SUCCESS", 30*time.Second, func() bool { return e.succeededTolerant(runID) >= 5 })
	before := e.succeededTolerant(runID)
	require.Less(t, before, 40, "the first restart must happen mid-run")
	t0 := time.Now()
	require.NoError(t, e.pg.Restart(servertest.Fast))
	e.st.Pool().Reset()
	t.Logf("pg_ctl restart -m fast with %d/40 items SUCCESS took %s", before, time.Since(t0).Round(time.Millisecond))

	// Attempts cut by the restart come back through asynq's retry set (16s+, see the report in
	// the test's log), so progress resumes in bursts.
	e.waitFor("3 more items SUCCESS", 90*time.Second, func() bool { return e.succeededTolerant(runID) >= before+3 })
	mid := e.succeededTolerant(runID)
	t0 = time.Now()
	require.NoError(t, e.pg.Restart(servertest.Immediate))
	e.st.Pool().Reset()
	t.Logf("pg_ctl restart -m immediate with %d/40 items SUCCESS took %s", mid, time.Since(t0).Round(time.Millisecond))

	run := e.waitRun(runID, 150*time.Second)
	// Let any straggling reconnect settle before the strict checks.
	e.waitFor("database answers", 10*time.Second, func() bool { _, err := e.tryCount(`SELECT 1`); return err == nil })
	e.logAttempts(runID)
	e.checkInvariants(runID, runstate.StatusSuccess)
	t.Logf("run %s: %d attempts for 40 items; elapsed %s", run.Status, run.AttemptCount, time.Since(start).Round(time.Millisecond))
}

func TestFaultRedisUnreachableForAWhile(t *testing.T) {
	t.Parallel()
	for _, variant := range []string{"sigstop", "restart-empty"} {
		t.Run(variant, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			e := newEnv(t, 10*time.Second)
			workers := []*workerProc{e.startWorker("w1"), e.startWorker("w2")}
			// 40 items of ~0.6s over 16 slots: most are still queued when Redis goes away.
			runID := e.trigger(slowItems("unreach", 40, 60, 20, 200), false)
			e.waitFor("a few items SUCCESS", 20*time.Second, func() bool { return e.itemsWithStatus(runID, "SUCCESS") >= 3 })
			require.Less(t, e.itemsWithStatus(runID, "SUCCESS"), 40, "the fault must happen mid-run")
			// The fault lasts until every worker has run into it (asynq logs its failed calls).
			noticed := e.logMarks(workers)
			switch variant {
			case "sigstop":
				require.NoError(t, e.redis.Freeze())
				t.Logf("SIGSTOP private redis %s", e.redis.Addr())
				e.waitNoticed(noticed, `"component":"asynq"`, 30*time.Second)
				require.NoError(t, e.redis.Thaw())
				t.Logf("SIGCONT private redis")
			case "restart-empty":
				require.NoError(t, e.redis.Kill())
				t.Logf("killed private redis %s", e.redis.Addr())
				e.waitNoticed(noticed, `"component":"asynq"`, 30*time.Second)
				require.NoError(t, e.redis.Restart())
				t.Logf("started an empty redis on %s", e.redis.Addr())
			}
			e.waitRun(runID, 100*time.Second)
			e.logAttempts(runID)
			e.checkInvariants(runID, runstate.StatusSuccess)
			t.Logf("elapsed %s", time.Since(start).Round(time.Millisecond))
		})
	}
}

func TestFaultKilledRightAfterTargetCommit(t *testing.T) {
	t.Parallel()
	disruptive(t)
	start := time.Now()
	// Up to 3 kills may land on the same item; each costs it an attempt, so allow more than 3.
	e := newEnvWith(t, envOpts{timeout: 10 * time.Second, maxAttempts: 5})
	// The target table exists before the race: the window sought is "target rows committed,
	// item still RUNNING", which one statement sees consistently.
	ps := slowItems("tc", 240, 40, 20, 40) // 2 pages x 40ms per item: commits many times a second
	workers := map[string]*workerProc{}
	next := 0
	spawn := func() {
		id := fmt.Sprintf("k%d", next)
		next++
		workers[id] = e.startWorker(id)
	}
	spawn()
	spawn()
	runID := e.trigger(ps, false)
	ctx := context.Background()
	const maxKills = 3
	kills, inWindow := 0, 0
	var caught []string
	// A timeout only means fewer kills landed; the invariants below hold all the same.
	_ = servertest.Poll(25*time.Second, 2*time.Millisecond, func() (bool, error) {
		var key, wid string
		err := e.st.Pool().QueryRow(ctx, `SELECT i.params->>'key', coalesce(w.name, '')
			FROM dw_etl_run_items i JOIN dw_etl_workers w ON w.worker_id = i.claim_worker
			WHERE i.run_id = $1 AND i.current_attempt_id IS NOT NULL AND to_regclass('`+targetTable+`') IS NOT NULL
			AND EXISTS (SELECT 1 FROM `+targetTable+` t WHERE t.key = i.params->>'key') LIMIT 1`, runID).Scan(&key, &wid)
		if err != nil {
			// No row (or the target table not created yet): keep polling while items remain.
			pending, _ := e.tryCount(`SELECT count(*) FROM dw_etl_run_items WHERE run_id = $1 AND status IN ('PENDING','RUNNING')`, runID)
			return pending == 0, nil
		}
		w, ok := workers[wid]
		if !ok || w.exited() {
			return false, nil
		}
		w.kill(t)
		kills++
		inWindow++
		caught = append(caught, key)
		t.Logf("killed %s: item %s had committed target rows while still RUNNING", wid, key)
		delete(workers, wid)
		spawn()
		return kills == maxKills, nil
	})
	t.Logf("%d kills inside the commit window (of at most %d) after %s", inWindow, maxKills, time.Since(start).Round(time.Millisecond))
	// The killed attempts' asynq tasks wait for asynq's recoverer (see TestFaultWorkerKilledMidItem).
	e.waitRun(runID, 210*time.Second)
	e.logAttempts(runID)
	e.checkInvariants(runID, runstate.StatusSuccess) // exact target rows per key, one SUCCESS attempt per item
	trulyInWindow := 0
	for _, key := range caught {
		// The kill lands a little after the observation, so the worker may still have recorded
		// the attempt; when it did not, the attempt was closed as lost and the item re-ran,
		// upserting the same rows over the committed ones.
		if e.count(`SELECT count(*) FROM dw_etl_run_attempts a JOIN dw_etl_run_items i USING (run_id, item_no)
			WHERE a.run_id = $1 AND i.params->>'key' = $2 AND a.status = 'FAILED' AND a.error_category = 'SYSTEM'`, runID, key) > 0 {
			trulyInWindow++
		}
		require.Equal(t, 1, e.count(`SELECT count(*) FROM dw_etl_run_attempts a JOIN dw_etl_run_items i USING (run_id, item_no)
			WHERE a.run_id = $1 AND i.params->>'key' = $2 AND a.status = 'SUCCESS'`, runID, key), "item %s: one SUCCESS attempt", key)
	}
	t.Logf("%d of %d observed items were killed before their attempt was recorded (target committed, record lost)",
		trulyInWindow, len(caught))
	require.Equal(t, 240, e.count(`SELECT count(DISTINCT key) FROM `+targetTable+` WHERE key LIKE 'tc%'`))
	require.Equal(t, 240*40, e.count(`SELECT count(*) FROM `+targetTable+` WHERE key LIKE 'tc%'`), "upserts are idempotent")
	if inWindow == 0 {
		t.Logf("the commit window was never observed; the run only checked the invariants")
	}
	t.Logf("elapsed %s", time.Since(start).Round(time.Millisecond))
}

func TestFaultTwoTriggersAtOnce(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := newEnvWith(t, envOpts{timeout: 10 * time.Second, overlap: "skip"})
	ctx := context.Background()
	st2, err := store.Connect(ctx, e.dbURL)
	require.NoError(t, err)
	t.Cleanup(st2.Close)
	enq2, err := enqueue.New(enqueue.Config{Store: st2, Redis: e.redisOpt(), Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { enq2.Close() })
	e.startWorker("w1")

	activeExclusive := func() int {
		return e.count(`SELECT count(*) FROM dw_etl_runs WHERE job_id = $1 AND exclusive AND status IN ('PENDING','RUNNING')`, jobID)
	}
	enqs := []*enqueue.Enqueuer{e.enq, enq2}
	const rounds = 20
	for round := range rounds {
		require.Zero(t, activeExclusive(), "round %d starts with no active run", round)
		ps := slowItems(fmt.Sprintf("r%d_", round), 2, 30, 10, 100) // ~0.3s per item
		req := enqueue.Request{JobID: jobID, Params: raws(t, ps)}
		release := make(chan struct{})
		var wg sync.WaitGroup
		results := make([]enqueue.Result, 2)
		errs := make([]error, 2)
		for i := range enqs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-release
				results[i], errs[i] = enqs[i].Trigger(ctx, req)
			}()
		}
		// Sample the invariant while both triggers race.
		stop := make(chan struct{})
		maxSeen := make(chan int, 1)
		go func() {
			m := 0
			for {
				var n int
				if err := st2.Pool().QueryRow(ctx, `SELECT count(*) FROM dw_etl_runs WHERE job_id = $1 AND exclusive
					AND status IN ('PENDING','RUNNING')`, jobID).Scan(&n); err == nil && n > m {
					m = n
				}
				select {
				case <-stop:
					maxSeen <- m
					return
				case <-time.After(time.Millisecond):
				}
			}
		}()
		close(release)
		wg.Wait()
		require.NoError(t, errs[0], "round %d trigger 0", round)
		require.NoError(t, errs[1], "round %d trigger 1", round)
		require.Equal(t, 1, activeExclusive(), "round %d: exactly one active exclusive run", round)
		close(stop)
		require.LessOrEqual(t, <-maxSeen, 1, "round %d: two active exclusive runs seen at once", round)

		var active, skipped enqueue.Result
		switch {
		case results[0].Skipped && !results[1].Skipped:
			active, skipped = results[1], results[0]
		case results[1].Skipped && !results[0].Skipped:
			active, skipped = results[0], results[1]
		default:
			t.Fatalf("round %d: want exactly one trigger skipped, got skipped=%v/%v runs %s/%s", round,
				results[0].Skipped, results[1].Skipped, results[0].Run.RunID, results[1].Run.RunID)
		}
		require.Equal(t, runstate.StatusSkipped, skipped.Run.Status)
		require.NotNil(t, skipped.Run.ErrorMessage)
		require.Contains(t, *skipped.Run.ErrorMessage, active.Run.RunID.String(), "round %d: skip reason names the active run", round)
		require.Equal(t, 2, active.Items)
		e.checkInvariants(skipped.Run.RunID, runstate.StatusSkipped)

		if round%2 == 0 {
			e.waitRun(active.Run.RunID, 30*time.Second)
			e.checkInvariants(active.Run.RunID, runstate.StatusSuccess)
		} else {
			_, err := ops.Cancel(ctx, e.st, e.enq.Dispatcher(), active.Run.RunID, "faults", "round "+fmt.Sprint(round))
			require.NoError(t, err)
			e.waitRun(active.Run.RunID, 30*time.Second)
			e.checkInvariants(active.Run.RunID, runstate.StatusCancelled)
		}
	}
	require.Equal(t, rounds, e.count(`SELECT count(*) FROM dw_etl_runs WHERE job_id = $1 AND status = 'SKIPPED'`, jobID))
	require.Equal(t, rounds, e.count(`SELECT count(*) FROM dw_etl_runs WHERE job_id = $1 AND status <> 'SKIPPED'`, jobID))
	t.Logf("elapsed %s", time.Since(start).Round(time.Millisecond))
}
