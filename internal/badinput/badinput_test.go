// Package badinput_test feeds etlexec bad input through every door an operator uses — the
// enqueuer command tree, jobs.yaml, params flags and files, the /api/v1 JSON API, the serve
// console and the built-in kinds' handlers — and checks that each is refused with an error
// naming the problem (the field, flag, job, variable or value) and that nothing was
// half-written: the row counts and contents of every dw_etl_* table are the same before and
// after, and no task reached Redis. A few inputs that look dangerous but are valid (an integer
// beyond 2^53, SQL in a param value) are run too and must succeed with the data kept exact.
package badinput_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/cli"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/httpapi"
	"github.com/etlexec/etlexec/internal/kinds/httpjson"
	"github.com/etlexec/etlexec/internal/kinds/sqlincremental"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/serve"
	"github.com/etlexec/etlexec/internal/store"
)

// recordTables are etlexec's tables: every one is snapshotted around each bad input.
var recordTables = []string{
	"dw_etl_jobs", "dw_etl_runs", "dw_etl_run_items", "dw_etl_run_attempts",
	"dw_etl_incremental_cursors", "dw_etl_run_logs", "dw_etl_run_progress",
}

const (
	// Jobs every fixture defines.
	jobParams   = "with_params" // supports_params, overlap_policy allow
	jobNoParams = "no_params"   // supports_params false
	jobIncr     = "incr_job"    // modified_date, owns the seeded cursor

	serveToken = "badinput-serve-token"

	// beyond2p53 is 2^53+1, which a float64 cannot hold: it would round to 2^53, below2p53.
	beyond2p53 = "9007199254740993"
	below2p53  = "9007199254740992"

	sqlInParam = `'; DROP TABLE dw_etl_runs; --`
)

// cliMu serialises command runs: the root command's setup assigns the global
// zerolog.TimeFieldFormat and trigger installs the global OpenTelemetry provider, which the
// race detector flags when two commands run at once. Fixtures and assertions stay parallel.
var cliMu sync.Mutex

// fixture is one case's world: its own migrated database seeded with jobs and a finished run
// (so every record table has rows whose loss or change the snapshot would show), its own asynq
// queue, and a scratch directory.
type fixture struct {
	url       string
	queue     string
	st        *store.Store
	dir       string
	runID     uuid.UUID // a FAILED run of jobParams with one item, attempt, log line, progress shard
	attemptID uuid.UUID
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{url: dbtest.URL(t), queue: redistest.Queue(t), dir: t.TempDir(),
		runID: uuid.Must(uuid.NewV7()), attemptID: uuid.Must(uuid.NewV7())}
	cfg, err := pgxpool.ParseConfig(f.url)
	require.NoError(t, err)
	cfg.MaxConns = 4 // the Postgres server is shared
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	f.st = store.New(pool)
	f.exec(t, `INSERT INTO dw_etl_jobs (job_id, kind, supports_params, overlap_policy, queue) VALUES ($1, 'synthetic', true, 'allow', $2)`,
		jobParams, f.queue)
	f.exec(t, `INSERT INTO dw_etl_jobs (job_id, kind, queue) VALUES ($1, 'synthetic', $2)`, jobNoParams, f.queue)
	f.exec(t, `INSERT INTO dw_etl_jobs (job_id, kind, supports_params, supports_incremental, strategy, queue)
		VALUES ($1, 'synthetic', true, true, 'modified_date', $2)`, jobIncr, f.queue)
	f.exec(t, `INSERT INTO dw_etl_runs (run_id, job_id, status, error_category, error_message, exclusive, ended_at, duration_ms,
			item_count, items_failed, attempt_count)
		VALUES ($1, $2, 'FAILED', 'DATA', 'item 1 failed', false, now(), 1000, 1, 1, 1)`, f.runID, jobParams)
	f.exec(t, `INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash, status, error_category, error_message, attempts, ended_at)
		VALUES ($1, 1, '{"region":"eu"}', 'h1', 'FAILED', 'DATA', 'boom', 1, now())`, f.runID)
	f.exec(t, `INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt, status, error_category, error_message, ended_at)
		VALUES ($2, $1, 1, 1, 'FAILED', 'DATA', 'boom', now())`, f.runID, f.attemptID)
	f.exec(t, `INSERT INTO dw_etl_run_logs (run_id, attempt_id, job_id, item_no, level, message, fields)
		VALUES ($1, $2, $3, 1, 'error', 'item failed', '{"page":1}')`, f.runID, f.attemptID, jobParams)
	f.exec(t, `INSERT INTO dw_etl_run_progress (run_id, shard, attempts_started, attempts_ended, failed, failed_data) VALUES ($1, 0, 1, 1, 1, 1)`, f.runID)
	f.exec(t, `INSERT INTO dw_etl_incremental_cursors (job_id, param_hash, params, strategy, cursor_value, last_run_id)
		VALUES ($1, 'h1', '{"region":"eu"}', 'modified_date', now(), $2)`, jobIncr, f.runID)
	return f
}

func (f *fixture) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	_, err := f.st.Pool().Exec(t.Context(), sql, args...)
	require.NoError(t, err, sql)
}

func (f *fixture) queryInt(t *testing.T, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, f.st.Pool().QueryRow(t.Context(), sql, args...).Scan(&n), sql)
	return n
}

func (f *fixture) queryStrings(t *testing.T, sql string, args ...any) []string {
	t.Helper()
	rows, err := f.st.Pool().Query(t.Context(), sql, args...)
	require.NoError(t, err, sql)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

// write puts content into a file of the fixture's directory and returns its path.
func (f *fixture) write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(f.dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// tableState is what the snapshot keeps of one table: its row count and a digest of its rows.
type tableState struct {
	Rows   int64
	Digest string
}

func (f *fixture) snapshot(t *testing.T) map[string]tableState {
	t.Helper()
	out := make(map[string]tableState, len(recordTables))
	for _, tbl := range recordTables {
		var s tableState
		require.NoError(t, f.st.Pool().QueryRow(t.Context(),
			`SELECT count(*), coalesce(md5(string_agg(r::text, E'\n' ORDER BY r::text)), '') FROM public.`+tbl+` r`).
			Scan(&s.Rows, &s.Digest), "snapshot %s", tbl)
		out[tbl] = s
	}
	return out
}

// queued is how many tasks the fixture's queue holds in Redis.
func (f *fixture) queued(t *testing.T) int {
	t.Helper()
	insp := asynq.NewInspector(redistest.ConnOpt(t))
	defer insp.Close()
	qs, err := insp.Queues()
	require.NoError(t, err)
	if !slices.Contains(qs, f.queue) {
		return 0
	}
	info, err := insp.GetQueueInfo(f.queue)
	require.NoError(t, err)
	return info.Size
}

// latestRun is the newest run of job other than the seeded one (run_id is a UUIDv7), or uuid.Nil.
func (f *fixture) latestRun(t *testing.T, job string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	err := f.st.Pool().QueryRow(t.Context(),
		`SELECT run_id FROM dw_etl_runs WHERE job_id = $1 AND run_id <> $2 ORDER BY run_id DESC LIMIT 1`, job, f.runID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil
	}
	require.NoError(t, err)
	return id
}

// result is what an input produced: whether it was accepted, and what the user sees (the
// command's stderr and stdout, the HTTP status and body, or the handler's error).
type result struct {
	ok   bool
	text string
	err  error // the handler's error, for its category
}

// cli runs `enqueuer --database-url URL --redis-url URL args...` through cli.Main, as the
// binary does.
func (f *fixture) cli(t *testing.T, args ...string) result {
	t.Helper()
	cliMu.Lock()
	defer cliMu.Unlock()
	cmd := cli.Enqueuer()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetIn(strings.NewReader(""))
	full := append([]string{"--database-url", f.url, "--redis-url", redistest.URL(), "--log-level", "error"}, args...)
	code := cli.Main(t.Context(), cmd, full)
	text := fmt.Sprintf("exit %d\nstderr:\n%s\nstdout:\n%s", code, stderr.String(), stdout.String())
	if code != 0 {
		require.Contains(t, stderr.String(), "error: ", "a failed command says why on stderr")
	}
	return result{ok: code == 0, text: text}
}

// httpDo sends one request to h and returns "HTTP <status>" and the body (HTML unescaped).
func httpDo(t *testing.T, h http.Handler, method, path string, form url.Values, auth bool) result {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequestWithContext(t.Context(), method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+serveToken)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	out := rec.Body.String()
	// A console page says what went wrong in its error paragraph; keep just that.
	if _, rest, ok := strings.Cut(out, `<p class="error">`); ok {
		out, _, _ = strings.Cut(rest, "</p>")
		out = html.UnescapeString(strings.TrimSpace(out))
	}
	return result{ok: rec.Code < 300, text: fmt.Sprintf("HTTP %d\n%s", rec.Code, out)}
}

func (f *fixture) api(t *testing.T, path string) result {
	t.Helper()
	return httpDo(t, httpapi.New(httpapi.Config{Store: f.st}), http.MethodGet, path, nil, false)
}

// server is the whole `enqueuer serve` handler (console, /api/v1, asynqmon behind the token).
func (f *fixture) server(t *testing.T) http.Handler {
	t.Helper()
	srv, err := serve.New(serve.Config{Store: f.st, Redis: redistest.ConnOpt(t), Token: serveToken, Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	return srv.Handler()
}

// item runs handler on one item whose target transaction is on the fixture's database, then
// rolls the transaction back (what the executor does with a failed item).
func (f *fixture) item(t *testing.T, handler etl.HandlerFunc, kind string, config string, strategy etl.Strategy) result {
	t.Helper()
	tx, err := f.st.Pool().Begin(t.Context())
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.WithoutCancel(t.Context())) }()
	it := etl.NewItem(etl.ItemSpec{
		JobID: "badinput_job", Kind: kind, RunID: uuid.Must(uuid.NewV7()), AttemptID: uuid.Must(uuid.NewV7()),
		ItemAttempt: 1, MaxAttempts: 3, ItemNo: 1, Params: []byte(`{"region":"eu"}`), ParamHash: "h",
		Strategy: strategy, Config: []byte(config), Logger: zerolog.Nop(), Target: tx,
	})
	err = handler(t.Context(), it)
	if err != nil {
		return result{text: err.Error(), err: err}
	}
	return result{ok: true}
}

// uniqueEnv sets an environment variable of a unique name (t.Setenv forbids parallel tests)
// and returns the name; value "" leaves it unset.
func uniqueEnv(t *testing.T, value string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "ETL_BADINPUT_" + strings.ToUpper(hex.EncodeToString(b[:]))
	if value != "" {
		require.NoError(t, os.Setenv(name, value))
		t.Cleanup(func() { _ = os.Unsetenv(name) })
	}
	return name
}

// apply runs `jobs apply -f` on a jobs.yaml with content.
func (f *fixture) apply(t *testing.T, content string) result {
	t.Helper()
	return f.cli(t, "jobs", "apply", "-f", f.write(t, "jobs.yaml", content))
}

// jobYAML is one job of a jobs.yaml list: job_id, then the other lines indented under it.
func jobYAML(jobID string, lines ...string) string {
	var b strings.Builder
	b.WriteString("  - job_id: " + jobID + "\n")
	for _, l := range lines {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// jobsYAML is a jobs.yaml of the given jobs.
func jobsYAML(jobs ...string) string { return "jobs:\n" + strings.Join(jobs, "") }

type testCase struct {
	name string
	// valid inputs must be accepted; the others refused with every want substring in the
	// output and no change to any record table or the queue.
	valid bool
	// skip, when set, starts with "BUG:" and describes a product bug the case reveals.
	skip  string
	setup func(t *testing.T, f *fixture)
	run   func(t *testing.T, f *fixture) result
	want  []string
	check func(t *testing.T, f *fixture, r result)
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("x", 70<<10) // one param value over the 64 KiB set limit

	cases := []testCase{
		// ---- params: --param and --params-file on `trigger` ----
		{
			name: "ParamsFileMalformedJSON",
			run: func(t *testing.T, f *fixture) result {
				p := f.write(t, "p.jsonl", "{\"region\":\"eu\"}\n{\"region\": \"us\",}\n")
				return f.cli(t, "trigger", jobParams, "--params-file", p)
			},
			want: []string{"--params-file", "p.jsonl", "line 2", "invalid params"},
		},
		{
			name: "ParamsFileArrayElementNotObject",
			run: func(t *testing.T, f *fixture) result {
				p := f.write(t, "p.json", `[{"region":"eu"}, {"region":"us"}, "ap"]`)
				return f.cli(t, "trigger", jobParams, "--params-file", p)
			},
			want: []string{"--params-file", "element 2", "top level is a string, want a JSON object"},
		},
		{
			name: "ParamsFileSetOver64KiB",
			run: func(t *testing.T, f *fixture) result {
				p := f.write(t, "p.json", `[{"region":"eu"}, {"blob":"`+huge+`"}]`)
				return f.cli(t, "trigger", jobParams, "--params-file", p)
			},
			want: []string{"--params-file", "element 1", "over the limit of 65536"},
		},
		{
			name: "ParamFlagSetOver64KiB",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "trigger", jobParams, "--param", "blob="+huge)
			},
			want: []string{"--param", "blob", "65536"},
		},
		{
			name: "ParamFlagNULEscape",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "trigger", jobParams, "--param", `note="a\u0000b"`)
			},
			want: []string{`--param: param "note=\"a\\u0000b\""`, "NUL"},
		},
		{
			name: "ParamFlagErrorPathNamesKey",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "trigger", jobParams, "--param", `note="a\u0000b"`)
			},
			want: []string{"at $.note"},
		},
		{
			name: "ParamFlagRawNULByte",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "trigger", jobParams, "--param", "note=a\x00b")
			},
			want: []string{`--param: param "note=a\x00b"`, "NUL"},
		},
		{
			name: "ParamsFileNUL",
			run: func(t *testing.T, f *fixture) result {
				p := f.write(t, "p.jsonl", "{\"region\":\"eu\"}\n{\"region\":\"u\\u0000s\"}\n")
				return f.cli(t, "trigger", jobParams, "--params-file", p)
			},
			want: []string{"--params-file", "line 2", "NUL", "$.region"},
		},
		{
			name: "ParamsFileDuplicateKey",
			run: func(t *testing.T, f *fixture) result {
				p := f.write(t, "p.jsonl", `{"region":"eu","region":"us"}`)
				return f.cli(t, "trigger", jobParams, "--params-file", p)
			},
			want: []string{"--params-file", "line 1", `duplicate key "region"`},
		},
		{
			name: "ParamsFileEmpty",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "trigger", jobParams, "--params-file", f.write(t, "empty.jsonl", ""))
			},
			want: []string{"--params-file", "empty.jsonl", "no param sets"},
		},
		{
			name: "ParamsFileEmptyArray",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "trigger", jobParams, "--params-file", f.write(t, "empty.json", " [ ]\n"))
			},
			want: []string{"--params-file", "empty.json", "no param sets"},
		},
		{
			name: "ParamsFileMissing",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "trigger", jobParams, "--params-file", filepath.Join(f.dir, "nowhere.jsonl"))
			},
			want: []string{"--params-file", "nowhere.jsonl", "no such file"},
		},
		{
			name: "ParamFlagWithoutEquals",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "trigger", jobParams, "--param", "region=eu", "--param", "records")
			},
			want: []string{`--param: param "records"`, "want key=value"},
		},
		{
			name: "ParamFlagNumberOverflow",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "trigger", jobParams, "--param", "n=1e400")
			},
			want: []string{`param "n=1e400"`},
		},
		{
			name: "TriggerUnknownJob",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "trigger", "no_such_job", "--param", "region=eu")
			},
			want: []string{`unknown job "no_such_job"`},
		},
		{
			name: "TriggerDisabledJob",
			setup: func(t *testing.T, f *fixture) {
				f.exec(t, `INSERT INTO dw_etl_jobs (job_id, kind, enabled, queue) VALUES ('off_job', 'synthetic', false, $1)`, f.queue)
			},
			run:  func(t *testing.T, f *fixture) result { return f.cli(t, "trigger", "off_job") },
			want: []string{`job is disabled: "off_job"`},
		},
		{
			name: "TriggerParamsForJobWithoutSupportsParams",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "trigger", jobNoParams, "--param", "region=eu")
			},
			want: []string{`job "no_params"`, "supports_params false", "--param"},
		},
		{
			name: "TriggerParamsFileForJobWithoutSupportsParams",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "trigger", jobNoParams, "--params-file", f.write(t, "p.jsonl", `{"region":"eu"}`))
			},
			want: []string{`job "no_params"`, "supports_params false"},
		},

		// ---- valid inputs that look dangerous ----
		{
			name:  "ValidBigIntParamsFileKeptExact",
			valid: true,
			run: func(t *testing.T, f *fixture) result {
				p := f.write(t, "p.jsonl", `{"n":`+beyond2p53+"}\n"+`{"n":`+below2p53+"}\n")
				return f.cli(t, "trigger", jobParams, "--params-file", p)
			},
			check: func(t *testing.T, f *fixture, r result) {
				require.Contains(t, r.text, "2 items (0 duplicate param sets dropped)")
				run := f.latestRun(t, jobParams)
				params := f.queryStrings(t, `SELECT params::text FROM dw_etl_run_items WHERE run_id = $1 ORDER BY item_no`, run)
				require.Len(t, params, 2, "2^53+1 and 2^53 are two param sets")
				require.Contains(t, params[0], beyond2p53)
				require.Contains(t, params[1], below2p53)
				require.Equal(t, int64(2), f.queryInt(t, `SELECT count(DISTINCT param_hash) FROM dw_etl_run_items WHERE run_id = $1`, run))
				require.Equal(t, 2, f.queued(t), "one task per item")
			},
		},
		{
			name:  "ValidBigIntParamFlagKeptExact",
			valid: true,
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "trigger", jobParams, "--param", "n="+beyond2p53)
			},
			check: func(t *testing.T, f *fixture, r result) {
				run := f.latestRun(t, jobParams)
				var runParams, itemParams string
				require.NoError(t, f.st.Pool().QueryRow(t.Context(),
					`SELECT r.params::text, i.params::text FROM dw_etl_runs r JOIN dw_etl_run_items i USING (run_id) WHERE run_id = $1`, run).
					Scan(&runParams, &itemParams))
				require.Contains(t, runParams, beyond2p53)
				require.Contains(t, itemParams, beyond2p53)
				require.NotContains(t, itemParams, below2p53)
			},
		},
		{
			name:  "ValidSQLInParamValueStoredAsData",
			valid: true,
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "trigger", jobParams, "--param", "region="+sqlInParam)
			},
			check: func(t *testing.T, f *fixture, r result) {
				run := f.latestRun(t, jobParams)
				require.NotEqual(t, uuid.Nil, run)
				require.Equal(t, []string{sqlInParam}, f.queryStrings(t, `SELECT params->>'region' FROM dw_etl_run_items WHERE run_id = $1`, run))
				require.Equal(t, int64(1), f.queryInt(t, `SELECT count(*) FROM dw_etl_runs WHERE run_id = $1`, f.runID), "the seeded run survives")
			},
		},

		// ---- jobs.yaml: `jobs apply -f` (validated first; all or nothing) ----
		{
			name: "YAMLEmptyFile",
			run:  func(t *testing.T, f *fixture) result { return f.apply(t, "\n  \n") },
			want: []string{"jobs.yaml is empty"},
		},
		{
			name: "YAMLUnknownKind",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("bad_kind", "kind: nosuch_kind")))
			},
			want: []string{`job "bad_kind": kind: unknown kind "nosuch_kind"`},
		},
		{
			name: "YAMLUnknownStrategy",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("bad_strategy", "kind: synthetic", "supports_incremental: true", "strategy: hourly")))
			},
			want: []string{`job "bad_strategy": strategy: unknown value "hourly"`},
		},
		{
			name: "YAMLParamSourceWithoutSupportsParams",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("ps_job", "kind: synthetic", "param_source:", `  static: [{region: eu}]`)))
			},
			want: []string{`job "ps_job": param_source: given for a job with supports_params: false`},
		},
		{
			name: "YAMLBadCronSchedule",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("bad_cron", "kind: synthetic", `schedule: "61 * * * *"`)))
			},
			want: []string{`job "bad_cron": schedule: "61 * * * *" is not a cron spec`},
		},
		{
			name: "YAMLDuplicateJobID",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("dup_job", "kind: synthetic"), jobYAML("dup_job", "kind: synthetic")))
			},
			want: []string{`job "dup_job": job_id: duplicate of job #1`},
		},
		{
			name: "YAMLUnknownTopLevelKey",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, "jobz:\n"+jobYAML("typo_top", "kind: synthetic"))
			},
			want: []string{`unknown field "jobz"`},
		},
		{
			name: "YAMLUnknownJobField",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("typo_field", "kind: synthetic", "max_atempts: 5")))
			},
			want: []string{`unknown field "max_atempts"`},
		},
		{
			name: "YAMLJobIDWithSQL",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML(`"x'; DROP TABLE dw_etl_jobs; --"`, "kind: synthetic")))
			},
			want: []string{`job_id: "x'; DROP TABLE dw_etl_jobs; --" must be a slug`},
		},
		{
			name: "YAMLQueueWithBraces",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("brace_queue", "kind: synthetic", `queue: "etl{1}"`)))
			},
			want: []string{`job "brace_queue": queue: "etl{1}"`, "no braces"},
		},
		{
			name: "YAMLMaxAttemptsZero",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("zero_attempts", "kind: synthetic", "max_attempts: 0")))
			},
			want: []string{`job "zero_attempts": max_attempts: 0 must be between 1 and 100`},
		},
		{
			name: "YAMLTimeoutInWords",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("wordy_timeout", "kind: synthetic", "timeout: ten minutes")))
			},
			want: []string{`job "wordy_timeout": timeout: "ten minutes" is not a duration`},
		},
		{
			name: "YAMLModifiedDateWithoutSupportsIncremental",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("not_incr", "kind: synthetic", "strategy: modified_date")))
			},
			want: []string{`job "not_incr": strategy: "modified_date" needs supports_incremental: true`},
		},
		{
			name: "YAMLUnknownFieldNamesJob",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("first_job", "kind: synthetic"), jobYAML("second_job", "kind: synthetic", "max_atempts: 5")))
			},
			want: []string{`unknown field "max_atempts"`, "second_job"},
		},
		{
			name: "YAMLKindMissing",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("no_kind", "description: x")))
			},
			want: []string{`job "no_kind": kind: required`},
		},
		{
			name: "YAMLConfigNotMapping",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("list_config", "kind: synthetic", "config: [1, 2]")))
			},
			want: []string{`job "list_config": config: must be a mapping`},
		},
		{
			name: "YAMLParamSourceSQLWithoutEnv",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("sql_source", "kind: synthetic", "supports_params: true",
					"param_source:", "  sql: SELECT region FROM regions")))
			},
			want: []string{`job "sql_source": param_source: sql needs source_url_env`},
		},
		{
			name: "YAMLNULInConfigRefusedByPostgresAllOrNothing",
			run: func(t *testing.T, f *fixture) result {
				// Valid YAML; validation refuses the NUL (jsonb cannot hold U+0000) before
				// anything is written, so the good first job is not created either.
				return f.apply(t, jobsYAML(jobYAML("good_first", "kind: synthetic"),
					jobYAML("nul_job", "kind: synthetic", `config: {note: "a\0b"}`)))
			},
			want: []string{`job "nul_job"`, "config", "NUL"},
			check: func(t *testing.T, f *fixture, _ result) {
				require.Zero(t, f.queryInt(t, `SELECT count(*) FROM dw_etl_jobs WHERE job_id IN ('good_first', 'nul_job')`))
			},
		},
		{
			name: "YAMLNULInConfigNamesFieldAndValue",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("nul_job", "kind: synthetic", `config: {note: "a\0b"}`)))
			},
			want: []string{`job "nul_job"`, "config", "NUL"},
		},
		{
			name: "YAMLStaticParamSourceSetOver64KiB",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("big_static", "kind: synthetic", "supports_params: true",
					"param_source:", "  static:", "    - {region: eu}", "    - {blob: "+huge+"}")))
			},
			want: []string{`job "big_static": param_source: static[1]`, "65536"},
		},
		{
			name: "YAMLOneGoodOneBadCreatesNeither",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(jobYAML("good_job", "kind: synthetic"), jobYAML("bad_one", "kind: nosuch_kind")))
			},
			want: []string{`job "bad_one": kind: unknown kind "nosuch_kind"`},
			check: func(t *testing.T, f *fixture, _ result) {
				require.Zero(t, f.queryInt(t, `SELECT count(*) FROM dw_etl_jobs WHERE job_id IN ('good_job', 'bad_one')`))
			},
		},
		{
			name: "YAMLUpdateOfExistingJobNotAppliedWhenAnotherIsBad",
			run: func(t *testing.T, f *fixture) result {
				return f.apply(t, jobsYAML(
					jobYAML(jobParams, "kind: synthetic", "description: changed", "supports_params: true", "overlap_policy: allow"),
					jobYAML("bad_two", "kind: synthetic", "max_attempts: 0")))
			},
			want: []string{`job "bad_two": max_attempts: 0`},
			check: func(t *testing.T, f *fixture, _ result) {
				require.Equal(t, []string{""}, f.queryStrings(t, `SELECT description FROM dw_etl_jobs WHERE job_id = $1`, jobParams))
			},
		},

		// ---- run operations and history commands ----
		{
			name: "RerunMalformedRunID",
			run:  func(t *testing.T, f *fixture) result { return f.cli(t, "rerun", "not-a-uuid", "--preview") },
			want: []string{`RUN_ID "not-a-uuid": not a uuid`},
		},
		{
			name: "CancelMalformedRunID",
			run:  func(t *testing.T, f *fixture) result { return f.cli(t, "cancel", "not-a-uuid", "--reason", "x") },
			want: []string{`RUN_ID "not-a-uuid": not a uuid`},
		},
		{
			name: "RunsShowMalformedRunID",
			run:  func(t *testing.T, f *fixture) result { return f.cli(t, "runs", "show", "not-a-uuid") },
			want: []string{`RUN_ID "not-a-uuid": not a UUID`},
		},
		{
			name: "RerunBogusStatus",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "rerun", f.runID.String(), "--status", "FAILED,BOGUS")
			},
			want: []string{`--status: unknown value "BOGUS"`},
		},
		{
			name: "CancelUnknownRunID",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "cancel", "00000000-0000-7000-8000-000000000099")
			},
			want: []string{"00000000-0000-7000-8000-000000000099", "not found"},
		},
		{
			name: "CancelFinishedRun",
			run:  func(t *testing.T, f *fixture) result { return f.cli(t, "cancel", f.runID.String(), "--reason", "late") },
			want: []string{"run is not pending or running"},
			check: func(t *testing.T, f *fixture, r result) {
				require.Contains(t, r.text, f.runID.String(), "the error names the run")
			},
		},
		{
			name: "RerunNothingMatches",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "rerun", f.runID.String(), "--status", "SKIPPED")
			},
			want: []string{"no items match the rerun filter"},
			check: func(t *testing.T, f *fixture, r result) {
				require.Contains(t, r.text, f.runID.String(), "the error names the run")
			},
		},
		{
			name: "RerunSucceededItems",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "rerun", f.runID.String(), "--status", "SUCCESS")
			},
			want: []string{"succeeded items are not rerun", "trigger a new run"},
			check: func(t *testing.T, f *fixture, r result) {
				require.Contains(t, r.text, f.runID.String(), "the error names the run")
			},
		},
		{
			name: "RunsListBadSince",
			run:  func(t *testing.T, f *fixture) result { return f.cli(t, "runs", "list", "--since", "yesterday") },
			want: []string{`--since "yesterday"`},
		},
		{
			name: "AttemptsItemZero",
			run:  func(t *testing.T, f *fixture) result { return f.cli(t, "attempts", f.runID.String(), "--item", "0") },
			want: []string{`--item "0": item numbers start at 1`},
		},
		{
			name: "CursorsUnknownJob",
			run:  func(t *testing.T, f *fixture) result { return f.cli(t, "cursors", "no_such_job") },
			want: []string{`job "no_such_job" not found`},
		},
		{
			name: "RunsListBogusStatus",
			run:  func(t *testing.T, f *fixture) result { return f.cli(t, "runs", "list", "--status", "FAILED,BOGUS") },
			want: []string{`--status "BOGUS": want one of`},
		},
		{
			name: "LogsFieldsNotJSON",
			run:  func(t *testing.T, f *fixture) result { return f.cli(t, "logs", f.runID.String(), "--fields", "{bad") },
			want: []string{`--fields "{bad": not valid JSON`},
		},
		{
			name: "LogsFieldsNotObject",
			run:  func(t *testing.T, f *fixture) result { return f.cli(t, "logs", f.runID.String(), "--fields", "[1]") },
			want: []string{`--fields "[1]": want a JSON object`},
		},
		{
			name: "DatabaseURLNotPostgres",
			run: func(t *testing.T, f *fixture) result {
				return f.cli(t, "runs", "list", "--database-url", "mysql://etl:pw@127.0.0.1/x")
			},
			want: []string{"DATABASE_URL: want postgres://", "mysql://etl:xxxxx@127.0.0.1/x"},
			check: func(t *testing.T, _ *fixture, r result) {
				require.NotContains(t, r.text, ":pw@", "the password is redacted")
			},
		},

		// ---- /api/v1 (httpapi.New) ----
		{
			name: "APIRunMalformedRunID",
			run:  func(t *testing.T, f *fixture) result { return f.api(t, "/api/v1/runs/not-a-uuid") },
			want: []string{"HTTP 400", `run_id \"not-a-uuid\": not a UUID`},
		},
		{
			name: "APIRunsNegativeLimit",
			run:  func(t *testing.T, f *fixture) result { return f.api(t, "/api/v1/runs?limit=-5") },
			want: []string{"HTTP 400", `limit \"-5\": want 1..1000`},
		},
		{
			name: "APIRunsGarbageAfter",
			run:  func(t *testing.T, f *fixture) result { return f.api(t, "/api/v1/runs?after=garbage") },
			want: []string{"HTTP 400", `after \"garbage\": not a page token`},
		},
		{
			name: "APIRunsBogusStatus",
			run:  func(t *testing.T, f *fixture) result { return f.api(t, "/api/v1/runs?status=FAILED,BOGUS") },
			want: []string{"HTTP 400", `status \"BOGUS\"`},
		},
		{
			name: "APIRunsUnknownParameter",
			run:  func(t *testing.T, f *fixture) result { return f.api(t, "/api/v1/runs?statuz=FAILED") },
			want: []string{"HTTP 400", "statuz: unknown parameter"},
		},
		{
			name: "APICursorsUnknownJob",
			run:  func(t *testing.T, f *fixture) result { return f.api(t, "/api/v1/jobs/no_such_job/cursors") },
			want: []string{"HTTP 404", `job \"no_such_job\" not found`},
		},
		{
			name: "APILogsFieldsNotJSON",
			run: func(t *testing.T, f *fixture) result {
				return f.api(t, "/api/v1/runs/"+f.runID.String()+"/logs?fields="+url.QueryEscape("{bad"))
			},
			want: []string{"HTTP 400", `fields \"{bad\": not valid JSON`},
		},

		// ---- `enqueuer serve` (console and /api/v1 behind the token) ----
		{
			name: "ServeAPIRunsNegativeLimit",
			run: func(t *testing.T, f *fixture) result {
				return httpDo(t, f.server(t), http.MethodGet, "/api/v1/runs?limit=-5", nil, true)
			},
			want: []string{"HTTP 400", `limit \"-5\"`},
		},
		{
			name: "ServeConsoleCancelMalformedRunID",
			run: func(t *testing.T, f *fixture) result {
				return httpDo(t, f.server(t), http.MethodPost, "/runs/not-a-uuid/cancel", url.Values{"reason": {"x"}}, true)
			},
			want: []string{"HTTP 404", `run id "not-a-uuid": not a UUID`},
		},
		{
			name: "ServeConsoleRerunBogusStatus",
			run: func(t *testing.T, f *fixture) result {
				return httpDo(t, f.server(t), http.MethodPost, "/runs/"+f.runID.String()+"/rerun",
					url.Values{"preview": {"0"}, "status": {"FAILED,BOGUS"}}, true)
			},
			want: []string{"HTTP 400", `status "BOGUS": want one of`},
		},

		// ---- job config reaching the kinds' handlers ----
		{
			name: "SQLIncrementalTargetTableWithSQL",
			setup: func(t *testing.T, f *fixture) {
				f.exec(t, `CREATE TABLE y (id int); INSERT INTO y VALUES (1)`)
			},
			run: func(t *testing.T, f *fixture) result {
				src, err := pgxpool.New(t.Context(), dbtest.EmptyDatabase(t))
				require.NoError(t, err)
				defer src.Close()
				_, err = src.Exec(t.Context(), `CREATE TABLE src (id int PRIMARY KEY, modified_at timestamptz NOT NULL);
					INSERT INTO src VALUES (1, now())`)
				require.NoError(t, err)
				env := uniqueEnv(t, src.Config().ConnString())
				return f.item(t, sqlincremental.Handler, sqlincremental.Kind, fmt.Sprintf(`{"source_url_env": %q,
					"query": "SELECT id, modified_at FROM src WHERE modified_at > :cursor_start",
					"target_table": "x; drop table y", "key_columns": ["id"]}`, env), etl.StrategyLastRun)
			},
			want: []string{`target table "x; drop table y" does not exist`},
			check: func(t *testing.T, f *fixture, r result) {
				require.Equal(t, etl.CategoryData, etl.Classify(r.err), "%v", r.err)
				require.True(t, etl.IsPermanent(r.err))
				require.Equal(t, int64(1), f.queryInt(t, `SELECT count(*) FROM y`), "table y survives with its row")
			},
		},
		{
			name: "SQLIncrementalMissingTargetTable",
			run: func(t *testing.T, f *fixture) result {
				return f.item(t, sqlincremental.Handler, sqlincremental.Kind, `{"source_url_env": "ETL_BADINPUT_UNUSED",
					"query": "SELECT id FROM src", "target_table": "dw.nowhere", "key_columns": ["id"], "columns": {"id": "id"}}`,
					etl.StrategyNone)
			},
			want: []string{`target table "dw"."nowhere" does not exist`},
			check: func(t *testing.T, _ *fixture, r result) {
				require.Equal(t, etl.CategoryData, etl.Classify(r.err), "%v", r.err)
			},
		},
		{
			name: "HTTPJSONMissingTargetTable",
			run: func(t *testing.T, f *fixture) result {
				return f.item(t, httpjson.Handler, httpjson.Kind, `{"base_url": "http://127.0.0.1:1/items",
					"target_table": "api_nowhere", "key_columns": ["id"], "columns": {"id": "id"}}`, etl.StrategyNone)
			},
			want: []string{`target table "api_nowhere" does not exist`},
			check: func(t *testing.T, _ *fixture, r result) {
				require.Equal(t, etl.CategoryData, etl.Classify(r.err), "%v", r.err)
			},
		},
		{
			name: "SQLIncrementalSourceURLEnvUnset",
			run: func(t *testing.T, f *fixture) result {
				return f.item(t, sqlincremental.Handler, sqlincremental.Kind, fmt.Sprintf(`{"source_url_env": %q,
					"query": "SELECT id FROM src", "target_table": "dw_orders", "key_columns": ["id"]}`, uniqueEnv(t, "")),
					etl.StrategyNone)
			},
			want: []string{"ETL_BADINPUT_", "(source_url_env) is not set"},
			check: func(t *testing.T, _ *fixture, r result) {
				require.Equal(t, etl.CategorySystem, etl.Classify(r.err), "%v", r.err)
				require.True(t, etl.IsPermanent(r.err))
			},
		},
		{
			name: "SQLIncrementalSourceURLEnvInvalidNeverQuoted",
			run: func(t *testing.T, f *fixture) result {
				env := uniqueEnv(t, "postgres://etl:s3cr3t-pw@127.0.0.1:notaport/x")
				r := f.item(t, sqlincremental.Handler, sqlincremental.Kind, fmt.Sprintf(`{"source_url_env": %q,
					"query": "SELECT id FROM src", "target_table": "dw_orders", "key_columns": ["id"]}`, env), etl.StrategyNone)
				require.Contains(t, r.text, env, "the error names the variable")
				return r
			},
			want: []string{"(source_url_env) holds an invalid connection string"},
			check: func(t *testing.T, _ *fixture, r result) {
				require.NotContains(t, r.text, "s3cr3t-pw", "the variable's value never appears")
				require.NotContains(t, r.text, "notaport")
			},
		},
		{
			name: "HTTPJSONAuthEnvUnset",
			run: func(t *testing.T, f *fixture) result {
				return f.item(t, httpjson.Handler, httpjson.Kind, fmt.Sprintf(`{"base_url": "http://127.0.0.1:1/items",
					"auth_env": %q, "target_table": "api_items", "key_columns": ["id"], "columns": {"id": "id"}}`, uniqueEnv(t, "")),
					etl.StrategyNone)
			},
			want: []string{"ETL_BADINPUT_", "(auth_env) is not set"},
			check: func(t *testing.T, _ *fixture, r result) {
				require.Equal(t, etl.CategorySystem, etl.Classify(r.err), "%v", r.err)
			},
		},
	}

	var bad, valid int
	for _, tc := range cases {
		if tc.valid {
			valid++
		} else {
			bad++
		}
	}
	require.GreaterOrEqual(t, bad, 24, "bad inputs")
	t.Logf("%d bad inputs and %d valid look-alikes", bad, valid)

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.skip != "" && os.Getenv("BADINPUT_RUN_BUGS") == "" {
				t.Skip(tc.skip + " (set BADINPUT_RUN_BUGS=1 to run it)")
			}
			f := newFixture(t)
			if tc.setup != nil {
				tc.setup(t, f)
			}
			before := f.snapshot(t)
			r := tc.run(t, f)
			after := f.snapshot(t)
			t.Logf("%s", shorten(r.text, 700))
			if tc.valid {
				// The after snapshot read every record table, so none was dropped.
				require.True(t, r.ok, "valid input refused:\n%s", r.text)
				for _, tbl := range recordTables {
					require.GreaterOrEqual(t, after[tbl].Rows, before[tbl].Rows, "%s lost rows", tbl)
				}
			} else {
				require.False(t, r.ok, "bad input accepted:\n%s", r.text)
				for _, w := range tc.want {
					require.Contains(t, r.text, w, "the error names the problem")
				}
				require.Equal(t, before, after, "bad input changed the record (half-written?):\n%s", r.text)
				require.Zero(t, f.queued(t), "bad input enqueued tasks")
			}
			if tc.check != nil {
				tc.check(t, f, r)
			}
		})
	}
}

// shorten keeps the start of s for the test log.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("... (%d bytes)", len(s))
}
