package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/httpapi"
	"github.com/etlexec/etlexec/internal/store"
)

const (
	run1    = "00000000-0000-7000-8000-000000000001"
	run2    = "00000000-0000-7000-8000-000000000002" // FAILED, with items, attempts and logs
	run3    = "00000000-0000-7000-8000-000000000003" // job_b
	noSuch  = "00000000-0000-7000-8000-000000000099"
	apiBase = "/api/v1"
)

// setupAPI serves the API over a fresh database seeded with plain SQL.
func setupAPI(t *testing.T) (srv *httptest.Server, attempt uuid.UUID) {
	t.Helper()
	st := dbtest.Store(t)
	attempt = uuid.Must(uuid.NewV7())
	ts := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO dw_etl_jobs (job_id, kind, supports_incremental, strategy, schedule) VALUES
			('job_a', 'synthetic', true, 'modified_date', '*/5 * * * *'), ('job_b', 'synthetic', false, 'none', NULL)`, nil},
		{`INSERT INTO dw_etl_runs (run_id, job_id, status, error_category, dry_run, exclusive, started_at) VALUES
			($1, 'job_a', 'SUCCESS', 'NONE', false, false, '2026-01-01 10:00:00+00'),
			($2, 'job_a', 'FAILED', 'API', true, false, '2026-01-02 10:00:00+00'),
			($3, 'job_b', 'CANCELLED', 'NONE', false, false, '2026-01-03 10:00:00+00')`, []any{run1, run2, run3}},
		{`INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash, status, error_category, cursor_note) VALUES
			($1, 1, '{"n":1}', 'h1', 'SUCCESS', 'NONE', 'no new rows'),
			($1, 2, '{"n":2}', 'h2', 'FAILED', 'API', NULL),
			($1, 3, '{"n":3}', 'h3', 'FAILED', 'DATA', NULL)`, []any{run2}},
		{`INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt, status, error_category, error_message, error_detail, backoff_ms, next_retry_at)
			VALUES ($2, $1, 2, 1, 'FAILED', 'API', 'HTTP 503', '{"status":503}', 2000, '2026-01-02 10:00:05+00')`, []any{run2, attempt}},
		// The counters the workers kept for those items and attempts.
		{`UPDATE dw_etl_runs SET item_count = 3 WHERE run_id = $1`, []any{run2}},
		{`INSERT INTO dw_etl_run_progress (run_id, shard, attempts_started, attempts_ended, retries, backoff_ms,
			max_item_attempt, succeeded, failed, failed_api, failed_data) VALUES ($1, 1, 4, 4, 1, 2000, 2, 1, 2, 1, 1)`, []any{run2}},
		{`INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt, status, error_category, error_message)
			SELECT gen_random_uuid(), $1, n, CASE WHEN n = 2 THEN 2 ELSE 1 END, CASE WHEN n = 1 THEN 'SUCCESS' ELSE 'FAILED' END,
				CASE n WHEN 1 THEN 'NONE' WHEN 2 THEN 'API' ELSE 'DATA' END, CASE WHEN n > 1 THEN 'failed' END
			FROM generate_series(1, 3) n`, []any{run2}},
		{`INSERT INTO dw_etl_run_logs (ts, run_id, attempt_id, job_id, item_no, level, message, fields)
			SELECT $2::timestamptz + n * interval '1 second', $1, CASE WHEN n <= 2 THEN $3::uuid END, 'job_a', CASE WHEN n <= 4 THEN 2 END,
				CASE WHEN n % 3 = 0 THEN 'error' ELSE 'info' END, 'line ' || n || CASE WHEN n = 5 THEN ' Timeout' ELSE '' END,
				jsonb_build_object('n', n)
			FROM generate_series(1, 6) n`, []any{run2, ts, attempt}},
		{`INSERT INTO dw_etl_incremental_cursors (job_id, param_hash, params, strategy, cursor_value, last_run_id) VALUES
			('job_a', 'h1', '{"n":1}', 'modified_date', '2026-01-02 00:00:00+00', $1),
			('job_a', 'h2', '{"n":2}', 'modified_date', NULL, NULL)`, []any{run2}},
	} {
		_, err := st.Pool().Exec(t.Context(), q.sql, q.args...)
		require.NoError(t, err, q.sql)
	}
	srv = httptest.NewServer(httpapi.New(httpapi.Config{Store: st}))
	t.Cleanup(srv.Close)
	return srv, attempt
}

// get fetches path, checks the response against the OpenAPI document and decodes the JSON body
// into out (when not nil); it returns the status.
func get(t *testing.T, srv *httptest.Server, path string, out any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	checkDocumented(t, documentedRouter(t, srv.URL), req, nil, resp, body)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"), "%s: %s", path, body)
	if out != nil {
		require.NoError(t, json.Unmarshal(body, out), "%s: %s", path, body)
	}
	return resp.StatusCode
}

func runIDs(p store.Page[store.Run]) []string {
	ids := make([]string, len(p.Items))
	for i, r := range p.Items {
		ids[i] = r.RunID.String()
	}
	return ids
}

func TestAPI(t *testing.T) {
	t.Parallel()
	srv, attempt := setupAPI(t)

	t.Run("Runs", func(t *testing.T) {
		t.Parallel()
		for path, want := range map[string][]string{
			"/runs":                                {run3, run2, run1},
			"/runs?job=job_a":                      {run2, run1},
			"/runs?status=FAILED&status=cancelled": {run3, run2},
			"/runs?status=SUCCESS,FAILED&dry_run=false":                   {run1},
			"/runs?since=2026-01-02T00:00:00Z&until=2026-01-03T00:00:00Z": {run2},
			"/runs?job=job_b&status=SUCCESS":                              {},
			"/runs?since=" + url.QueryEscape("2026-01-02T11:00:00+01:00"): {run3, run2},
		} {
			var p store.Page[store.Run]
			require.Equal(t, http.StatusOK, get(t, srv, apiBase+path, &p), path)
			require.Equal(t, want, runIDs(p), path)
		}
	})

	t.Run("RunsPageByToken", func(t *testing.T) {
		t.Parallel()
		var got []string
		path := apiBase + "/runs?limit=2"
		for range 3 {
			var p store.Page[store.Run]
			require.Equal(t, http.StatusOK, get(t, srv, path, &p))
			got = append(got, runIDs(p)...)
			if p.Next == "" {
				break
			}
			path = apiBase + "/runs?limit=2&after=" + url.QueryEscape(p.Next)
		}
		require.Equal(t, []string{run3, run2, run1}, got)
	})

	t.Run("Run", func(t *testing.T) {
		t.Parallel()
		var d map[string]any
		require.Equal(t, http.StatusOK, get(t, srv, apiBase+"/runs/"+run2, &d))
		run := d["run"].(map[string]any)
		require.Equal(t, run2, run["run_id"])
		require.Equal(t, "FAILED", run["status"])
		require.Equal(t, true, run["dry_run"])
		require.ElementsMatch(t, []any{
			map[string]any{"status": "FAILED", "error_category": "API", "count": float64(1)},
			map[string]any{"status": "FAILED", "error_category": "DATA", "count": float64(1)},
			map[string]any{"status": "SUCCESS", "error_category": "NONE", "count": float64(1)},
		}, d["items"])
		attempts := d["attempts"].(map[string]any)
		require.Equal(t, float64(4), attempts["total"])
		require.Equal(t, float64(2000), attempts["backoff_ms_total"])
		require.Equal(t, float64(1), attempts["retries"])
	})

	t.Run("Items", func(t *testing.T) {
		t.Parallel()
		items := func(run, query string) store.Page[store.ItemRow] {
			t.Helper()
			var p store.Page[store.ItemRow]
			require.Equal(t, http.StatusOK, get(t, srv, apiBase+"/runs/"+run+"/items"+query, &p), query)
			return p
		}
		p := items(run2, "?status=FAILED&limit=1")
		require.Len(t, p.Items, 1)
		require.EqualValues(t, 2, p.Items[0].ItemNo)
		require.NotEmpty(t, p.Next)
		p = items(run2, "?status=FAILED&limit=1&after="+p.Next)
		require.EqualValues(t, 3, p.Items[0].ItemNo)
		require.Empty(t, p.Next)
		require.EqualValues(t, 3, items(run2, "?category=data").Items[0].ItemNo)
		require.EqualValues(t, 1, items(run2, "?param_hash=h1").Items[0].ItemNo)
		require.Empty(t, items(run1, "").Items)
	})

	t.Run("Attempts", func(t *testing.T) {
		t.Parallel()
		var p store.Page[store.AttemptRow]
		require.Equal(t, http.StatusOK, get(t, srv, apiBase+"/runs/"+run2+"/attempts", &p))
		require.Len(t, p.Items, 4)
		require.Equal(t, attempt, p.Items[0].AttemptID, "attempt_no order")
		require.EqualValues(t, 2000, *p.Items[0].BackoffMs)
		require.True(t, p.Items[0].NextRetryAt.Equal(time.Date(2026, 1, 2, 10, 0, 5, 0, time.UTC)))
		require.JSONEq(t, `{"status":503}`, string(p.Items[0].ErrorDetail))
		require.Equal(t, http.StatusOK, get(t, srv, apiBase+"/runs/"+run2+"/attempts?item=2", &p))
		require.Len(t, p.Items, 2)
		for _, a := range p.Items {
			require.EqualValues(t, 2, a.ItemNo)
		}
	})

	t.Run("Logs", func(t *testing.T) {
		t.Parallel()
		msgs := func(path string) []string {
			var p store.Page[store.LogLine]
			require.Equal(t, http.StatusOK, get(t, srv, apiBase+"/runs/"+run2+"/logs"+path, &p), path)
			out := make([]string, len(p.Items))
			for i, l := range p.Items {
				out[i] = l.Message
			}
			return out
		}
		require.Equal(t, []string{"line 6", "line 5 Timeout", "line 4", "line 3", "line 2", "line 1"}, msgs(""))
		require.Equal(t, []string{"line 6", "line 3"}, msgs("?level=error"))
		require.Equal(t, []string{"line 5 Timeout"}, msgs("?grep=timeout"))
		require.Equal(t, []string{"line 4"}, msgs("?fields="+url.QueryEscape(`{"n":4}`)))
		require.Equal(t, []string{"line 2", "line 1"}, msgs("?attempt="+attempt.String()))
		require.Equal(t, []string{"line 4", "line 3"}, msgs("?item=2&limit=2"))
	})

	t.Run("Cursors", func(t *testing.T) {
		t.Parallel()
		var p store.Page[store.Cursor]
		require.Equal(t, http.StatusOK, get(t, srv, apiBase+"/jobs/job_a/cursors?limit=1", &p))
		require.Len(t, p.Items, 1)
		require.Equal(t, "h1", p.Items[0].ParamHash)
		require.Equal(t, run2, p.Items[0].LastRunID.String())
		require.Equal(t, http.StatusOK, get(t, srv, apiBase+"/jobs/job_a/cursors?after="+p.Next, &p))
		require.Equal(t, "h2", p.Items[0].ParamHash)
		require.Equal(t, http.StatusOK, get(t, srv, apiBase+"/jobs/job_b/cursors", &p))
		require.Empty(t, p.Items)
	})

	t.Run("Jobs", func(t *testing.T) {
		t.Parallel()
		var out struct {
			Items []map[string]any `json:"items"`
		}
		require.Equal(t, http.StatusOK, get(t, srv, apiBase+"/jobs", &out))
		require.Len(t, out.Items, 2)
		a := out.Items[0]
		require.Equal(t, "job_a", a["job_id"])
		require.Equal(t, "*/5 * * * *", a["schedule"])
		require.Equal(t, run2, a["last_run_id"])
		require.Equal(t, "FAILED", a["last_status"])
		require.Equal(t, "job_b", out.Items[1]["job_id"])
		require.Nil(t, out.Items[1]["schedule"])
	})

	t.Run("BadInputIs400NamingTheParameter", func(t *testing.T) {
		t.Parallel()
		for path, want := range map[string]string{
			"/runs?status=DONE":                          `status "DONE": want one of PENDING`,
			"/runs?dry_run=maybe":                        `dry_run "maybe": want true or false`,
			"/runs?since=yesterday":                      `since "yesterday": want an RFC 3339 time`,
			"/runs?limit=0x10":                           `limit "0x10": want an integer`,
			"/runs?limit=1001":                           `limit "1001": want 1..1000`,
			"/runs?after=zz":                             `after "zz": not a page token`,
			"/runs?stauts=FAILED":                        `stauts: unknown parameter`,
			"/runs?job=a&job=b":                          `job: given 2 times`,
			"/runs/nope":                                 `run_id "nope": not a UUID`,
			"/runs/" + run2 + "?limit=5":                 `limit: unknown parameter; this endpoint takes: none`,
			"/runs/" + run2 + "/items?category=NET":      `category "NET": want one of API`,
			"/runs/" + run2 + "/attempts?item=two":       `item "two": want an integer`,
			"/runs/" + run2 + "/attempts?item=0":         `item "0": item numbers start at 1`,
			"/runs/" + run2 + "/logs?attempt=x":          `attempt "x": not a UUID`,
			"/runs/" + run2 + "/logs?fields=%7Bn%3A1%7D": `fields "{n:1}": not valid JSON`,
			"/runs/" + run2 + "/logs?fields=%5B1%5D":     `fields "[1]": want a JSON object`,
			"/runs/" + run2 + "/logs?level=loud":         `level "loud": want one of trace`,
			"/jobs/job_a/cursors?after=%zz":              `query string: invalid URL escape`,
		} {
			var e map[string]string
			require.Equal(t, http.StatusBadRequest, get(t, srv, apiBase+path, &e), path)
			require.Contains(t, e["error"], want, path)
		}
	})

	t.Run("UnknownIs404", func(t *testing.T) {
		t.Parallel()
		for path, want := range map[string]string{
			"/runs/" + noSuch:               "run " + noSuch + " not found",
			"/runs/" + noSuch + "/items":    "run " + noSuch + " not found",
			"/runs/" + noSuch + "/attempts": "run " + noSuch + " not found",
			"/runs/" + noSuch + "/logs":     "run " + noSuch + " not found",
			"/jobs/nope/cursors":            `job "nope" not found`,
			"/nothing/here":                 "no endpoint /api/v1/nothing/here",
		} {
			var e map[string]string
			require.Equal(t, http.StatusNotFound, get(t, srv, apiBase+path, &e), path)
			require.Equal(t, want, e["error"], path)
		}
	})

	t.Run("ReadOnly", func(t *testing.T) {
		t.Parallel()
		resp, err := http.Post(srv.URL+apiBase+"/runs", "application/json", strings.NewReader(`{}`))
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
		require.Equal(t, "GET, HEAD", resp.Header.Get("Allow"))
		var e map[string]string
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
		require.Contains(t, e["error"], "read-only")
		// The writes exist but this handler has no enqueuer: 403.
		resp, err = http.Post(srv.URL+apiBase+"/runs/"+run2+"/cancel", "application/json", strings.NewReader(`{}`))
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
	})
}

func TestJobsPaginate(t *testing.T) {
	t.Parallel()
	srv, _ := setupAPI(t)
	var page struct {
		Items []struct {
			JobID      string  `json:"job_id"`
			LastStatus *string `json:"last_status"`
		} `json:"items"`
		Next string `json:"next"`
	}
	require.Equal(t, http.StatusOK, get(t, srv, "/api/v1/jobs?limit=1", &page))
	require.Len(t, page.Items, 1)
	require.Equal(t, "job_a", page.Items[0].JobID)
	require.Equal(t, "FAILED", *page.Items[0].LastStatus, "the newest run of job_a")
	require.Equal(t, "job_a", page.Next)
	after := page.Next
	page.Next = "" // absent on the last page
	require.Equal(t, http.StatusOK, get(t, srv, "/api/v1/jobs?limit=1&after="+after, &page))
	require.Len(t, page.Items, 1)
	require.Equal(t, "job_b", page.Items[0].JobID)
	require.Empty(t, page.Next, "last page")
	require.Equal(t, http.StatusBadRequest, get(t, srv, "/api/v1/jobs?limit=5000", nil))
}
