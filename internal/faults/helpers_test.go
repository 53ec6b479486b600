package faults_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/store"
)

// heavy serialises the tests that disturb the whole machine (a private Postgres restarting
// with fsync on, SIGKILL storms) with the load-sensitive ones: with ETL_LEASE=3s on a small
// machine, TestFaultTenThousandItems misses heartbeats while another test's Postgres restarts
// (reproduced: 10009 attempts for 10000 items), and its lost attempts then wait for asynq's
// default retry delay.
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

// workerBin is the worker binary built once per test process by TestMain.
// workerBin and enqueuerBin are built once per test process.
var workerBin, enqueuerBin string

func TestMain(m *testing.M) {
	flag.Parse()
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
	jobID       = "fault_job"
	targetTable = "fault_target"
	// synthetic's default base and step: row i has modified_at = base + i*60s.
	syntheticBase = "2026-01-01T00:00:00Z"
	syntheticStep = 60 * time.Second
)

// env is one fault scenario: an isolated database, a private Redis, a unique queue.
type env struct {
	t       *testing.T
	dbURL   string
	st      *store.Store
	redis   *redisServer
	queue   string
	enq     *enqueue.Enqueuer
	client  *asynq.Client
	mu      sync.Mutex
	workers []*workerProc
	// lease is the workers' ETL_LEASE: short (3 s) so kill faults recover fast; tests without
	// kills may lengthen it so a loaded machine's late heartbeat is not taken for a lost worker.
	lease time.Duration
}

func newEnv(t *testing.T, timeout time.Duration) *env {
	t.Helper()
	return newEnvWith(t, envOpts{timeout: timeout})
}

// envOpts tunes newEnvWith; zero values keep newEnv's defaults.
type envOpts struct {
	timeout     time.Duration
	dbURL       string // "" = a fresh database on the shared server (dbtest.URL)
	overlap     string // "" = allow
	maxAttempts int32  // 0 = 3
}

func newEnvWith(t *testing.T, o envOpts) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("fault tests start processes and a private Redis; skipped with -short")
	}
	if o.overlap == "" {
		o.overlap = "allow"
	}
	if o.maxAttempts == 0 {
		o.maxAttempts = 3
	}
	ctx := context.Background()
	e := &env{t: t, dbURL: o.dbURL}
	if e.dbURL == "" {
		e.dbURL = dbtest.URL(t)
	}
	st, err := store.Connect(ctx, e.dbURL)
	require.NoError(t, err)
	t.Cleanup(st.Close)
	e.st = st
	e.redis = startRedis(t)
	e.queue = "fq_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	e.client = asynq.NewClient(asynq.RedisClientOpt{Addr: e.redis.addr})
	t.Cleanup(func() { e.client.Close() })
	e.enq, err = enqueue.New(enqueue.Config{Store: st, Redis: asynq.RedisClientOpt{Addr: e.redis.addr}, Logger: zerolog.Nop()})
	require.NoError(t, err)
	_, err = st.UpsertJobs(ctx, []store.UpsertJob{{
		JobID: jobID, Kind: "synthetic", SupportsParams: true, SupportsIncremental: true,
		Strategy: "modified_date", CursorPolicy: "run",
		Config: json.RawMessage(`{"target_table":"` + targetTable + `"}`), OverlapPolicy: o.overlap,
		Queue: e.queue, MaxAttempts: o.maxAttempts, TimeoutMs: o.timeout.Milliseconds(), RetentionMs: 60000, Enabled: true,
	}})
	require.NoError(t, err)
	return e
}

// redisServer is a private redis-server on a free loopback port.
type redisServer struct {
	addr   string
	cmd    *exec.Cmd
	exited chan struct{}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

func startRedis(t *testing.T) *redisServer {
	t.Helper()
	return startRedisOn(t, 0)
}

// startRedisOn starts a private redis-server on port (0 = a free one, retried on collisions).
func startRedisOn(t *testing.T, fixedPort int) *redisServer {
	t.Helper()
	dir := t.TempDir()
	for try := 0; ; try++ {
		port := fixedPort
		if port == 0 {
			port = freePort(t)
		}
		logPath := filepath.Join(dir, "redis.log")
		cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", logPath)
		require.NoError(t, cmd.Start())
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		r := &redisServer{addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd, exited: exited}
		deadline := time.Now().Add(10 * time.Second)
		ok := false
		for time.Now().Before(deadline) {
			if out, err := r.cli("PING"); err == nil && strings.TrimSpace(out) == "PONG" {
				ok = true
				break
			}
			select {
			case <-exited:
				deadline = time.Time{}
			case <-time.After(50 * time.Millisecond):
			}
		}
		if ok {
			t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
			return r
		}
		_ = cmd.Process.Kill()
		<-exited
		if try == 3 {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("redis-server did not start on %s:\n%s", r.addr, b)
		}
	}
}

func (r *redisServer) cli(args ...string) (string, error) {
	host, port, _ := net.SplitHostPort(r.addr)
	out, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	return string(out), err
}

func (e *env) flushRedis() {
	e.t.Helper()
	out, err := e.redis.cli("FLUSHALL")
	require.NoError(e.t, err, out)
	require.Equal(e.t, "OK", strings.TrimSpace(out))
	e.t.Logf("FLUSHALL on private redis %s", e.redis.addr)
}

// workerProc is one worker process.
type workerProc struct {
	id      string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

func (e *env) startWorker(id string) *workerProc {
	t := e.t
	t.Helper()
	logPath := filepath.Join(t.TempDir(), id+".log")
	f, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(workerBin)
	cmd.Env = append(os.Environ(),
		"DATABASE_URL="+e.dbURL,
		"REDIS_URL=redis://"+e.redis.addr+"/0",
		"ETL_QUEUES="+e.queue,
		"ETL_CONCURRENCY=8",
		"ETL_SHUTDOWN_TIMEOUT=2s",
		"ETL_LEASE="+e.leaseOrDefault().String(),
		"ETL_RECONCILE_INTERVAL=1s",
		"ETL_HTTP_ADDR=",
		"ETL_WORKER_ID="+id,
	)
	cmd.Stdout, cmd.Stderr = f, f
	require.NoError(t, cmd.Start())
	w := &workerProc{id: id, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { w.err = cmd.Wait(); f.Close(); close(w.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-w.done
		if t.Failed() || os.Getenv("FAULTS_LOGS") != "" {
			b, _ := os.ReadFile(logPath)
			t.Logf("---- worker %s output ----\n%s", id, tail(string(b), 200))
		}
	})
	return w
}

func tail(s string, lines int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > lines {
		ls = append([]string{fmt.Sprintf("... %d earlier lines", len(ls)-lines)}, ls[len(ls)-lines:]...)
	}
	return strings.Join(ls, "\n")
}

func (w *workerProc) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGKILL))
	<-w.done
	t.Logf("SIGKILLed worker %s", w.id)
}

// p is one synthetic item's params.
type p map[string]any

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

// waitFor polls cond until it is true or the deadline passes.
func (e *env) waitFor(what string, within time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.st.Pool().QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

func (e *env) waitRun(runID uuid.UUID, within time.Duration) store.Run {
	e.t.Helper()
	var run store.Run
	e.waitFor("run "+runID.String()+" terminal", within, func() bool {
		var err error
		run, err = e.st.GetRun(context.Background(), runID)
		require.NoError(e.t, err)
		switch run.Status {
		case "SUCCESS", "PARTIAL_SUCCESS", "FAILED", "SKIPPED", "CANCELLED":
			return true
		}
		return false
	})
	return run
}

// checkInvariants asserts what must hold in Postgres after any fault, once the run is terminal.
func (e *env) checkInvariants(runID uuid.UUID, wantStatus string) store.Run {
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

	// No attempt left RUNNING; the run's attempt_count is its attempts.
	require.Zero(t, e.count(`SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1 AND status = 'RUNNING'`, runID),
		"attempts left RUNNING")
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
	require.NoError(t, e.st.Pool().QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, targetTable).Scan(&haveTarget))
	base, _ := time.Parse(time.RFC3339, syntheticBase)
	for _, it := range items {
		if it.noop {
			continue
		}
		require.NotEmpty(t, it.key, "fault tests give every item an explicit key")
		rowsOfKey := 0
		if haveTarget {
			rowsOfKey = e.count(`SELECT count(*) FROM `+targetTable+` WHERE key = $1`, it.key)
		}
		want := 0
		if it.status == "SUCCESS" && !run.DryRun {
			want = it.records
		}
		require.Equal(t, want, rowsOfKey, "target rows of key %s (item %s, dry %v)", it.key, it.status, run.DryRun)

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

// attemptsOn counts the run's attempts with status on worker id.
func (e *env) attemptsOn(runID uuid.UUID, workerID, status string) int {
	return e.count(`SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1 AND worker_id = $2 AND status = $3`,
		runID, workerID, status)
}

func (e *env) itemsWithStatus(runID uuid.UUID, status string) int {
	return e.count(`SELECT count(*) FROM dw_etl_run_items WHERE run_id = $1 AND status = $2`, runID, status)
}

func (e *env) logAttempts(runID uuid.UUID) {
	rows, err := e.st.Pool().Query(context.Background(), `SELECT item_no, item_attempt, status, error_category,
		coalesce(error_message, ''), coalesce(worker_id, '') FROM dw_etl_run_attempts WHERE run_id = $1 AND status <> 'SUCCESS'
		ORDER BY item_no, item_attempt`, runID)
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

func (e *env) leaseOrDefault() time.Duration {
	if e.lease > 0 {
		return e.lease
	}
	return 3 * time.Second
}
