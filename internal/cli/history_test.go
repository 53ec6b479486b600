package cli_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/cli"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/httpapi"
	"github.com/etlexec/etlexec/internal/store"
)

const (
	cliRun1 = "00000000-0000-7000-8000-000000000001"
	cliRun2 = "00000000-0000-7000-8000-000000000002" // FAILED dry run with items, attempts, logs
	cliRun3 = "00000000-0000-7000-8000-000000000003"
)

// seedHistoryCLI creates a migrated database with one job, three runs and run 2's items,
// attempts and log lines, inserted with plain SQL; it returns the database URL.
func seedHistoryCLI(t *testing.T) string {
	t.Helper()
	u := dbtest.URL(t)
	st, err := store.Connect(t.Context(), u)
	require.NoError(t, err)
	defer st.Close()
	a1, a2, a3 := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	ts := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO dw_etl_jobs (job_id, kind, supports_incremental, strategy) VALUES ('job_a', 'synthetic', true, 'modified_date')`, nil},
		{`INSERT INTO dw_etl_runs (run_id, job_id, status, error_category, error_message, dry_run, exclusive, started_at, ended_at, duration_ms, item_count, items_succeeded, items_failed)
			VALUES ($1, 'job_a', 'SUCCESS', 'NONE', NULL, false, false, '2026-01-01 10:00:00+00', '2026-01-01 10:01:00+00', 60000, 0, 0, 0),
			       ($2, 'job_a', 'FAILED', 'DB', 'item 2 failed', true, false, '2026-01-02 10:00:00+00', '2026-01-02 10:02:00+00', 120000, 2, 1, 1),
			       ($3, 'job_a', 'RUNNING', 'NONE', NULL, false, false, '2026-01-03 10:00:00+00', NULL, NULL, 0, 0, 0)`,
			[]any{cliRun1, cliRun2, cliRun3}},
		{`INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash, status, error_category, error_message, attempts, cursor_note)
			VALUES ($1, 1, '{"region":"eu"}', 'h1', 'SUCCESS', 'NONE', NULL, 1, NULL),
			       ($1, 2, '{"region":"us"}', 'h2', 'FAILED', 'DB', 'deadlock detected', 2, 'cursor held')`, []any{cliRun2}},
		{`INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt, status, error_category, error_message, error_detail, backoff_ms, next_retry_at, started_at)
			VALUES ($2, $1, 2, 1, 'FAILED', 'DB', 'deadlock detected', '{"sqlstate":"40P01"}', 1500, '2026-01-02 10:00:31.5+00', '2026-01-02 10:00:00+00')`, []any{cliRun2, a1}},
		{`INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt, status, started_at)
			VALUES ($2, $1, 1, 1, 'SUCCESS', '2026-01-02 10:00:01+00')`, []any{cliRun2, a2}},
		{`INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt, status, error_category, error_message, started_at)
			VALUES ($2, $1, 2, 2, 'FAILED', 'DB', 'deadlock detected', '2026-01-02 10:00:40+00')`, []any{cliRun2, a3}},
		{`INSERT INTO dw_etl_run_logs (ts, run_id, attempt_id, job_id, item_no, level, message, fields)
			VALUES ($2, $1, $4, 'job_a', 2, 'info', 'item claimed', '{"page":1}'),
			       ($2 + interval '1 second', $1, $4, 'job_a', 2, 'error', 'item failed:	deadlock', '{"sqlstate":"40P01"}'),
			       ($2 + interval '2 seconds', $1, $3, 'job_a', 1, 'info', 'item finished', '{"rows":10}')`, []any{cliRun2, ts, a2, a1}},
		// The counters the workers kept for those items and attempts, and the run's cursor note.
		{`INSERT INTO dw_etl_run_progress (run_id, shard, attempts_started, attempts_ended, retries, backoff_ms,
			max_item_attempt, succeeded, failed, failed_db) VALUES ($1, 5, 3, 3, 1, 1500, 2, 1, 1, 1)`, []any{cliRun2}},
		{`UPDATE dw_etl_runs SET cursor_note = 'run FAILED: cursors held (cursor policy run)' WHERE run_id = $1`, []any{cliRun2}},
		{`INSERT INTO dw_etl_incremental_cursors (job_id, param_hash, params, strategy, cursor_value, last_run_id)
			VALUES ('job_a', 'h1', '{"region":"eu"}', 'modified_date', '2026-01-01 00:00:00+00', $1)`, []any{cliRun1}},
	} {
		_, err := st.Pool().Exec(t.Context(), q.sql, q.args...)
		require.NoError(t, err, q.sql)
	}
	return u
}

// cliMu serialises command execution: the root command's setup (NewLogger) assigns the global
// zerolog.TimeFieldFormat on every run, which the race detector flags when two commands run at
// once. Seeding and assertions stay parallel.
var cliMu sync.Mutex

// runCLI runs `enqueuer --database-url u args...` and returns what it printed on stdout.
func runCLI(t *testing.T, u string, args ...string) (string, error) {
	t.Helper()
	cliMu.Lock()
	defer cliMu.Unlock()
	cmd := cli.Enqueuer()
	var out, stderr bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&stderr)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetArgs(append([]string{"--database-url", u}, args...))
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

func mustCLI(t *testing.T, u string, args ...string) string {
	t.Helper()
	out, err := runCLI(t, u, args...)
	require.NoError(t, err, "enqueuer %s", strings.Join(args, " "))
	return out
}

// tableRows splits table output into header and rows, each a list of cells. Cells are separated
// by two or more spaces, and every row must start each column where the header does.
func tableRows(t *testing.T, out string) (header []string, rows [][]string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	var cols []int
	sep := regexp.MustCompile(`\S+( \S+)*`)
	for i, l := range lines {
		if strings.HasPrefix(l, "next page: ") {
			continue
		}
		locs := sep.FindAllStringIndex(l, -1)
		cells := make([]string, len(locs))
		for j, loc := range locs {
			cells[j] = l[loc[0]:loc[1]]
		}
		if i == 0 {
			header = cells
			for _, loc := range locs {
				cols = append(cols, loc[0])
			}
			continue
		}
		require.Len(t, cells, len(header), "row %q", l)
		for j, loc := range locs {
			require.Equal(t, cols[j], loc[0], "column %s of %q is not aligned", header[j], l)
		}
		rows = append(rows, cells)
	}
	return header, rows
}

func TestHistoryCommands(t *testing.T) {
	t.Parallel()
	u := seedHistoryCLI(t)

	t.Run("RunsListTable", func(t *testing.T) {
		t.Parallel()
		out := mustCLI(t, u, "runs", "list", "--job", "job_a")
		header, rows := tableRows(t, out)
		require.Equal(t, []string{"RUN_ID", "JOB", "STATUS", "DRY", "TRIGGER", "STARTED", "DURATION", "ITEMS", "OK", "FAILED", "ATTEMPTS", "ERROR"}, header)
		require.Len(t, rows, 3)
		require.Equal(t, []string{cliRun3, cliRun2, cliRun1}, []string{rows[0][0], rows[1][0], rows[2][0]})
		require.Equal(t, []string{cliRun2, "job_a", "FAILED", "yes", "manual", "2026-01-02T10:00:00Z", "2m0s", "2", "1", "1", "0", "DB: item 2 failed"}, rows[1])
		require.NotContains(t, out, "next page")
	})

	t.Run("RunsListPagesWithTheTokenItPrints", func(t *testing.T) {
		t.Parallel()
		out := mustCLI(t, u, "runs", "list", "--limit", "2")
		m := regexp.MustCompile(`(?m)^next page: --after (\S+)$`).FindStringSubmatch(out)
		require.NotNil(t, m, out)
		_, rows := tableRows(t, out)
		require.Len(t, rows, 2)
		out = mustCLI(t, u, "runs", "list", "--limit", "2", "--after", m[1])
		_, rows = tableRows(t, out)
		require.Len(t, rows, 1)
		require.Equal(t, cliRun1, rows[0][0])
		require.NotContains(t, out, "next page")
	})

	t.Run("RunsListFiltersJSON", func(t *testing.T) {
		t.Parallel()
		out := mustCLI(t, u, "runs", "list", "--status", "failed,running", "--dry-run", "false", "--since", "2026-01-01T12:00:00Z", "--json")
		var p store.Page[store.Run]
		require.NoError(t, json.Unmarshal([]byte(out), &p))
		require.Len(t, p.Items, 1)
		require.Equal(t, cliRun3, p.Items[0].RunID.String())
		require.Empty(t, p.Next)
		require.Equal(t, 1, strings.Count(out, "\n}"), "one JSON document")
	})

	t.Run("RunsShow", func(t *testing.T) {
		t.Parallel()
		out := mustCLI(t, u, "runs", "show", cliRun2)
		for _, want := range []string{
			"run: " + cliRun2,
			"status: FAILED",
			"error: DB: item 2 failed",
			"dry run: yes",
			"attempts: 3 (0 running, 1 retries, 0 lost with their worker, at most 2 for one item, 1.5s total backoff)",
			"cursors: run FAILED: cursors held (cursor policy run)",
		} {
			key, val, _ := strings.Cut(want, ": ")
			require.Regexp(t, `(?m)^`+regexp.QuoteMeta(key)+`:\s+`+regexp.QuoteMeta(val)+`$`, out)
		}
		require.Regexp(t, `(?m)^\s+FAILED\s+DB\s+1$`, out)
		require.Regexp(t, `(?m)^\s+SUCCESS\s+NONE\s+1$`, out)

		out = mustCLI(t, u, "runs", "show", cliRun2, "--json")
		var d store.RunDetail
		require.NoError(t, json.Unmarshal([]byte(out), &d))
		require.Equal(t, 3, d.Attempts.Total)
		require.Equal(t, []store.CountByStatus{{Status: "FAILED", ErrorCategory: "DB", Count: 1},
			{Status: "SUCCESS", ErrorCategory: "NONE", Count: 1}}, d.Items)
	})

	t.Run("Items", func(t *testing.T) {
		t.Parallel()
		out := mustCLI(t, u, "items", cliRun2, "--status", "FAILED")
		header, rows := tableRows(t, out)
		require.Equal(t, "ITEM", header[0])
		require.Len(t, rows, 1)
		require.Equal(t, []string{"2", "FAILED", "DB", "2", `{"region": "us"}`, "h2"}, rows[0][:6])

		out = mustCLI(t, u, "items", cliRun2, "--param-hash", "h1", "--json")
		var p store.Page[store.ItemRow]
		require.NoError(t, json.Unmarshal([]byte(out), &p))
		require.Len(t, p.Items, 1)
		require.EqualValues(t, 1, p.Items[0].ItemNo)
	})

	t.Run("Attempts", func(t *testing.T) {
		t.Parallel()
		out := mustCLI(t, u, "attempts", cliRun2)
		header, rows := tableRows(t, out)
		require.Equal(t, []string{"NO", "ITEM", "TRY", "STATUS", "CATEGORY", "STARTED", "DURATION", "BACKOFF", "NEXT_RETRY", "WORKER", "ATTEMPT_ID", "ERROR", "DETAIL"}, header)
		require.Len(t, rows, 3)
		require.Equal(t, []string{"2", "1", "FAILED", "DB"}, rows[0][1:5])
		require.Equal(t, "1.5s", rows[0][7])
		require.Equal(t, "2026-01-02T10:00:31Z", rows[0][8])
		require.Equal(t, `{"sqlstate": "40P01"}`, rows[0][12])

		out = mustCLI(t, u, "attempts", cliRun2, "--item", "2", "--json")
		var p store.Page[store.AttemptRow]
		require.NoError(t, json.Unmarshal([]byte(out), &p))
		require.Len(t, p.Items, 2)
		require.EqualValues(t, 1500, *p.Items[0].BackoffMs)
		require.JSONEq(t, `{"sqlstate":"40P01"}`, string(p.Items[0].ErrorDetail))
	})

	t.Run("Logs", func(t *testing.T) {
		t.Parallel()
		out := mustCLI(t, u, "logs", cliRun2)
		header, rows := tableRows(t, out)
		require.Equal(t, []string{"TS", "LEVEL", "ITEM", "ATTEMPT_ID", "MESSAGE", "FIELDS"}, header)
		require.Len(t, rows, 3)
		require.Equal(t, "item finished", rows[0][4])
		require.Equal(t, "item failed: deadlock", rows[1][4], "a tab in a message must not break the table")

		out = mustCLI(t, u, "logs", cliRun2, "--level", "error", "--grep", "DEADLOCK", "--fields", `{"sqlstate":"40P01"}`, "--item", "2", "--json")
		var p store.Page[store.LogLine]
		require.NoError(t, json.Unmarshal([]byte(out), &p))
		require.Len(t, p.Items, 1)
		require.Equal(t, "error", p.Items[0].Level)
	})

	t.Run("Cursors", func(t *testing.T) {
		t.Parallel()
		out := mustCLI(t, u, "cursors", "job_a")
		header, rows := tableRows(t, out)
		require.Equal(t, []string{"PARAM_HASH", "PARAMS", "STRATEGY", "VALUE", "LAST_RUN_ID", "UPDATED"}, header)
		require.Len(t, rows, 1)
		require.Equal(t, []string{"h1", `{"region": "eu"}`, "modified_date", "2026-01-01T00:00:00Z", cliRun1}, rows[0][:5])
	})

	t.Run("BadInputNamesTheFlagAndValue", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"runs", "list", "--status", "DONE"}, `--status "DONE": want one of PENDING`},
			{[]string{"runs", "list", "--dry-run", "maybe"}, `--dry-run "maybe": want true or false`},
			{[]string{"runs", "list", "--since", "yesterday"}, `--since "yesterday": want an RFC 3339 time`},
			{[]string{"runs", "list", "--limit", "1001"}, `--limit "1001": want 1..1000`},
			{[]string{"runs", "list", "--after", "bogus"}, `--after "bogus": not a page token`},
			{[]string{"runs", "show", "not-a-uuid"}, `RUN_ID "not-a-uuid": not a UUID`},
			{[]string{"runs", "show", "00000000-0000-7000-8000-000000000099"}, `run 00000000-0000-7000-8000-000000000099 not found`},
			{[]string{"items", cliRun2, "--category", "NET"}, `--category "NET": want one of API`},
			{[]string{"items", "00000000-0000-7000-8000-000000000099"}, `not found`},
			{[]string{"attempts", cliRun2, "--item", "two"}, `invalid argument "two" for "--item"`},
			{[]string{"logs", cliRun2, "--attempt", "x1"}, `--attempt "x1": not a UUID`},
			{[]string{"logs", cliRun2, "--fields", "{page:1}"}, `--fields "{page:1}": not valid JSON`},
			{[]string{"logs", cliRun2, "--fields", "[1]"}, `--fields "[1]": want a JSON object`},
			{[]string{"logs", cliRun2, "--level", "loud"}, `--level "loud": want one of trace`},
			{[]string{"cursors", "nope"}, `job "nope" not found`},
		} {
			_, err := runCLI(t, u, tc.args...)
			require.Error(t, err, tc.args)
			require.Contains(t, err.Error(), tc.want, tc.args)
		}
	})

	// --json prints exactly what the API answers for the same question.
	t.Run("JSONIsTheAPIDocument", func(t *testing.T) {
		t.Parallel()
		st, err := store.Connect(t.Context(), u)
		require.NoError(t, err)
		t.Cleanup(st.Close)
		srv := httptest.NewServer(httpapi.New(httpapi.Config{Store: st}))
		t.Cleanup(srv.Close)
		for _, tc := range []struct {
			args []string
			path string
		}{
			{[]string{"runs", "list", "--job", "job_a", "--limit", "2"}, "/api/v1/runs?job=job_a&limit=2"},
			{[]string{"runs", "list", "--status", "FAILED,SUCCESS", "--dry-run", "true"}, "/api/v1/runs?status=FAILED,SUCCESS&dry_run=true"},
			{[]string{"runs", "show", cliRun2}, "/api/v1/runs/" + cliRun2},
			{[]string{"items", cliRun2, "--category", "DB"}, "/api/v1/runs/" + cliRun2 + "/items?category=DB"},
			{[]string{"attempts", cliRun2, "--item", "2"}, "/api/v1/runs/" + cliRun2 + "/attempts?item=2"},
			{[]string{"logs", cliRun2, "--level", "info", "--limit", "1"}, "/api/v1/runs/" + cliRun2 + "/logs?level=info&limit=1"},
			{[]string{"cursors", "job_a"}, "/api/v1/jobs/job_a/cursors"},
		} {
			out := mustCLI(t, u, append(tc.args, "--json")...)
			resp, err := http.Get(srv.URL + tc.path)
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", tc.path, body)
			require.JSONEq(t, string(body), out, "%v vs %s", tc.args, tc.path)
		}
	})
}
