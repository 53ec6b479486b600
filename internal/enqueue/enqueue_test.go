package enqueue_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/params"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/store"
)

func setup(t *testing.T, job store.JobSpec) (*store.Store, *enqueue.Enqueuer) {
	t.Helper()
	st := dbtest.Store(t)
	job.Kind, job.Strategy, job.CursorPolicy, job.OverlapPolicy = "synthetic", "none", "run", "allow"
	job.Queue, job.MaxAttempts, job.TimeoutMs, job.Enabled = redistest.Queue(t), 1, 1000, true
	if job.Config == nil {
		job.Config = json.RawMessage(`{}`)
	}
	_, err := st.UpsertJobs(t.Context(), []store.JobSpec{job})
	require.NoError(t, err)
	enq, err := enqueue.New(enqueue.Config{Store: st, Redis: redistest.ConnOpt(t), Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { enq.Close() })
	return st, enq
}

// jsonLines writes n param sets as JSON lines, every tenth a duplicate of the one before.
func jsonLines(n int) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		for i := range n {
			k := i
			if i%10 == 9 {
				k = i - 1
			}
			fmt.Fprintf(pw, "{\"tenant\": \"t%06d\", \"n\": %d}\n", k, k)
		}
		pw.Close()
	}()
	return pr
}

func TestStreamedTrigger(t *testing.T) {
	t.Parallel()
	st, enq := setup(t, store.JobSpec{JobID: "fan", SupportsParams: true})
	const n = 20000
	res, err := enq.Trigger(t.Context(), enqueue.Request{JobID: "fan", Source: params.Stream(jsonLines(n), 0)})
	require.NoError(t, err)
	require.Equal(t, n-n/10, res.Items)
	require.Equal(t, n/10, res.Deduplicated)
	require.Equal(t, res.Items, res.Enqueued)
	var items, first int
	require.NoError(t, st.Pool().QueryRow(t.Context(), `SELECT count(*), min(item_no) FILTER (WHERE params->>'tenant' = 't000000')
		FROM dw_etl_run_items WHERE run_id = $1`, res.Run.RunID).Scan(&items, &first))
	require.Equal(t, res.Items, items)
	require.Equal(t, 1, first, "items are numbered in the order the sets came")
}

func TestStreamedTriggerStopsAtABadSet(t *testing.T) {
	t.Parallel()
	st, enq := setup(t, store.JobSpec{JobID: "fan", SupportsParams: true})
	in := strings.NewReader("{\"n\": 1}\n{\"n\": 2}\n{\"n\": 3, broken\n{\"n\": 4}\n")
	_, err := enq.Trigger(t.Context(), enqueue.Request{JobID: "fan", Source: params.Stream(in, 0)})
	require.ErrorContains(t, err, "line 3")
	var runs, items int
	require.NoError(t, st.Pool().QueryRow(t.Context(), `SELECT (SELECT count(*) FROM dw_etl_runs), (SELECT count(*) FROM dw_etl_run_items)`).Scan(&runs, &items))
	require.Zero(t, runs, "nothing half-written")
	require.Zero(t, items)
}

func TestSQLParamSource(t *testing.T) {
	t.Parallel()
	src := dbtest.Pool(t)
	_, err := src.Exec(t.Context(), `CREATE TABLE tenants (id int, region text, active bool);
		INSERT INTO tenants SELECT i, CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, i % 5 <> 0 FROM generate_series(1, 50) i`)
	require.NoError(t, err)
	var b [6]byte
	_, _ = rand.Read(b[:])
	env := "ETL_TEST_PARAMS_" + strings.ToUpper(hex.EncodeToString(b[:]))
	require.NoError(t, os.Setenv(env, src.Config().ConnString()))
	t.Cleanup(func() { _ = os.Unsetenv(env) })
	ps, _ := json.Marshal(map[string]any{"sql": "SELECT id AS tenant, region FROM tenants WHERE active", "source_url_env": env})
	st, enq := setup(t, store.JobSpec{JobID: "tenants", SupportsParams: true, ParamSource: ps})
	res, err := enq.Trigger(t.Context(), enqueue.Request{JobID: "tenants"})
	require.NoError(t, err)
	require.Equal(t, 40, res.Items, "one item per row of the query")
	var p string
	require.NoError(t, st.Pool().QueryRow(t.Context(), `SELECT params::text FROM dw_etl_run_items WHERE run_id = $1 AND item_no = 1`, res.Run.RunID).Scan(&p))
	require.JSONEq(t, `{"tenant": 1, "region": "us"}`, p, "columns become keys, with their JSON types")
}
