package faults_test

// Issue 8, "the ledger tells the truth under contention": attempts are recorded exactly once
// and no live worker is taken for lost, whatever the load, the database's hiccups, a frozen or
// partitioned worker, or a worker that dies at any step of an item.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/servertest"
)

// TestFaultLoadWithCPUHogs is issue 8's point 13: two workers of 8 slots with a 3 s lease run
// 12,000 no-op items while two CPU-bound processes compete for the machine. A live worker must
// never be taken for lost (max_attempts 1 would fail its item), and the ledger's statements
// must not deadlock each other.
func TestFaultLoadWithCPUHogs(t *testing.T) {
	t.Parallel()
	disruptive(t) // the hogs load the whole machine
	start := time.Now()
	e := newEnvWith(t, envOpts{timeout: 30 * time.Second, maxAttempts: 1, pg: servertest.PostgresOptions{Fsync: true}})
	hogs := servertest.Hog(t, 2)
	workers := []*workerProc{
		e.startWorker("w1", "ETL_CONCURRENCY=8", "ETL_LEASE=3s"),
		e.startWorker("w2", "ETL_CONCURRENCY=8", "ETL_LEASE=3s"),
	}
	const n = 12000
	trig := time.Now()
	runID := e.trigger(noopItems("load", n), false)
	run := e.waitRun(runID, 300*time.Second)
	took := time.Since(trig)
	// Stopped workers' backends have flushed their statistics (deadlocks included).
	for _, w := range workers {
		w.signal(t, syscall.SIGTERM)
	}
	for _, w := range workers {
		w.waitExit(t, 30*time.Second)
	}
	lost := e.lostAttempts(runID)
	deadlocks := e.count(`SELECT coalesce(sum(deadlocks), 0)::int FROM pg_stat_database`)
	logged := strings.Count(e.pg.Log(), "deadlock detected")
	t.Logf("%d no-op items, 2 workers x 8, lease 3s, 2 CPU hogs (%s of CPU): run %s in %s (%.0f items/s), %d attempts",
		n, hogs.CPUTime().Round(time.Millisecond), run.Status, took.Round(time.Millisecond), float64(n)/took.Seconds(), run.AttemptCount)
	t.Logf("false \"worker lost\" attempts: %d; deadlocks: %d in pg_stat_database, %d in the server log", lost, deadlocks, logged)
	e.logAttempts(runID)
	require.Zero(t, lost, "live workers' attempts closed as \"worker lost\" under load")
	require.Zero(t, deadlocks, "deadlocks in pg_stat_database")
	require.Zero(t, logged, "deadlocks in the server log")
	e.checkInvariants(runID, runstate.StatusSuccess)
	require.EqualValues(t, n, run.AttemptCount, "exactly one attempt per item")
	t.Logf("elapsed %s", time.Since(start).Round(time.Millisecond))
}

// transientItems are n items of two 25 ms pages that write to the target: about 320 items/s on
// 16 slots, so the run spans the whole fault.
func transientItems(prefix string, n int) []p { return slowItems(prefix, n, 2, 1, 25) }

// TestFaultPostgresBackendsTerminated terminates the workers' database sessions every few
// hundred milliseconds for ten seconds mid-run. Every lost connection is a transient error to
// ride out: with max_attempts 1, an item that pays for one with an attempt fails the run. The
// item timeout is well above the storm's length: an item must ride it out within its attempt,
// not run into its own timeout on a loaded machine (a timeout is a real failure).
func TestFaultPostgresBackendsTerminated(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := newEnvWith(t, envOpts{timeout: 60 * time.Second, maxAttempts: 1})
	e.startWorker("w1")
	e.startWorker("w2")
	const n = 3000
	runID := e.trigger(transientItems("term", n), false)
	e.waitFor("50 items SUCCESS", 30*time.Second, func() bool { return e.succeededTolerant(runID) >= 50 })

	ctx := context.Background()
	terminated, rounds := 0, 0
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); <-tick.C {
		if _, done := e.runStatus(runID); done {
			break
		}
		pids, err := e.workerBackends(ctx)
		if err != nil {
			continue // all just terminated, or reconnecting
		}
		var n int
		if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int FROM unnest($1::int[]) pid`,
			pids).Scan(&n); err == nil {
			terminated += n
			rounds++
		}
	}
	mid := e.succeededTolerant(runID)
	t.Logf("terminated %d worker sessions in %d rounds; %d/%d items SUCCESS when the storm ended", terminated, rounds, mid, n)
	require.Greater(t, terminated, 0, "no worker session was terminated: the fault did not happen")
	require.Less(t, mid, n, "the storm must end mid-run")

	run := e.waitRun(runID, 180*time.Second)
	e.logAttempts(runID)
	e.checkInvariants(runID, runstate.StatusSuccess)
	require.EqualValues(t, n, run.AttemptCount, "one attempt per item: a dropped connection is not the item's failure")
	t.Logf("elapsed %s", time.Since(start).Round(time.Millisecond))
}

// holdConnections opens sessions to the private server until it refuses one with "too many
// clients" (53300), then closes free of them again, so that only free slots remain for
// everybody else. The held sessions are closed when the test ends or by the returned release.
func (e *env) holdConnections(free int) (held int, release func()) {
	e.t.Helper()
	var conns []*pgx.Conn
	release = func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
		conns = nil
	}
	e.t.Cleanup(release)
	for range 1000 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := pgx.Connect(ctx, e.pg.URL("postgres")+"&application_name="+harnessApp+"-hold")
		cancel()
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "53300" {
			require.GreaterOrEqual(e.t, len(conns), free, "fewer slots than the %d to leave free", free)
			for _, c := range conns[:free] {
				_ = c.Close(context.Background())
			}
			conns = conns[free:]
			return len(conns), release
		}
		require.NoError(e.t, err, "open a session to hold")
		conns = append(conns, c)
	}
	e.t.Fatalf("the server took 1000 sessions without refusing one")
	return 0, nil
}

// TestFaultPostgresTooManyClients runs workers against a server whose slots are nearly all
// held by idle sessions: the workers' pools cannot grow and new connections are refused with
// "too many clients". That is a transient error: the run succeeds with one attempt per item
// (the item timeout leaves room to wait for a slot on a loaded machine).
func TestFaultPostgresTooManyClients(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := newEnvWith(t, envOpts{timeout: 60 * time.Second, maxAttempts: 1, pg: servertest.PostgresOptions{
		MaxConnections: 40, Settings: map[string]string{"superuser_reserved_connections": "0"},
	}})
	insp := e.inspector()
	require.NoError(t, insp.PauseQueue(e.queue)) // nothing runs until the slots are taken
	w1, w2 := e.startWorker("w1"), e.startWorker("w2")
	e.waitLog(w1, "worker starting", 30*time.Second)
	e.waitLog(w2, "worker starting", 30*time.Second)
	const n = 500
	runID := e.trigger(transientItems("full", n), false)
	refusedBefore := strings.Count(e.pg.Log(), "too many clients")
	const free = 4
	held, release := e.holdConnections(free)
	pids, err := e.workerBackends(context.Background())
	require.NoError(t, err)
	t.Logf("holding %d idle sessions of max_connections 40; the workers have %d; %d slots left", held, len(pids), free)
	require.NoError(t, insp.UnpauseQueue(e.queue))

	var status runstate.Status
	err = servertest.Poll(90*time.Second, 0, func() (bool, error) {
		r, done := e.runStatus(runID)
		status = r.Status
		return done, nil
	})
	refused := strings.Count(e.pg.Log(), "too many clients") - refusedBefore - 1 // -1: the one that told holdConnections to stop
	if pids, err := e.workerBackends(context.Background()); err == nil {
		t.Logf("the workers held %d sessions at the end", len(pids))
	}
	release()
	t.Logf("the server refused %d worker connections with \"too many clients\"", refused)
	if err != nil {
		e.logItems(runID)
		e.logAttempts(runID)
	}
	require.NoError(t, err, "run not terminal (%s)", status)
	require.Greater(t, refused, 0, "no worker connection was refused: the fault did not happen")
	r := e.waitRun(runID, 10*time.Second)
	e.logAttempts(runID)
	e.checkInvariants(runID, runstate.StatusSuccess)
	require.EqualValues(t, n, r.AttemptCount, "one attempt per item: a refused connection is not the item's failure")
	t.Logf("elapsed %s", time.Since(start).Round(time.Millisecond))
}

// Lease and reconcile interval of the frozen/partitioned worker scenarios.
const (
	shortLease        = 3 * time.Second
	shortReconcile    = 2 * time.Second
	leaderMsg         = "reconciler is the leader"
	workerStartingMsg = "worker starting"
)

func shortLeaseEnv(extra ...string) []string {
	return append([]string{"ETL_LEASE=" + shortLease.String(), "ETL_RECONCILE_INTERVAL=" + shortReconcile.String()}, extra...)
}

// snapshot is what a frozen worker's return must not change.
type snapshot struct {
	attempts []string
	items    []string
	rows     int
}

func (e *env) snapshot(ctx context.Context, runID uuid.UUID) snapshot {
	e.t.Helper()
	var s snapshot
	collect := func(db interface {
		Query(context.Context, string, ...any) (pgx.Rows, error)
	}, sql string, args ...any) []string {
		rows, err := db.Query(ctx, sql, args...)
		require.NoError(e.t, err)
		defer rows.Close()
		var out []string
		for rows.Next() {
			var v string
			require.NoError(e.t, rows.Scan(&v))
			out = append(out, v)
		}
		require.NoError(e.t, rows.Err())
		return out
	}
	s.attempts = collect(e.st.Pool(), `SELECT concat_ws(' ', attempt_id, item_no, item_attempt, status, error_message, ended_at, records_written)
		FROM dw_etl_run_attempts WHERE run_id = $1 ORDER BY attempt_id`, runID)
	s.items = collect(e.st.Pool(), `SELECT concat_ws(' ', item_no, status, attempts, current_attempt_id, ended_at)
		FROM dw_etl_run_items WHERE run_id = $1 ORDER BY item_no`, runID)
	require.NoError(e.t, e.target.QueryRow(ctx, `SELECT count(*) FROM `+e.targetTable).Scan(&s.rows))
	return s
}

// TestFaultFrozenWorker SIGSTOPs a worker that holds items mid-way. Another worker (the
// reconciler's leader) must finish every item while the frozen one is still stopped, within
// lease + reconcile interval + a bound for running the items again; when the frozen worker
// resumes, nothing it does may change the record or the target (append mode: a second commit
// of an item's rows would show as duplicates).
func TestFaultFrozenWorker(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := newEnvWith(t, envOpts{timeout: 60 * time.Second, appendRows: true})
	b := e.startWorker("B", shortLeaseEnv()...)
	e.waitLog(b, leaderMsg, 30*time.Second)
	a := e.startWorker("A", shortLeaseEnv("ETL_SHUTDOWN_TIMEOUT=30s")...)
	e.waitServing(a, b)
	// 16 items of 4 pages x 1 s over 16 slots.
	runID := e.trigger(appending(slowItems("frozen", 16, 4, 1, 1000)), false)
	e.waitFor("A running 3 items", 30*time.Second, func() bool { return e.attemptsOn(runID, "A", "RUNNING") >= 3 })
	a.signal(t, syscall.SIGSTOP)
	stopped := time.Now()
	ctx := context.Background()
	stoppedDB, err := e.st.Now(ctx)
	require.NoError(t, err)
	held := e.attemptsOn(runID, "A", "RUNNING")

	// Lease and reconcile interval to notice, then A's items (4 s each) again on B's 8 slots:
	// about 9 s; the rest is for a loaded machine. That bound holds for the items A had
	// claimed (checked below). A delivery A had taken from Redis but not yet claimed when it
	// froze is in no ledger row; asynq itself hands it back once its lease lapses (30 s) and
	// its recoverer passes (every minute), so the run's end may wait for that.
	bound := shortLease + shortReconcile + 20*time.Second
	const asynqRecovery = 30*time.Second + time.Minute
	err = servertest.Poll(bound+asynqRecovery, 0, func() (bool, error) {
		_, done := e.runStatus(runID)
		return done, nil
	})
	// How long A's items took to be taken from it, run again and finished, from the stop.
	var closed, retried, finished float64
	_ = e.st.Pool().QueryRow(ctx, `SELECT coalesce(max(extract(epoch FROM a.ended_at - $2)), 0),
		coalesce(max(extract(epoch FROM b.started_at - $2)), 0), coalesce(max(extract(epoch FROM b.ended_at - $2)), 0)
		FROM dw_etl_run_attempts a JOIN dw_etl_run_attempts b ON b.run_id = a.run_id AND b.item_no = a.item_no AND b.status = 'SUCCESS'
		WHERE a.run_id = $1 AND a.worker_id = 'A' AND a.started_at < $2`, runID, stoppedDB).Scan(&closed, &retried, &finished)
	t.Logf("A's %d items, from the stop: last one taken from A after %.1fs, last retry started after %.1fs, last one done after %.1fs",
		held, closed, retried, finished)
	if err != nil {
		e.logItems(runID)
		e.logAttempts(runID)
		e.logSessions()
		t.Fatalf("with A (holding %d items) stopped, the run did not end within %s (lease %s + reconcile %s + 20s + asynq's recovery %s): %v",
			held, bound+asynqRecovery, shortLease, shortReconcile, asynqRecovery, err)
	}
	require.LessOrEqual(t, finished, bound.Seconds(), "the items A held were not run again within lease + reconcile + 20s")
	t.Logf("A stopped holding %d items; the run ended %s later", held, time.Since(stopped).Round(time.Millisecond))
	before := e.snapshot(ctx, runID)
	e.checkInvariants(runID, runstate.StatusSuccess)

	// A resumes: its handlers finish their pages and try to record; then it shuts down.
	a.signal(t, syscall.SIGCONT)
	a.signal(t, syscall.SIGTERM)
	a.waitExit(t, 60*time.Second)
	after := e.snapshot(ctx, runID)
	require.Equal(t, before, after, "the resumed worker changed the record or the target")
	e.checkInvariants(runID, runstate.StatusSuccess)
	t.Logf("elapsed %s", time.Since(start).Round(time.Millisecond))
}

// TestFaultLeaderTakeover stops the reconciler's leader, frozen (SIGSTOP) or cut off from
// Postgres (its sessions go through a proxy that stops forwarding, sockets open, as in a
// network partition), and starts another worker: the newcomer must become the leader within
// two leases and a reconcile interval.
func TestFaultLeaderTakeover(t *testing.T) {
	t.Parallel()
	for _, variant := range []string{"frozen", "cut"} {
		t.Run(variant, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, 10*time.Second)
			aURL := e.dbURL
			var proxy *servertest.Proxy
			if variant == "cut" {
				proxy = servertest.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", e.pg.Port()))
				aURL = fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", proxy.Addr(), etlexecDB)
			}
			a := e.startWorker("A", shortLeaseEnv("DATABASE_URL="+aURL)...)
			e.waitLog(a, leaderMsg, 30*time.Second)
			faultAt := time.Now()
			if variant == "frozen" {
				a.signal(t, syscall.SIGSTOP)
			} else {
				proxy.Cut()
				t.Logf("cut %s", proxy)
			}
			b := e.startWorker("B", shortLeaseEnv()...)
			// The bound runs from B's start: starting a process on a loaded machine is not the
			// takeover's cost.
			bStarted := e.waitLog(b, workerStartingMsg, 30*time.Second)
			bound := 2*shortLease + shortReconcile
			err := servertest.Poll(bound, 0, func() (bool, error) { return b.logged(leaderMsg), nil })
			took := time.Since(bStarted)
			if err != nil {
				t.Fatalf("B was not the leader %s after its start, A %s (bound 2 x lease %s + reconcile %s = %s)",
					took.Round(time.Millisecond), variant, shortLease, shortReconcile, bound)
			}
			t.Logf("takeover from a %s leader: B the leader %s after its start, %s after the fault (bound %s)",
				variant, took.Round(time.Millisecond), time.Since(faultAt).Round(time.Millisecond), bound)
		})
	}
}

// TestFaultLeaseMismatch runs long items on a worker with a 60 s lease while the reconciler's
// leader has a 3 s lease: an attempt's liveness must be judged by its own worker's lease, so
// no attempt may be closed "worker lost".
func TestFaultLeaseMismatch(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := newEnv(t, 60*time.Second)
	// B consumes another queue: it only leads the reconciler.
	b := e.startWorker("B", "ETL_LEASE=3s", "ETL_QUEUES=idle_"+e.queue)
	e.waitLog(b, leaderMsg, 30*time.Second)
	e.startWorker("A", "ETL_LEASE=60s", "ETL_CONCURRENCY=4")
	const n = 4
	runID := e.trigger(slowItems("lease", n, 4, 1, 2500), false) // 4 pages x 2.5 s = 10 s per item
	var lost int
	e.waitFor("the run to end (or an attempt closed as lost)", 90*time.Second, func() bool {
		lost = e.lostAttempts(runID)
		_, done := e.runStatus(runID)
		return done || lost > 0
	})
	e.logAttempts(runID)
	require.Zero(t, lost, "B's reconciler (lease 3s) closed attempts of A (lease 60s) as \"worker lost\"")
	run := e.waitRun(runID, 30*time.Second)
	e.checkInvariants(runID, runstate.StatusSuccess)
	require.EqualValues(t, n, run.AttemptCount, "one attempt per item")
	t.Logf("elapsed %s", time.Since(start).Round(time.Millisecond))
}

// TestFaultPoisonItemCrashesWorker runs an item whose handler kills its own worker process (as
// an OOM kill would) beside healthy ones, restarting dead workers. The poison item must end
// FAILED as a suspect, and the healthy items, killed beside it, must still succeed.
func TestFaultPoisonItemCrashesWorker(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := newEnvWith(t, envOpts{timeout: 30 * time.Second, maxAttempts: 3})
	ps := append([]p{{"key": "poison", "records": 1, "crash": true}}, slowItems("healthy", 3, 4, 1, 750)...) // 3 s each
	next := 0
	spawn := func() *workerProc {
		next++
		return e.startWorker(fmt.Sprintf("w%d", next), "ETL_CONCURRENCY=4")
	}
	w := spawn()
	runID := e.trigger(ps, false)
	const maxRestarts = 10
	restarts := 0
	err := servertest.Poll(180*time.Second, 100*time.Millisecond, func() (bool, error) {
		if w.exited() {
			if restarts == maxRestarts {
				return false, fmt.Errorf("worker died %d times", restarts+1)
			}
			restarts++
			w = spawn()
		}
		_, done := e.runStatus(runID)
		return done, nil
	})
	t.Logf("workers restarted %d times", restarts)
	if err != nil {
		e.logItems(runID)
		e.logAttempts(runID)
		t.Fatalf("run not terminal: %v", err)
	}
	e.logAttempts(runID)
	var status, msg string
	require.NoError(t, e.st.Pool().QueryRow(context.Background(), `SELECT status, coalesce(error_message, '')
		FROM dw_etl_run_items WHERE run_id = $1 AND params->>'key' = 'poison'`, runID).Scan(&status, &msg))
	t.Logf("poison item: %s %q", status, msg)
	require.Equal(t, 3, e.count(`SELECT count(*) FROM dw_etl_run_items WHERE run_id = $1 AND params->>'key' LIKE 'healthy%' AND status = 'SUCCESS'`, runID),
		"the healthy items killed beside the poison one succeed")
	require.Equal(t, "FAILED", status)
	require.Contains(t, msg, "suspect", "the poison item's error says it is the suspect of its workers' deaths")
	e.checkInvariants(runID, runstate.StatusPartialSuccess)
	require.Greater(t, restarts, 0, "the poison item never killed a worker")
	t.Logf("elapsed %s", time.Since(start).Round(time.Millisecond))
}

// failpoints are the ETL_FAILPOINT points: where a worker can die in an item's life.
var failpoints = []string{"claimed", "handled", "target-committed", "recorded"}

// TestFaultKillAtEveryPoint kills a worker (ETL_FAILPOINT=<point>@3: it SIGKILLs itself the
// third time it reaches the point) at every step of an item, writing to etlexec's own database
// and to a foreign one, and restarts it without the failpoint. The run must succeed with the
// target holding exactly one set of rows per item (append mode: nothing absorbs a double
// write).
func TestFaultKillAtEveryPoint(t *testing.T) {
	t.Parallel()
	for _, point := range failpoints {
		for _, target := range []string{"own", "foreign"} {
			t.Run(point+"/"+target, func(t *testing.T) {
				t.Parallel()
				e := newEnvWith(t, envOpts{timeout: 20 * time.Second, appendRows: true, foreign: target == "foreign"})
				failpoint := point + "@3"
				w1 := e.startWorker("w1", "ETL_FAILPOINT="+failpoint)
				runID := e.trigger(appending(slowItems("fp", 20, 30, 10, 20)), false) // 3 pages x 20 ms
				e.waitFor("w1 to die at its failpoint (or the run to end)", 60*time.Second, func() bool {
					_, done := e.runStatus(runID)
					return w1.exited() || done
				})
				require.True(t, w1.exited(), "ETL_FAILPOINT=%s never fired: the run ended with its worker alive", failpoint)
				require.True(t, w1.killedBy(syscall.SIGKILL), "w1 ended with %v, want SIGKILL from ETL_FAILPOINT=%s", w1.err, failpoint)
				t.Logf("w1 died at %s: %v", failpoint, w1.err)
				e.startWorker("w2")
				e.waitRun(runID, 120*time.Second)
				e.logAttempts(runID)
				e.checkInvariants(runID, runstate.StatusSuccess) // exactly the expected rows per key in the target
				if point == "handled" {
					// The handler ran, nothing was committed: the attempt is still a row, closed lost.
					require.GreaterOrEqual(t, e.count(`SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1 AND worker_id = 'w1'
						AND status = 'FAILED' AND error_message = 'worker lost'`, runID), 1, "the attempt killed after its handler returned")
				}
			})
		}
	}
}
