package retention_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/retention"
	"github.com/etlexec/etlexec/internal/store"
)

type seeded struct {
	oldDone, oldDone2, oldCursor, oldOpen, latest, recent, shortOld, shortNew uuid.UUID
}

// seed: job "a" (global retention) and job "b" (its own 10 days), runs of every kind of age and
// status, each with 3 items, 2 attempts and a log line.
func seed(t *testing.T, st *store.Store) seeded {
	t.Helper()
	ctx := t.Context()
	s := seeded{}
	ids := []*uuid.UUID{&s.oldDone, &s.oldDone2, &s.oldCursor, &s.oldOpen, &s.latest, &s.recent, &s.shortOld, &s.shortNew}
	for _, p := range ids {
		*p = uuid.Must(uuid.NewV7())
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		_, err := st.Pool().Exec(ctx, sql, args...)
		require.NoError(t, err, sql)
	}
	exec(`INSERT INTO dw_etl_jobs (job_id, kind) VALUES ('a', 'synthetic'), ('b', 'synthetic')`)
	exec(`UPDATE dw_etl_jobs SET history_retention_ms = 10 * 86400000 WHERE job_id = 'b'`)
	run := func(id uuid.UUID, job, status string, ageDays int) {
		t.Helper()
		exec(`INSERT INTO dw_etl_runs (run_id, job_id, status, exclusive, started_at, ended_at, item_count, attempt_count)
			VALUES ($1, $2, $3, false, now() - $4 * interval '1 day',
			  CASE WHEN $3 IN ('PENDING', 'RUNNING') THEN NULL ELSE now() - $4 * interval '1 day' + interval '1 minute' END, 3, 2)`,
			id, job, status, ageDays)
		exec(`INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash, status)
			SELECT $1, g, '{}', 'h' || g, 'SUCCESS' FROM generate_series(1, 3) g`, id)
		exec(`INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt, status)
			VALUES (gen_random_uuid(), $1, 1, 1, 'SUCCESS'), (gen_random_uuid(), $1, 2, 1, 'SUCCESS')`, id)
		exec(`INSERT INTO dw_etl_run_logs (run_id, job_id, level, message) VALUES ($1, $2, 'info', 'x')`, id, job)
	}
	run(s.oldDone, "a", "SUCCESS", 200)
	run(s.oldDone2, "a", "FAILED", 150)
	run(s.oldCursor, "a", "SUCCESS", 120)
	run(s.oldOpen, "a", "RUNNING", 110)
	run(s.recent, "a", "SUCCESS", 5)
	run(s.latest, "a", "SUCCESS", 1)
	run(s.shortOld, "b", "SUCCESS", 20)
	run(s.shortNew, "b", "SUCCESS", 2)
	exec(`INSERT INTO dw_etl_incremental_cursors (job_id, param_hash, params, strategy, cursor_value, last_run_id)
		VALUES ('a', 'h1', '{}', 'last_run', now() - interval '120 days', $1)`, s.oldCursor)
	return s
}

func runsLeft(t *testing.T, st *store.Store) map[uuid.UUID]bool {
	t.Helper()
	rows, err := st.Pool().Query(t.Context(), `SELECT run_id FROM dw_etl_runs`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[uuid.UUID]bool{}
	for rows.Next() {
		var id uuid.UUID
		require.NoError(t, rows.Scan(&id))
		out[id] = true
	}
	return out
}

func count(t *testing.T, st *store.Store, table string) int {
	t.Helper()
	var n int
	require.NoError(t, st.Pool().QueryRow(t.Context(), `SELECT count(*) FROM `+table).Scan(&n))
	return n
}

func TestPrune(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	s := seed(t, st)
	p, err := retention.New(retention.Config{Store: st, Global: 90 * 24 * time.Hour, BatchRuns: 1, Logger: zerolog.Nop()})
	require.NoError(t, err)

	pre, err := p.Prune(t.Context(), "", true)
	require.NoError(t, err)
	require.Equal(t, int64(3), pre.Runs, "a: two old finished runs; b: one run past its own 10 days")
	require.Equal(t, int64(9), pre.Items)
	require.Equal(t, int64(6), pre.Attempts)
	require.Len(t, runsLeft(t, st), 8, "a preview deletes nothing")

	rep, err := p.Prune(t.Context(), "", false)
	require.NoError(t, err)
	require.Equal(t, pre.Runs, rep.Runs)
	require.Equal(t, 2, rep.Jobs[0].Batches, "one run per batch with BatchRuns 1")
	left := runsLeft(t, st)
	require.Equal(t, map[uuid.UUID]bool{s.oldCursor: true, s.oldOpen: true, s.recent: true, s.latest: true, s.shortNew: true}, left,
		"kept: the cursor's last run, the open run, the recent and latest runs, b's young run")
	require.Equal(t, 15, count(t, st, "dw_etl_run_items"), "items of deleted runs go with them")
	require.Equal(t, 10, count(t, st, "dw_etl_run_attempts"))
	require.Equal(t, 5, count(t, st, "dw_etl_run_logs"))
	require.Equal(t, 1, count(t, st, "dw_etl_incremental_cursors"), "cursors are never touched")

	again, err := p.Prune(t.Context(), "", false)
	require.NoError(t, err)
	require.Zero(t, again.Runs)

	_, err = p.Prune(t.Context(), "nope", true)
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestPruneKeepsLatestRunEvenWhenOld(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	ctx := t.Context()
	_, err := st.Pool().Exec(ctx, `INSERT INTO dw_etl_jobs (job_id, kind) VALUES ('quiet', 'synthetic');
		INSERT INTO dw_etl_runs (run_id, job_id, status, exclusive, started_at, ended_at)
		VALUES (gen_random_uuid(), 'quiet', 'SUCCESS', false, now() - interval '400 days', now() - interval '400 days'),
		       (gen_random_uuid(), 'quiet', 'SUCCESS', false, now() - interval '300 days', now() - interval '300 days')`)
	require.NoError(t, err)
	p, err := retention.New(retention.Config{Store: st, Global: 24 * time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	rep, err := p.Prune(ctx, "quiet", false)
	require.NoError(t, err)
	require.Equal(t, int64(1), rep.Runs)
	require.Len(t, runsLeft(t, st), 1, "a job's latest run stays, however old")
}

// TestPruneNeverWaitsOnLiveWriters: a run locked by another transaction is skipped, not
// waited for, and goes on the next pass.
func TestPruneNeverWaitsOnLiveWriters(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	s := seed(t, st)
	ctx := t.Context()
	tx, err := st.Pool().Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT 1 FROM dw_etl_runs WHERE run_id = $1 FOR UPDATE`, s.oldDone)
	require.NoError(t, err)

	p, err := retention.New(retention.Config{Store: st, Global: 90 * 24 * time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rep, err := p.Prune(pctx, "a", false)
	require.NoError(t, err)
	require.Equal(t, int64(1), rep.Runs, "only the unlocked old run")
	require.True(t, runsLeft(t, st)[s.oldDone])

	require.NoError(t, tx.Rollback(ctx))
	rep, err = p.Prune(ctx, "a", false)
	require.NoError(t, err)
	require.Equal(t, int64(1), rep.Runs)
	require.False(t, runsLeft(t, st)[s.oldDone])
}

func TestDaily(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	seed(t, st)
	now := time.Now()
	clock := func() time.Time { return now }
	p, err := retention.New(retention.Config{Store: st, Global: 90 * 24 * time.Hour, Now: clock, Logger: zerolog.Nop()})
	require.NoError(t, err)
	ran, err := p.Daily(t.Context())
	require.NoError(t, err)
	require.True(t, ran)
	require.Len(t, runsLeft(t, st), 5)

	ran, err = p.Daily(t.Context())
	require.NoError(t, err)
	require.False(t, ran, "not due again within a day")

	now = now.Add(25 * time.Hour)
	ran, err = p.Daily(t.Context())
	require.NoError(t, err)
	require.True(t, ran)
}
