package worker_test

// Fleet tests: worker processes (the real cmd/worker binary, built once per test process)
// against one isolated database and this test's own queues, checking the fleet-wide limits from
// what Postgres recorded and what a source saw.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/jobdef"
	"github.com/etlexec/etlexec/internal/kinds"
	"github.com/etlexec/etlexec/internal/kinds/synthetic"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

var (
	buildOnce sync.Once
	binDir    string
	workerBin string
	buildErr  error
)

// workerBinary builds cmd/worker once for the fleet tests of this process.
func workerBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "etlexec-fleet-"); buildErr != nil {
			return
		}
		workerBin = filepath.Join(binDir, "worker")
		out, err := exec.Command("go", "build", "-o", workerBin, "github.com/etlexec/etlexec/cmd/worker").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build cmd/worker: %v\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return workerBin
}

// fleet is one database, its store and enqueuer, and the worker processes started on it.
type fleet struct {
	t     *testing.T
	url   string
	st    *store.Store
	enq   *enqueue.Enqueuer
	procs []*fleetProc
}

type fleetProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *fleetProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *fleetProc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	u := dbtest.URL(t)
	st, err := store.Open(t.Context(), u, store.Options{})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	enq, err := enqueue.New(enqueue.Config{Store: st, Redis: redistest.ConnOpt(t), Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { enq.Close() })
	_, err = st.Pool().Exec(t.Context(), synthetic.TargetDDL(synthetic.DefaultTargetTable, false))
	require.NoError(t, err)
	return &fleet{t: t, url: u, st: st, enq: enq}
}

// apply applies a jobs file as `enqueuer jobs apply` does.
func (f *fleet) apply(yaml string) {
	f.t.Helper()
	defs, err := jobdef.Load("jobs.yaml", []byte(yaml), jobdef.Catalog{Registry: kinds.Builtin()})
	require.NoError(f.t, err)
	_, err = f.st.ApplyDefinitions(f.t.Context(), defs, false)
	require.NoError(f.t, err)
}

// start starts n worker processes with the given extra environment and waits until each has
// registered its liveness row.
func (f *fleet) start(n int, env ...string) {
	f.t.Helper()
	bin := workerBinary(f.t)
	var before int
	require.NoError(f.t, f.st.Pool().QueryRow(f.t.Context(), `SELECT count(*) FROM dw_etl_workers`).Scan(&before))
	for i := range n {
		p := &fleetProc{done: make(chan struct{})}
		p.cmd = exec.Command(bin)
		p.cmd.Env = append(os.Environ(), "DATABASE_URL="+f.url, "REDIS_URL="+redistest.URL(),
			"ETL_LOG_LEVEL=warn", "ETL_LEASE=10s", "ETL_SHUTDOWN_TIMEOUT=5s", "ETL_ALLOW_REDIS_EVICTION=true",
			fmt.Sprintf("ETL_WORKER_ID=fleet-%d-%d", len(f.procs), i))
		p.cmd.Env = append(p.cmd.Env, env...)
		p.cmd.Stdout, p.cmd.Stderr = p, p
		require.NoError(f.t, p.cmd.Start())
		go func() { _ = p.cmd.Wait(); close(p.done) }()
		f.procs = append(f.procs, p)
		f.t.Cleanup(func() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
			if f.t.Failed() {
				f.t.Logf("worker process %d output:\n%s", p.cmd.Process.Pid, p.log())
			}
		})
	}
	f.waitFor("workers registered", 60*time.Second, func() bool {
		var got int
		require.NoError(f.t, f.st.Pool().QueryRow(f.t.Context(), `SELECT count(*) FROM dw_etl_workers WHERE stopped_at IS NULL`).Scan(&got))
		return got >= before+n
	})
}

func (f *fleet) waitFor(what string, within time.Duration, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			for _, p := range f.procs {
				f.t.Logf("worker output:\n%s", p.log())
			}
			f.t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond) // the poll interval of a bounded wait
	}
}

func (f *fleet) trigger(jobID string, params []map[string]any) uuid.UUID {
	f.t.Helper()
	raws := make([]json.RawMessage, len(params))
	for i, p := range params {
		b, err := json.Marshal(p)
		require.NoError(f.t, err)
		raws[i] = b
	}
	res, err := f.enq.Trigger(f.t.Context(), enqueue.Request{JobID: jobID, Params: raws})
	require.NoError(f.t, err)
	return res.Run.RunID
}

func (f *fleet) run(id uuid.UUID) store.Run {
	f.t.Helper()
	run, err := f.st.GetRun(f.t.Context(), id)
	require.NoError(f.t, err)
	return run
}

func (f *fleet) waitRun(id uuid.UUID, within time.Duration) store.Run {
	f.t.Helper()
	var run store.Run
	f.waitFor("run "+id.String()+" finished", within, func() bool {
		run = f.run(id)
		return runstate.Status(run.Status).Terminal()
	})
	return run
}

// interval is one attempt as the ledger recorded it.
type interval struct {
	start, end time.Time
	worker     string
}

func (f *fleet) attempts(runID uuid.UUID) []interval {
	f.t.Helper()
	rows, err := f.st.Pool().Query(f.t.Context(),
		`SELECT started_at, ended_at, worker::text FROM dw_etl_run_attempts WHERE run_id = $1 ORDER BY started_at`, runID)
	require.NoError(f.t, err)
	defer rows.Close()
	var out []interval
	for rows.Next() {
		var iv interval
		require.NoError(f.t, rows.Scan(&iv.start, &iv.end, &iv.worker))
		out = append(out, iv)
	}
	require.NoError(f.t, rows.Err())
	return out
}

// maxOverlap is the most intervals open at one instant (an end at the same instant as a start
// does not overlap it).
func maxOverlap(ivs []interval) int {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, iv := range ivs {
		edges = append(edges, edge{iv.start, +1}, edge{iv.end, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at.Equal(edges[j].at) {
			return edges[i].delta < edges[j].delta
		}
		return edges[i].at.Before(edges[j].at)
	})
	open, best := 0, 0
	for _, e := range edges {
		open += e.delta
		best = max(best, open)
	}
	return best
}

func TestFleetMaxRunningItems(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	q := redistest.Queue(t)
	const limit, items = 2, 14
	f.apply(fmt.Sprintf(`jobs:
  - job_id: limited
    kind: synthetic
    supports_params: true
    overlap_policy: allow
    queue: %s
    max_running_items: %d
`, q, limit))
	// Three processes could run 3 x 4 items at once; the job allows two.
	f.start(3, "ETL_QUEUES="+q, "ETL_CONCURRENCY=4", "ETL_PREFETCH=1")
	params := make([]map[string]any, items)
	for i := range params {
		params[i] = map[string]any{"key": fmt.Sprintf("k%d", i), "records": 3, "page_size": 1, "page_latency_ms": 100}
	}
	runID := f.trigger("limited", params)
	run := f.waitRun(runID, 90*time.Second)
	require.Equal(t, runstate.StatusSuccess, run.Status)

	ivs := f.attempts(runID)
	require.Len(t, ivs, items, "a delivery sent back at the limit is no attempt")
	overlap := maxOverlap(ivs)
	require.LessOrEqual(t, overlap, limit, "attempts running at once, as Postgres recorded them")
	require.Greater(t, overlap, 1, "the limit is used, not just never reached")
	workers := map[string]bool{}
	for _, iv := range ivs {
		workers[iv.worker] = true
	}
	require.GreaterOrEqual(t, len(workers), 2, "items ran on several processes")

	var retried int
	require.NoError(t, f.st.Pool().QueryRow(t.Context(),
		`SELECT count(*) FROM dw_etl_run_items WHERE run_id = $1 AND attempts <> 1`, runID).Scan(&retried))
	require.Zero(t, retried, "every item took exactly one attempt")
}

func TestFleetSourceRate(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	q := redistest.Queue(t)
	var (
		mu    sync.Mutex
		times []time.Time
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data": {"items": []}}`))
	}))
	t.Cleanup(srv.Close)
	_, err := f.st.Pool().Exec(t.Context(), `CREATE TABLE api_items (id int PRIMARY KEY, name text)`)
	require.NoError(t, err)
	const rate, burst, items = 5, 2, 24
	source := "crm_" + strings.TrimPrefix(q, "t_")
	// Two jobs on one source: the rate is the source's, whichever job and worker asks.
	var jobs strings.Builder
	for _, id := range []string{"contacts", "deals"} {
		fmt.Fprintf(&jobs, `  - job_id: %s
    kind: http_json
    supports_params: true
    overlap_policy: allow
    queue: %s
    config:
      source: %s
      base_url: %s/items
      records_path: data.items
      target_table: api_items
      key_columns: [id]
      columns: {id: id, name: name}
`, id, q, source, srv.URL)
	}
	f.apply(fmt.Sprintf("sources:\n  %s: {rate: %d, burst: %d}\njobs:\n%s", source, rate, burst, jobs.String()))
	f.start(3, "ETL_QUEUES="+q, "ETL_CONCURRENCY=4")
	var runs []uuid.UUID
	for _, job := range []string{"contacts", "deals"} {
		params := make([]map[string]any, items/2)
		for i := range params {
			params[i] = map[string]any{"n": i}
		}
		runs = append(runs, f.trigger(job, params))
	}
	begun := time.Now()
	for _, id := range runs {
		run := f.waitRun(id, 90*time.Second)
		require.Equal(t, runstate.StatusSuccess, run.Status, "run of %s: %v", run.JobID, run.ErrorMessage)
	}
	elapsed := time.Since(begun)

	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, len(times), items, "one request per item at least")
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	busiest := 0
	for i, j := 0, 0; i < len(times); i++ {
		for times[i].Sub(times[j]) >= time.Second {
			j++
		}
		busiest = max(busiest, i-j+1)
	}
	t.Logf("%d requests in %s, at most %d in one second", len(times), elapsed.Round(time.Millisecond), busiest)
	require.LessOrEqual(t, busiest, rate+burst, "requests the source saw in its busiest second")
	// Without the limit 12 handlers send the 24 requests within a fraction of a second.
	minSpan := time.Duration(len(times)-burst) * time.Second / rate
	require.GreaterOrEqual(t, times[len(times)-1].Sub(times[0]), minSpan*9/10)
}

func TestFleetWeightedQueues(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	hourly, backfill := redistest.Queue(t), redistest.Queue(t)
	f.apply(fmt.Sprintf(`jobs:
  - job_id: big_backfill
    kind: synthetic
    supports_params: true
    overlap_policy: allow
    queue: %s
  - job_id: small_hourly
    kind: synthetic
    supports_params: true
    overlap_policy: allow
    queue: %s
`, backfill, hourly))
	big := make([]map[string]any, 300)
	for i := range big {
		big[i] = map[string]any{"key": fmt.Sprintf("b%d", i), "records": 1, "page_size": 1, "page_latency_ms": 40}
	}
	bigRun := f.trigger("big_backfill", big)
	f.start(1, fmt.Sprintf("ETL_QUEUES=%s=20,%s=1", hourly, backfill), "ETL_CONCURRENCY=2", "ETL_PREFETCH=1")
	f.waitFor("the backfill under way", 60*time.Second, func() bool { return len(f.attempts(bigRun)) >= 10 })

	small := make([]map[string]any, 20)
	for i := range small {
		small[i] = map[string]any{"key": fmt.Sprintf("s%d", i), "records": 1, "page_size": 1, "page_latency_ms": 40}
	}
	smallRun := f.trigger("small_hourly", small)
	run := f.waitRun(smallRun, 60*time.Second)
	require.Equal(t, runstate.StatusSuccess, run.Status)

	var settled, startedMeanwhile int
	require.NoError(t, f.st.Pool().QueryRow(t.Context(),
		`SELECT count(*) FROM dw_etl_run_items WHERE run_id = $1 AND status <> 'PENDING'`, bigRun).Scan(&settled))
	require.NoError(t, f.st.Pool().QueryRow(t.Context(),
		`SELECT count(*) FROM dw_etl_run_attempts WHERE run_id = $1 AND started_at > $2`, bigRun, run.CreatedAt).Scan(&startedMeanwhile))
	t.Logf("backfill: %d of %d items settled when the small run ended; %d backfill attempts started after the small run was created",
		settled, len(big), startedMeanwhile)
	require.Less(t, settled, len(big)/2, "the small run finished while most of the backfill was pending")
	require.NotEqual(t, runstate.StatusSuccess, f.run(bigRun).Status)
	// Weight 20:1: the small run's 20 items go first; the backfill items that start meanwhile
	// are about those already fetched (concurrency + prefetch = 3). Equal weights interleave
	// about one backfill item per small one (measured with 20 small items: 19 to 29).
	require.LessOrEqual(t, startedMeanwhile, 8, "backfill items started while the small run was open")
}
