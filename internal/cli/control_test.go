package cli_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/cli"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/store"
)

// runCLIFull is runCLI with stderr and an exit code, as cli.Main maps them.
func runCLIFull(t *testing.T, u string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cliMu.Lock()
	defer cliMu.Unlock()
	cmd := cli.Enqueuer()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	// A command that waits (trigger --wait) must not outlive a broken test by minutes.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	code = cli.Main(ctx, cmd, append([]string{"--database-url", u, "--redis-url", redistest.URL(), "--log-level", "error"}, args...))
	return out.String(), errb.String(), code
}

func mustRun(t *testing.T, u string, args ...string) string {
	t.Helper()
	out, errs, code := runCLIFull(t, u, args...)
	require.Zero(t, code, "enqueuer %s: %s", strings.Join(args, " "), errs)
	return out
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

func jobsYAML(queue string, extra string) string {
	return `jobs:
  - job_id: regions
    kind: synthetic
    supports_params: true
    overlap_policy: allow
    queue: ` + queue + `
    history_retention: 30d
    alert_on: [FAILED]
    expected_duration: 45m
    schedule: "0 * * * *"
    catchup: each
    catchup_limit: 4
` + extra
}

func TestJobLifecycleCommands(t *testing.T) {
	t.Parallel()
	u := dbtest.URL(t)
	queue := redistest.Queue(t)
	spare := "  - job_id: spare\n    kind: synthetic\n    queue: " + queue + "\n"
	out := mustRun(t, u, "jobs", "apply", "-f", writeFile(t, "jobs.yaml", jobsYAML(queue, spare)))
	require.Contains(t, out, "created job regions")
	st, err := store.Connect(t.Context(), u)
	require.NoError(t, err)
	defer st.Close()
	c, err := st.GetJobControl(t.Context(), "regions")
	require.NoError(t, err)
	require.Equal(t, int64(30*24*time.Hour/time.Millisecond), *c.HistoryRetentionMs)
	require.Equal(t, []string{"FAILED"}, c.AlertOn)
	require.Equal(t, int64(45*time.Minute/time.Millisecond), *c.ExpectedDurationMs)
	require.Equal(t, "each", c.CatchupPolicy)
	require.EqualValues(t, 4, c.CatchupLimit)

	_, errs, code := runCLIFull(t, u, "jobs", "apply", "-f", writeFile(t, "bad.yaml", jobsYAML(queue, "")+"    catchup: sometimes\n"))
	require.NotZero(t, code)
	require.Contains(t, errs, "catchup")

	// Trigger with a key twice: one run. Paused: refused with the reason.
	params := writeFile(t, "p.jsonl", "{\"r\":\"eu\"}\n{\"r\":\"us\"}\n")
	first := mustRun(t, u, "trigger", "regions", "--params-file", params, "--idempotency-key", "k1")
	second := mustRun(t, u, "trigger", "regions", "--params-file", params, "--idempotency-key", "k1")
	runID := regexp.MustCompile(`^run (\S+) `).FindStringSubmatch(first)[1]
	require.Contains(t, second, "run "+runID+" of job regions: already created for idempotency key \"k1\"")
	_, errs, code = runCLIFull(t, u, "trigger", "regions", "--params-file", params, "--dry-run", "--idempotency-key", "k1")
	require.NotZero(t, code)
	require.Contains(t, errs, "idempotency key was already used")

	require.Contains(t, mustRun(t, u, "jobs", "pause", "regions", "--reason", "vendor outage", "--by", "alice"), "paused by alice")
	require.Regexp(t, `(?m)^regions\s+synthetic\s+none\s+\S+\s+0 \* \* \* \*\s+true\s+true\s`, mustRun(t, u, "jobs", "list"))
	_, errs, code = runCLIFull(t, u, "trigger", "regions", "--param", "r=apac")
	require.Equal(t, 1, code)
	require.Contains(t, errs, `job "regions" is paused by alice`)
	require.Contains(t, errs, "vendor outage")
	require.Contains(t, mustRun(t, u, "jobs", "resume", "regions"), "resumed")
	mustRun(t, u, "trigger", "regions", "--param", "r=apac")

	// Prune: spare has no runs and goes; regions has runs, so a file without it is refused whole.
	out = mustRun(t, u, "jobs", "apply", "--prune", "-f", writeFile(t, "jobs.yaml", jobsYAML(queue, "")))
	require.Contains(t, out, "deleted job spare")
	_, errs, code = runCLIFull(t, u, "jobs", "apply", "--prune", "-f", writeFile(t, "other.yaml", "jobs:\n"+spare))
	require.NotZero(t, code)
	require.Contains(t, errs, "regions")
	require.Contains(t, errs, "--with-history")
	_, err = st.GetJob(t.Context(), "spare")
	require.ErrorIs(t, err, store.ErrNotFound, "the refused apply changed nothing")

	// Delete: refused while runs are open; preview counts; --with-history removes it all.
	_, errs, code = runCLIFull(t, u, "jobs", "delete", "regions", "--with-history")
	require.NotZero(t, code)
	require.Contains(t, errs, "cancel them first")
	_, err = st.Pool().Exec(t.Context(), `UPDATE dw_etl_runs SET status = 'SUCCESS', ended_at = now()`)
	require.NoError(t, err)
	require.Contains(t, mustRun(t, u, "jobs", "delete", "regions", "--preview"), "would delete the job, 0 cursors, 0 backfills and 2 runs (3 items")
	_, errs, code = runCLIFull(t, u, "jobs", "delete", "regions")
	require.NotZero(t, code)
	require.Contains(t, errs, "--with-history")
	require.Contains(t, mustRun(t, u, "jobs", "delete", "regions", "--with-history"), "deleted the job")
	_, err = st.GetJob(t.Context(), "regions")
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestPruneCommand(t *testing.T) {
	t.Parallel()
	u := dbtest.URL(t)
	st, err := store.Connect(t.Context(), u)
	require.NoError(t, err)
	defer st.Close()
	_, err = st.Pool().Exec(t.Context(), `INSERT INTO dw_etl_jobs (job_id, kind) VALUES ('a', 'synthetic');
		INSERT INTO dw_etl_runs (run_id, job_id, status, exclusive, started_at, ended_at, item_count)
		SELECT gen_random_uuid(), 'a', 'SUCCESS', false, now() - g * interval '10 days', now() - g * interval '10 days', 4
		FROM generate_series(0, 20) g`)
	require.NoError(t, err)
	out := mustRun(t, u, "prune", "--older-than", "90d", "--preview")
	require.Contains(t, out, "would remove 12 runs, 48 items") // 90 … 200 days old; the latest run stays anyway
	out = mustRun(t, u, "prune", "--older-than", "90d", "--json")
	var rep struct {
		Runs int64 `json:"runs"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.EqualValues(t, 12, rep.Runs)
	_, errs, code := runCLIFull(t, u, "prune", "--older-than", "ninety")
	require.NotZero(t, code)
	require.Contains(t, errs, "--older-than")
}

func TestSmallerThings(t *testing.T) {
	t.Parallel()
	u := seedHistoryCLI(t)

	t.Run("LimitZeroIsAnError", func(t *testing.T) {
		_, errs, code := runCLIFull(t, u, "runs", "list", "--limit", "0")
		require.NotZero(t, code)
		require.Contains(t, errs, `--limit "0": want 1..1000`)
	})

	t.Run("UnmigratedDatabaseSaysMigrate", func(t *testing.T) {
		_, errs, code := runCLIFull(t, dbtest.EmptyDatabase(t), "runs", "list")
		require.NotZero(t, code)
		require.Contains(t, errs, "run `enqueuer migrate`")
	})

	t.Run("LogsGrepSearchesFields", func(t *testing.T) {
		out := mustRun(t, u, "logs", cliRun2, "--grep", "40p01")
		require.Contains(t, out, "item failed:")
		require.NotContains(t, out, "item claimed")
	})

	t.Run("ItemsCSVAndHashPrefix", func(t *testing.T) {
		st, err := store.Connect(t.Context(), u)
		require.NoError(t, err)
		defer st.Close()
		_, err = st.Pool().Exec(t.Context(), `UPDATE dw_etl_run_items SET param_hash = CASE item_no WHEN 1 THEN repeat('ab', 32) ELSE repeat('ac', 32) END WHERE run_id = $1`, cliRun2)
		require.NoError(t, err)
		recs, err := csv.NewReader(strings.NewReader(mustRun(t, u, "items", cliRun2, "--csv"))).ReadAll()
		require.NoError(t, err)
		require.Len(t, recs, 3)
		require.Equal(t, []string{"2", "FAILED", "DB"}, recs[2][:3])
		require.Equal(t, "deadlock detected", recs[2][len(recs[2])-1])

		out := mustRun(t, u, "items", cliRun2, "--param-hash", "acac", "--json")
		var p store.Page[store.ItemRow]
		require.NoError(t, json.Unmarshal([]byte(out), &p))
		require.Len(t, p.Items, 1)
		require.EqualValues(t, 2, p.Items[0].ItemNo)
		_, errs, code := runCLIFull(t, u, "items", cliRun2, "--param-hash", "a")
		require.Zero(t, code, errs) // too short to be a prefix: a literal filter that matches nothing
		_, err = st.Pool().Exec(t.Context(), `UPDATE dw_etl_run_items SET param_hash = repeat('ab', 31) || 'cd' WHERE run_id = $1 AND item_no = 2`, cliRun2)
		require.NoError(t, err)
		_, errs, code = runCLIFull(t, u, "items", cliRun2, "--param-hash", "abab")
		require.NotZero(t, code)
		require.Contains(t, errs, "more than one item's hash")
	})
}

// TestTriggerWaitWithoutTerminal: with stderr not a terminal, --wait prints progress lines
// instead of redrawing a bar.
func TestTriggerWaitWithoutTerminal(t *testing.T) {
	t.Parallel()
	u := dbtest.URL(t)
	queue := redistest.Queue(t)
	mustRun(t, u, "jobs", "apply", "-f", writeFile(t, "jobs.yaml", "jobs:\n  - job_id: w\n    kind: synthetic\n    supports_params: true\n    queue: "+queue+"\n"))
	st, err := store.Connect(t.Context(), u)
	require.NoError(t, err)
	defer st.Close()
	// A stand-in worker: once the run exists, finish its items and the run.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for ctx.Err() == nil {
			tag, err := st.Pool().Exec(ctx, `WITH r AS (UPDATE dw_etl_runs SET status = 'SUCCESS', ended_at = now(), items_succeeded = item_count
				WHERE job_id = 'w' AND status IN ('PENDING', 'RUNNING') AND enqueued_at IS NOT NULL RETURNING run_id, item_count)
				INSERT INTO dw_etl_run_progress (run_id, shard, succeeded) SELECT run_id, 0, item_count FROM r
				ON CONFLICT (run_id, shard) DO UPDATE SET succeeded = excluded.succeeded`)
			if err == nil && tag.RowsAffected() > 0 {
				return
			}
			time.Sleep(20 * time.Millisecond) // poll with a deadline
		}
	}()
	out, errs, code := runCLIFull(t, u, "trigger", "w", "--param", "n=1", "--param", "m=2", "--wait", "--poll", "10ms", "--progress-every", "1ms")
	require.Zero(t, code, errs)
	require.Regexp(t, `run \S+: 1/1 items done \(0 failed\), [0-9.]+ items/s`, errs)
	require.NotContains(t, errs, "\r", "no bar redraws")
	require.Contains(t, out, "SUCCESS")
}

func TestBackfillCommandPreview(t *testing.T) {
	t.Parallel()
	u := dbtest.URL(t)
	queue := redistest.Queue(t)
	mustRun(t, u, "jobs", "apply", "-f", writeFile(t, "jobs.yaml", "jobs:\n  - job_id: d\n    kind: synthetic\n    supports_incremental: true\n    strategy: last_run\n    queue: "+queue+"\n"))
	out := mustRun(t, u, "backfill", "d", "--from", "2026-01-01", "--to", "2026-01-03T12:00:00Z", "--step", "1d", "--preview")
	_, rows := tableRows(t, out)
	require.Equal(t, [][]string{
		{"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "-", "-"},
		{"2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z", "-", "-"},
		{"2026-01-03T00:00:00Z", "2026-01-03T12:00:00Z", "-", "-"},
	}, rows)
	_, errs, code := runCLIFull(t, u, "backfill", "d", "--from", "2026-01-01", "--to", "2026-01-03", "--step", "soon")
	require.NotZero(t, code)
	require.Contains(t, errs, "--step")
}
