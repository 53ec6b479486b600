package faults_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/kinds/synthetic"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/servertest"
	"github.com/etlexec/etlexec/internal/store"
)

// heavy serialises the tests that disturb the whole machine (a private Postgres restarting
// with fsync on, SIGKILL storms, CPU hogs) with the load-sensitive ones: with ETL_LEASE=3s on
// a small machine, TestFaultTenThousandItems missed heartbeats while another test's Postgres
// restarted (reproduced: 10009 attempts for 10000 items), and its lost attempts then waited
// for asynq's default retry delay.
var heavy sync.RWMutex

// disruptive marks a test that must not overlap the load-sensitive ones; call after t.Parallel.
func disruptive(t *testing.T) {
	heavy.Lock()
	t.Cleanup(heavy.Unlock)
}

// loadSensitive marks a test that must not overlap the disruptive ones; call after t.Parallel.
func loadSensitive(t *testing.T) {
	heavy.RLock()
	t.Cleanup(heavy.RUnlock)
}

// workerBin and enqueuerBin are built once per test process.
var workerBin, enqueuerBin string

// parallelDefault replaces go test's default -parallel (GOMAXPROCS, 2 on the development
// machine): these tests spend most of their time waiting on leases, reconcile passes and
// restarts, not on CPU, and a test waiting for the heavy lock holds its slot, so with 2 slots
// one long load-sensitive test could leave the whole package waiting behind it. The heavy
// lock, not -parallel, keeps the load-sensitive tests apart from the disruptive ones.
const parallelDefault = "8"

func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", parallelDefault)
	}
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "etlexec-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		defer servertest.RemoveTemplates()
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			fmt.Fprintln(os.Stderr, "go env GOMOD:", err)
			return 1
		}
		root := filepath.Dir(strings.TrimSpace(string(gomod)))
		workerBin = filepath.Join(dir, "worker")
		enqueuerBin = filepath.Join(dir, "enqueuer")
		build := exec.Command("go", "build", "-o", dir+"/", "./cmd/worker", "./cmd/enqueuer")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build worker and enqueuer: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

const (
	jobID = "fault_job"
	// targetTable is the upsert target; appendTable the append-mode one (duplicates kept).
	targetTable = "fault_target"
	appendTable = "fault_append"
	// etlexecDB is etlexec's database on each private server; foreignDB is another database
	// there, reached by jobs through targetURLEnv.
	etlexecDB    = "etlexec"
	foreignDB    = "foreign"
	targetURLEnv = "ETL_FAULT_TARGET_URL"
	// harnessApp is the application_name of the test's own sessions, which fault injection
	// must spare.
	harnessApp = "faults-harness"
	// synthetic's default base and step: row i has modified_at = base + i*60s.
	syntheticBase = "2026-01-01T00:00:00Z"
	syntheticStep = 60 * time.Second
)

// migrated is the private servers' template: etlexec's database migrated, and an empty
// foreign one. It is prepared once per test process.
var migrated = servertest.PostgresOptions{Template: "etlexec-migrated", Prepare: func(ctx context.Context, s *servertest.PostgresServer) error {
	for _, db := range []string{etlexecDB, foreignDB} {
		if err := s.CreateDatabase(ctx, db); err != nil {
			return err
		}
	}
	return dbtest.Migrate(ctx, s.URL(etlexecDB))
}}

// env is one fault scenario: a private Postgres and a private Redis of its own.
type env struct {
	t     *testing.T
	pg    *servertest.PostgresServer
	redis *servertest.RedisServer
	dbURL string       // etlexec's database as the workers reach it
	st    *store.Store // the harness's own sessions
	queue string
	enq   *enqueue.Enqueuer
	// target is where the job writes (st's database or the foreign one), targetTable the table.
	target      *pgxpool.Pool
	targetTable string
	foreignURL  string // set when the job writes to foreignDB
	// lease is the workers' ETL_LEASE: short (3 s) so kill faults recover fast; tests without
	// kills may lengthen it so a loaded machine's late heartbeat is not taken for a lost worker.
	lease time.Duration
}

// envOpts tunes newEnvWith; zero values keep newEnv's defaults.
type envOpts struct {
	timeout     time.Duration
	overlap     string // "" = allow
	maxAttempts int32  // 0 = 3
	// pg configures the private Postgres (its Template is always migrated's).
	pg servertest.PostgresOptions
	// appendRows makes the job's target appendTable: items carry append: true and a double
	// write shows as duplicate rows.
	appendRows bool
	// foreign makes the job write to foreignDB through target_url_env.
	foreign bool
}

func newEnv(t *testing.T, timeout time.Duration) *env {
	t.Helper()
	return newEnvWith(t, envOpts{timeout: timeout})
}

func newEnvWith(t *testing.T, o envOpts) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("fault tests start processes and private servers; skipped with -short")
	}
	if o.overlap == "" {
		o.overlap = "allow"
	}
	if o.maxAttempts == 0 {
		o.maxAttempts = 3
	}
	o.pg.Template, o.pg.Prepare = migrated.Template, migrated.Prepare
	ctx := context.Background()
	e := &env{t: t, pg: servertest.Postgres(t, o.pg), redis: servertest.Redis(t, servertest.RedisOptions{})}
	e.dbURL = e.pg.URL(etlexecDB)
	st, err := store.Connect(ctx, e.dbURL+"&application_name="+harnessApp)
	require.NoError(t, err)
	t.Cleanup(st.Close)
	e.st = st
	e.target, e.targetTable = st.Pool(), targetTable
	if o.appendRows {
		e.targetTable = appendTable
	}
	cfg := map[string]string{"target_table": e.targetTable}
	if o.foreign {
		e.foreignURL = e.pg.URL(foreignDB)
		cfg["target_url_env"] = targetURLEnv
		e.target, err = pgxpool.New(ctx, e.foreignURL+"&application_name="+harnessApp)
		require.NoError(t, err)
		t.Cleanup(e.target.Close)
	}
	// The target exists before the run, as a deployed pipeline's does: items that create it
	// serialise on the kind's advisory lock for as long as the first creator's item runs.
	_, err = e.target.Exec(ctx, synthetic.TargetDDL(pgx.Identifier{e.targetTable}.Sanitize(), o.appendRows))
	require.NoError(t, err)
	e.queue = "fq_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	e.enq, err = enqueue.New(enqueue.Config{Store: st, Redis: e.redisOpt(), Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { e.enq.Close() })
	cfgJSON, err := json.Marshal(cfg)
	require.NoError(t, err)
	_, err = st.UpsertJobs(ctx, []store.JobSpec{{
		JobID: jobID, Kind: "synthetic", SupportsParams: true, SupportsIncremental: true,
		Strategy: "modified_date", CursorPolicy: "run", Config: cfgJSON, OverlapPolicy: o.overlap,
		Queue: e.queue, MaxAttempts: o.maxAttempts, TimeoutMs: o.timeout.Milliseconds(), RetentionMs: 60000, Enabled: true,
	}})
	require.NoError(t, err)
	return e
}

func (e *env) redisOpt() asynq.RedisClientOpt { return asynq.RedisClientOpt{Addr: e.redis.Addr()} }

func (e *env) inspector() *asynq.Inspector {
	insp := asynq.NewInspector(e.redisOpt())
	e.t.Cleanup(func() { insp.Close() })
	return insp
}

func (e *env) flushRedis() {
	e.t.Helper()
	require.NoError(e.t, e.redis.FlushAll())
	e.t.Logf("FLUSHALL on private redis %s", e.redis.Addr())
}

// processEnv is the environment of a worker or enqueuer process: ours without anything that
// could point it elsewhere (DATABASE_URL, REDIS_URL, ETL_*), then the scenario's, then extra
// (later entries win).
func (e *env) processEnv(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "DATABASE_URL" || k == "REDIS_URL" || strings.HasPrefix(k, "ETL_") {
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "DATABASE_URL="+e.dbURL, "REDIS_URL="+e.redis.URL())
	if e.foreignURL != "" {
		out = append(out, targetURLEnv+"="+e.foreignURL)
	}
	return append(out, extra...)
}

// workerProc is one worker process.
type workerProc struct {
	id      string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// startWorker starts a worker process; extra are environment overrides ("ETL_LEASE=60s").
func (e *env) startWorker(id string, extra ...string) *workerProc {
	e.t.Helper()
	return e.startProc(id, workerBin, nil, append([]string{
		"ETL_QUEUES=" + e.queue,
		"ETL_CONCURRENCY=8",
		// Two claimed ahead: the first worker up must not take every item of a small run.
		"ETL_PREFETCH=2",
		"ETL_SHUTDOWN_TIMEOUT=2s",
		"ETL_LEASE=" + e.leaseOrDefault().String(),
		"ETL_RECONCILE_INTERVAL=1s",
		"ETL_HTTP_ADDR=",
		"ETL_WORKER_ID=" + id,
	}, extra...)...)
}

// startProc starts bin with args in the scenario's environment plus extra, its output in a
// file; it is killed when the test ends.
func (e *env) startProc(id, bin string, args []string, extra ...string) *workerProc {
	t := e.t
	t.Helper()
	logPath := filepath.Join(t.TempDir(), id+".log")
	f, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(bin, args...)
	cmd.Env = e.processEnv(extra...)
	cmd.Stdout, cmd.Stderr = f, f
	require.NoError(t, cmd.Start())
	w := &workerProc{id: id, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { w.err = cmd.Wait(); f.Close(); close(w.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT) // a frozen process cannot die
		_ = cmd.Process.Kill()
		<-w.done
		if t.Failed() || os.Getenv("FAULTS_LOGS") != "" {
			t.Logf("---- %s output ----\n%s", id, servertest.Tail(w.log(), 200))
		}
	})
	return w
}

// runProc runs bin with args to its end (at most within) and returns its output and exit error.
func (e *env) runProc(id, bin string, args []string, within time.Duration, extra ...string) (string, error) {
	e.t.Helper()
	w := e.startProc(id, bin, args, extra...)
	w.waitExit(e.t, within)
	return w.log(), w.err
}

func (w *workerProc) log() string {
	b, _ := os.ReadFile(w.logPath)
	return string(b)
}

// logged reports whether the process's output contains s.
func (w *workerProc) logged(s string) bool { return strings.Contains(w.log(), s) }

// exited reports whether the process has ended.
func (w *workerProc) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// killedBy reports whether the process ended by signal sig.
func (w *workerProc) killedBy(sig syscall.Signal) bool {
	if !w.exited() || w.cmd.ProcessState == nil {
		return false
	}
	ws, ok := w.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

func (w *workerProc) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGKILL))
	<-w.done
	t.Logf("SIGKILLed worker %s", w.id)
}

func (w *workerProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, w.cmd.Process.Signal(sig), "signal %v to worker %s", sig, w.id)
	t.Logf("%v to worker %s", sig, w.id)
}

// waitExit waits for the process to end.
func (w *workerProc) waitExit(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(within):
		t.Fatalf("worker %s did not exit within %s", w.id, within)
	}
}

// serving reports whether w's asynq server has registered in Redis.
func (e *env) serving(insp *asynq.Inspector, w *workerProc) bool {
	servers, err := insp.Servers()
	if err != nil {
		return false
	}
	for _, s := range servers {
		if s.PID == w.cmd.Process.Pid {
			return true
		}
	}
	return false
}

// waitServing waits until every one of ws serves (its asynq server registered in Redis), so
// that a run triggered next is shared between them: a worker slow to start on a loaded machine
// would otherwise find the run already taken by the others.
func (e *env) waitServing(ws ...*workerProc) {
	e.t.Helper()
	insp := e.inspector()
	for _, w := range ws {
		e.waitFor("worker "+w.id+" to serve", 30*time.Second, func() bool { return e.serving(insp, w) })
	}
}

// waitLog waits until the worker's output contains s and returns when that was seen.
func (e *env) waitLog(w *workerProc, s string, within time.Duration) time.Time {
	e.t.Helper()
	e.waitFor(fmt.Sprintf("worker %s to log %q", w.id, s), within, func() bool { return w.logged(s) })
	return time.Now()
}

// logMark is how much of a worker's output existed at some moment.
type logMark struct {
	w   *workerProc
	off int
}

// logMarks notes how far each worker's output goes now.
func (e *env) logMarks(ws []*workerProc) []logMark {
	out := make([]logMark, len(ws))
	for i, w := range ws {
		out[i] = logMark{w: w, off: len(w.log())}
	}
	return out
}

// waitNoticed waits until every worker has written s since its mark: the event that tells a
// fault has reached each of them.
func (e *env) waitNoticed(marks []logMark, s string, within time.Duration) {
	e.t.Helper()
	began := time.Now()
	e.waitFor(fmt.Sprintf("every worker to log %q", s), within, func() bool {
		for _, m := range marks {
			if !strings.Contains(m.w.log()[m.off:], s) {
				return false
			}
		}
		return true
	})
	e.t.Logf("every worker logged %q %s after the fault", s, time.Since(began).Round(time.Millisecond))
}

// p is one synthetic item's params.
type p map[string]any

// slowItems are n items of `records` rows each, one page per pageMS.
func slowItems(prefix string, n, records, pageSize, pageMS int) []p {
	out := make([]p, n)
	for i := range out {
		out[i] = p{"key": fmt.Sprintf("%s%d", prefix, i), "records": records, "page_size": pageSize, "page_latency_ms": pageMS}
	}
	return out
}

// noopItems are n no-op items.
func noopItems(prefix string, n int) []p {
	out := make([]p, n)
	for i := range out {
		out[i] = p{"noop": true, "key": fmt.Sprintf("%s%d", prefix, i)}
	}
	return out
}

// appending marks every item append: true.
func appending(ps []p) []p {
	for _, v := range ps {
		v["append"] = true
	}
	return ps
}

func raws(t *testing.T, ps []p) []json.RawMessage {
	out := make([]json.RawMessage, len(ps))
	for i, v := range ps {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		out[i] = b
	}
	return out
}

func (e *env) trigger(ps []p, dry bool) uuid.UUID {
	e.t.Helper()
	res, err := e.enq.Trigger(context.Background(), enqueue.Request{JobID: jobID, Params: raws(e.t, ps), DryRun: dry})
	require.NoError(e.t, err)
	require.Equal(e.t, len(ps), res.Items)
	return res.Run.RunID
}

// waitFor polls cond until it is true, failing the test after within.
func (e *env) waitFor(what string, within time.Duration, cond func() bool) {
	e.t.Helper()
	if err := servertest.Poll(within, 0, func() (bool, error) { return cond(), nil }); err != nil {
		e.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// tryCount runs a count query without failing the test: the database may be unreachable.
func (e *env) tryCount(sql string, args ...any) (int, error) {
	var n int
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := e.st.Pool().QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	n, err := e.tryCount(sql, args...)
	require.NoError(e.t, err, sql)
	return n
}

// runStatus is the run's status, "" when the database does not answer.
func (e *env) runStatus(runID uuid.UUID) (store.Run, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	run, err := e.st.GetRun(ctx, runID)
	if err != nil {
		return store.Run{}, false
	}
	return run, run.Status.Terminal()
}

// waitRun waits for the run to be terminal; the database may be unreachable for a while. On
// timeout it logs the items and attempts before failing.
func (e *env) waitRun(runID uuid.UUID, within time.Duration) store.Run {
	e.t.Helper()
	var run store.Run
	err := servertest.Poll(within, 0, func() (bool, error) {
		r, done := e.runStatus(runID)
		run = r
		return done, nil
	})
	if err != nil {
		e.logItems(runID)
		e.logAttempts(runID)
		e.logSessions()
		e.t.Fatalf("run %s not terminal (%s, %d/%d items succeeded): %v", runID, run.Status, run.ItemsSucceeded, run.ItemCount, err)
	}
	return run
}

// checkInvariants asserts what must hold in Postgres after any fault, once the run is terminal.
func (e *env) checkInvariants(runID uuid.UUID, wantStatus runstate.Status) store.Run {
	t := e.t
	t.Helper()
	ctx := context.Background()
	run, err := e.st.GetRun(ctx, runID)
	require.NoError(t, err)
	require.Equal(t, wantStatus, run.Status, "run status")
	require.NotNil(t, run.EndedAt, "terminal run has ended_at")

	// Every item terminal; run counts equal item counts by status.
	byStatus := map[string]int32{}
	rows, err := e.st.Pool().Query(ctx, `SELECT status, count(*) FROM dw_etl_run_items WHERE run_id = $1 GROUP BY status`, runID)
	require.NoError(t, err)
	var total int32
	for rows.Next() {
		var s string
		var n int32
		require.NoError(t, rows.Scan(&s, &n))
		byStatus[s] = n
		total += n
	}
	require.NoError(t, rows.Err())
	rows.Close()
	require.Zero(t, byStatus["PENDING"]+byStatus["RUNNING"], "items left open: %v", byStatus)
	require.Equal(t, run.ItemCount, total, "item_count")
	require.Equal(t, byStatus["SUCCESS"], run.ItemsSucceeded, "items_succeeded %v", byStatus)
	require.Equal(t, byStatus["FAILED"], run.ItemsFailed, "items_failed %v", byStatus)
	require.Equal(t, byStatus["SKIPPED"], run.ItemsSkipped, "items_skipped %v", byStatus)
	require.Equal(t, byStatus["CANCELLED"], run.ItemsCancelled, "items_cancelled %v", byStatus)

	// No attempt left running; the run's attempt_count is its attempts.
	require.Zero(t, e.count(`SELECT count(*) FROM dw_etl_run_items WHERE run_id = $1 AND current_attempt_id IS NOT NULL`, runID)+
		e.count(`SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1 AND status = 'RUNNING'`, runID),
		"attempts left running")
	require.EqualValues(t, e.count(`SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1`, runID), run.AttemptCount,
		"run attempt_count vs attempt rows")
	// Exactly one SUCCESS attempt per SUCCESS item, none for the others.
	bad := e.count(`SELECT count(*) FROM dw_etl_run_items i WHERE i.run_id = $1 AND
		(SELECT count(*) FROM dw_etl_run_attempts a WHERE a.run_id = i.run_id AND a.item_no = i.item_no AND a.status = 'SUCCESS')
		<> CASE WHEN i.status = 'SUCCESS' THEN 1 ELSE 0 END`, runID)
	require.Zero(t, bad, "items whose SUCCESS attempts are not exactly one iff the item succeeded")
	// An item's attempts column counts its attempt rows.
	bad = e.count(`SELECT count(*) FROM dw_etl_run_items i WHERE i.run_id = $1 AND i.attempts <>
		(SELECT count(*) FROM dw_etl_run_attempts a WHERE a.run_id = i.run_id AND a.item_no = i.item_no)`, runID)
	require.Zero(t, bad, "items whose attempts column differs from their attempt rows")
	// Attempts of one item never overlap in time.
	bad = e.count(`SELECT count(*) FROM dw_etl_run_attempts a JOIN dw_etl_run_attempts b
		ON b.run_id = a.run_id AND b.item_no = a.item_no AND b.item_attempt > a.item_attempt
		WHERE a.run_id = $1 AND b.started_at < a.ended_at`, runID)
	require.Zero(t, bad, "pairs of attempts of one item that overlap in time")

	// Target rows and cursors, per item.
	type item struct {
		status  string
		hash    string
		records int
		key     string
		noop    bool
	}
	var items []item
	rows, err = e.st.Pool().Query(ctx, `SELECT status, param_hash, coalesce((params->>'records')::int, 100),
		coalesce(params->>'key', ''), coalesce((params->>'noop')::bool, false) FROM dw_etl_run_items WHERE run_id = $1`, runID)
	require.NoError(t, err)
	for rows.Next() {
		var it item
		require.NoError(t, rows.Scan(&it.status, &it.hash, &it.records, &it.key, &it.noop))
		items = append(items, it)
	}
	require.NoError(t, rows.Err())
	rows.Close()
	var haveTarget bool
	require.NoError(t, e.target.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, e.targetTable).Scan(&haveTarget))
	base, _ := time.Parse(time.RFC3339, syntheticBase)
	for _, it := range items {
		if it.noop {
			continue
		}
		require.NotEmpty(t, it.key, "fault tests give every item an explicit key")
		var rowsOfKey, seqsOfKey int
		if haveTarget {
			require.NoError(t, e.target.QueryRow(ctx, `SELECT count(*), count(DISTINCT seq) FROM `+e.targetTable+` WHERE key = $1`,
				it.key).Scan(&rowsOfKey, &seqsOfKey))
		}
		want := 0
		if it.status == "SUCCESS" && !run.DryRun {
			want = it.records
		}
		require.Equal(t, want, seqsOfKey, "target rows of key %s (item %s, dry %v)", it.key, it.status, run.DryRun)
		require.Equal(t, seqsOfKey, rowsOfKey, "duplicate target rows of key %s: the item's writes committed more than once", it.key)

		var cursor *time.Time
		err := e.st.Pool().QueryRow(ctx, `SELECT cursor_value FROM dw_etl_incremental_cursors WHERE job_id = $1 AND param_hash = $2`,
			jobID, it.hash).Scan(&cursor)
		hasCursor := err == nil
		if run.Status == "SUCCESS" && !run.DryRun {
			require.True(t, hasCursor, "cursor of key %s after a SUCCESS run (err %v)", it.key, err)
			require.NotNil(t, cursor)
			wantCursor := base.Add(time.Duration(it.records-1) * syntheticStep)
			require.True(t, wantCursor.Equal(*cursor), "cursor of key %s: got %s want %s", it.key, cursor, wantCursor)
		} else {
			require.False(t, hasCursor, "no cursor for key %s after a %s run (dry %v)", it.key, run.Status, run.DryRun)
		}
	}
	return run
}

// attemptsOn counts the run's attempts with status on worker id; RUNNING ones live on their
// items (a claim of one of the worker's incarnations) until they end.
func (e *env) attemptsOn(runID uuid.UUID, workerID, status string) int {
	if status == "RUNNING" {
		return e.count(`SELECT count(*) FROM dw_etl_run_items i JOIN dw_etl_workers w ON w.worker_id = i.claim_worker
			WHERE i.run_id = $1 AND w.name = $2 AND i.current_attempt_id IS NOT NULL`, runID, workerID)
	}
	return e.count(`SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1 AND worker_id = $2 AND status = $3`,
		runID, workerID, status)
}

func (e *env) itemsWithStatus(runID uuid.UUID, status string) int {
	return e.count(`SELECT count(*) FROM dw_etl_run_items WHERE run_id = $1 AND status = $2`, runID, status)
}

// succeededTolerant counts the run's SUCCESS items, -1 when the database does not answer.
func (e *env) succeededTolerant(runID uuid.UUID) int {
	n, err := e.tryCount(`SELECT count(*) FROM dw_etl_run_items WHERE run_id = $1 AND status = 'SUCCESS'`, runID)
	if err != nil {
		return -1
	}
	return n
}

// lostAttempts counts the run's attempts closed as "worker lost".
func (e *env) lostAttempts(runID uuid.UUID) int {
	return e.count(`SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1 AND status = 'FAILED' AND error_message = 'worker lost'`, runID)
}

func (e *env) logAttempts(runID uuid.UUID) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := e.st.Pool().Query(ctx, `SELECT item_no, item_attempt, status, error_category,
		coalesce(error_message, ''), coalesce(worker_id, '') FROM dw_etl_run_attempts WHERE run_id = $1 AND status <> 'SUCCESS'
		ORDER BY item_no, item_attempt LIMIT 200`, runID)
	if err != nil {
		e.t.Logf("list attempts: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var itemNo, itemAttempt int32
		var status, cat, msg, wid string
		if err := rows.Scan(&itemNo, &itemAttempt, &status, &cat, &msg, &wid); err == nil {
			e.t.Logf("attempt item=%d #%d %s %s worker=%s: %s", itemNo, itemAttempt, status, cat, wid, msg)
		}
	}
}

// logSessions logs the private server's client sessions that are not idle, with what they
// wait for and who blocks them: what a stuck run is stuck on.
func (e *env) logSessions() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := e.st.Pool().Query(ctx, `SELECT pid, application_name, state, coalesce(wait_event_type || ':' || wait_event, ''),
		pg_blocking_pids(pid)::text, left(regexp_replace(query, '\s+', ' ', 'g'), 120)
		FROM pg_stat_activity WHERE backend_type = 'client backend' AND state <> 'idle' AND pid <> pg_backend_pid()`)
	if err != nil {
		e.t.Logf("list sessions: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var pid int32
		var app, state, wait, blockers, query string
		if err := rows.Scan(&pid, &app, &state, &wait, &blockers, &query); err == nil {
			e.t.Logf("session %d %q %s wait=%s blocked by %s: %s", pid, app, state, wait, blockers, query)
		}
	}
}

// logItems logs how many of the run's items are in each status.
func (e *env) logItems(runID uuid.UUID) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := e.st.Pool().Query(ctx, `SELECT status, count(*) FROM dw_etl_run_items WHERE run_id = $1 GROUP BY status ORDER BY 1`, runID)
	if err != nil {
		e.t.Logf("list items: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var status string
		var n int
		if err := rows.Scan(&status, &n); err == nil {
			e.t.Logf("items %s: %d", status, n)
		}
	}
}

func (e *env) leaseOrDefault() time.Duration {
	if e.lease > 0 {
		return e.lease
	}
	return 3 * time.Second
}

// errNoWorkerSessions is returned by workerBackends when no session but the harness's is open.
var errNoWorkerSessions = errors.New("no worker session")

// workerBackends lists the pids of the workers' sessions on the private server: those whose
// application_name starts with etlexec when any does (the workers' contract), else every
// client session but the harness's own (application_name starting with harnessApp).
func (e *env) workerBackends(ctx context.Context) ([]int32, error) {
	rows, err := e.st.Pool().Query(ctx, `WITH s AS (
		SELECT pid, application_name FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name NOT LIKE $1 || '%')
		SELECT pid FROM s WHERE application_name LIKE 'etlexec%'
			OR NOT EXISTS (SELECT 1 FROM s WHERE application_name LIKE 'etlexec%')`, harnessApp)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var pids []int32
	for rows.Next() {
		var pid int32
		if err := rows.Scan(&pid); err != nil {
			return nil, err
		}
		pids = append(pids, pid)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(pids) == 0 {
		return nil, errNoWorkerSessions
	}
	return pids, nil
}
