package dbmigrate_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbmigrate"
	"github.com/etlexec/etlexec/internal/dbtest"
)

// legacyDDL is dw_etl_runs as it stood before etlexec.
const legacyDDL = `CREATE TABLE public.dw_etl_runs (
	run_id uuid PRIMARY KEY,
	job_id text NOT NULL,
	status text NOT NULL,
	started_at timestamptz,
	ended_at timestamptz,
	error_message text
)`

// legacyFingerprint hashes the legacy columns of every row, NULLs distinguished, in run_id order.
const legacyFingerprint = `SELECT count(*), md5(coalesce(string_agg(concat_ws('|', quote_nullable(run_id),
	quote_nullable(job_id), quote_nullable(status), quote_nullable(extract(epoch FROM started_at)),
	quote_nullable(extract(epoch FROM ended_at)), quote_nullable(error_message)), E'\n' ORDER BY run_id), ''))
	FROM public.dw_etl_runs`

func legacyColumns(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT column_name || ' ' || data_type || ' ' || is_nullable
		|| ' ' || coalesce(column_default, '-') FROM information_schema.columns
		WHERE table_schema = 'public' AND table_name = 'dw_etl_runs' ORDER BY ordinal_position`)
	require.NoError(t, err)
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return cols
}

func TestLegacyUpgrade(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const (
		rows = 100_000
		jobs = 7
	)
	u := dbtest.EmptyDatabase(t)
	conn := connect(t, u)
	_, err := conn.Exec(ctx, legacyDDL)
	require.NoError(t, err)
	// Every status of the allowed list, several jobs, every 10th run still open, sub-millisecond
	// durations so rounding is exercised, NULL and non-NULL messages.
	_, err = conn.Exec(ctx, fmt.Sprintf(`INSERT INTO public.dw_etl_runs
		SELECT md5(g::text)::uuid,
			'legacy_job_' || (g %% %d),
			(ARRAY['SUCCESS','FAILED','RUNNING','PENDING','PARTIAL_SUCCESS','SKIPPED','CANCELLED'])[g %% 7 + 1],
			timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
			CASE WHEN g %% 10 <> 0 THEN timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute'
				+ (g %% 100000) * interval '1 millisecond' + (g %% 1000) * interval '1 microsecond' END,
			CASE WHEN g %% 3 = 0 THEN 'boom ' || g END
		FROM generate_series(1, %d) g`, jobs, rows-1))
	require.NoError(t, err)
	// One run whose duration is known by hand: 1234.567 ms rounds to 1235.
	_, err = conn.Exec(ctx, `INSERT INTO public.dw_etl_runs VALUES ('00000000-0000-0000-0000-000000000001',
		'legacy_job_0', 'SUCCESS', '2024-06-01 00:00:00+00', '2024-06-01 00:00:01.234567+00', NULL)`)
	require.NoError(t, err)

	var (
		wantRows int64
		wantHash string
	)
	require.NoError(t, conn.QueryRow(ctx, legacyFingerprint).Scan(&wantRows, &wantHash))
	require.EqualValues(t, rows, wantRows)

	db := openDB(t, u)
	m := &dbmigrate.Migrator{DB: db}
	st, err := m.Status(ctx)
	require.NoError(t, err)
	require.NotNil(t, st.Legacy, "a lone dw_etl_runs without history is the legacy shape")
	require.EqualValues(t, rows, st.Legacy.Rows)
	require.EqualValues(t, jobs, st.Legacy.Jobs)
	require.Empty(t, st.Legacy.BadStatuses)
	require.Contains(t, st.Legacy.Plan(), fmt.Sprintf("%d rows", rows))
	require.Equal(t, embeddedFiles(t), st.Pending)

	rep, err := m.Apply(ctx)
	require.NoError(t, err)
	require.Equal(t, embeddedFiles(t), rep.Applied)
	require.NotNil(t, rep.Legacy)

	var (
		gotRows int64
		gotHash string
	)
	require.NoError(t, conn.QueryRow(ctx, legacyFingerprint).Scan(&gotRows, &gotHash))
	require.Equal(t, wantRows, gotRows, "rows were lost or added")
	require.Equal(t, wantHash, gotHash, "legacy columns changed")

	var badDuration, open, closed int64
	require.NoError(t, conn.QueryRow(ctx, `SELECT
		count(*) FILTER (WHERE duration_ms IS DISTINCT FROM CASE WHEN started_at IS NOT NULL AND ended_at IS NOT NULL
			THEN round(extract(epoch FROM ended_at - started_at) * 1000)::bigint END),
		count(*) FILTER (WHERE duration_ms IS NULL),
		count(*) FILTER (WHERE duration_ms IS NOT NULL)
		FROM public.dw_etl_runs`).Scan(&badDuration, &open, &closed))
	require.Zero(t, badDuration)
	require.EqualValues(t, (rows-1)/10, open, "runs without ended_at keep a NULL duration")
	require.Positive(t, closed)
	var known int64
	require.NoError(t, conn.QueryRow(ctx, `SELECT duration_ms FROM public.dw_etl_runs
		WHERE run_id = '00000000-0000-0000-0000-000000000001'`).Scan(&known))
	require.EqualValues(t, 1235, known)

	var notLegacy int64
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM public.dw_etl_runs
		WHERE trigger <> 'legacy' OR exclusive OR error_category <> 'NONE' OR dry_run`).Scan(&notLegacy))
	require.Zero(t, notLegacy, "upgraded runs are marked legacy and never hold a job's active slot")

	jrows, err := conn.Query(ctx, `SELECT job_id FROM public.dw_etl_jobs WHERE kind = 'legacy' AND NOT enabled ORDER BY job_id`)
	require.NoError(t, err)
	placeholders, err := pgx.CollectRows(jrows, pgx.RowTo[string])
	require.NoError(t, err)
	var wantJobs []string
	for i := range jobs {
		wantJobs = append(wantJobs, fmt.Sprintf("legacy_job_%d", i))
	}
	require.Equal(t, wantJobs, placeholders)
	var allJobs int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM public.dw_etl_jobs`).Scan(&allJobs))
	require.Equal(t, jobs, allJobs)

	drift, err := dbmigrate.Drift(ctx, db, dbtest.ServerURL(), nil)
	require.NoError(t, err)
	require.Empty(t, drift, "an upgraded legacy database must equal schema.hcl")

	rep, err = m.Apply(ctx)
	require.NoError(t, err)
	require.Empty(t, rep.Applied)
	require.Nil(t, rep.Legacy, "once history exists the database is no longer legacy")
}

func TestLegacyInvalidRefused(t *testing.T) {
	t.Parallel()
	// A legacy table written by hand may not even have NOT NULL on job_id and status.
	nullableDDL := strings.NewReplacer("job_id text NOT NULL", "job_id text", "status text NOT NULL", "status text").Replace(legacyDDL)
	tests := []struct {
		name, ddl, corrupt, fix, reason string
		check                           func(t *testing.T, info *dbmigrate.LegacyInfo)
	}{
		{
			name:    "StatusOutsideList",
			ddl:     legacyDDL,
			corrupt: `UPDATE public.dw_etl_runs SET status = 'DONE' WHERE right(run_id::text, 1) IN ('0', '1')`,
			fix:     `UPDATE public.dw_etl_runs SET status = 'SUCCESS' WHERE status = 'DONE'`,
			reason:  "DONE",
			check: func(t *testing.T, info *dbmigrate.LegacyInfo) {
				require.Contains(t, info.BadStatuses, "DONE")
				require.Len(t, info.BadStatuses, 1)
			},
		},
		{
			name:    "NullStatus",
			ddl:     nullableDDL,
			corrupt: `UPDATE public.dw_etl_runs SET status = NULL WHERE right(run_id::text, 1) IN ('0', '1')`,
			fix:     `UPDATE public.dw_etl_runs SET status = 'SUCCESS' WHERE status IS NULL`,
			reason:  "<NULL>",
			check: func(t *testing.T, info *dbmigrate.LegacyInfo) {
				require.Contains(t, info.BadStatuses, "<NULL>")
			},
		},
		{
			name:    "NullJobID",
			ddl:     nullableDDL,
			corrupt: `UPDATE public.dw_etl_runs SET job_id = NULL WHERE right(run_id::text, 1) IN ('0', '1')`,
			fix:     `UPDATE public.dw_etl_runs SET job_id = 'legacy_job' WHERE job_id IS NULL`,
			reason:  "no job_id",
			check: func(t *testing.T, info *dbmigrate.LegacyInfo) {
				require.Empty(t, info.BadStatuses)
				require.Positive(t, info.NullJobIDs)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			u := dbtest.EmptyDatabase(t)
			conn := connect(t, u)
			_, err := conn.Exec(ctx, tt.ddl)
			require.NoError(t, err)
			_, err = conn.Exec(ctx, `INSERT INTO public.dw_etl_runs (run_id, job_id, status, started_at)
				SELECT md5(g::text)::uuid, 'legacy_job', 'SUCCESS', now() FROM generate_series(1, 100) g`)
			require.NoError(t, err)
			tag, err := conn.Exec(ctx, tt.corrupt)
			require.NoError(t, err)
			require.Positive(t, tag.RowsAffected())
			var wantRows int64
			var wantHash string
			require.NoError(t, conn.QueryRow(ctx, legacyFingerprint).Scan(&wantRows, &wantHash))
			wantCols := legacyColumns(t, conn)
			require.Len(t, wantCols, 6)

			m := &dbmigrate.Migrator{DB: openDB(t, u)}
			st, err := m.Status(ctx)
			require.NoError(t, err)
			require.NotNil(t, st.Legacy)
			tt.check(t, st.Legacy)

			rep, err := m.Apply(ctx)
			require.ErrorIs(t, err, dbmigrate.ErrLegacyInvalid)
			require.ErrorContains(t, err, tt.reason)
			require.Nil(t, rep)

			require.Equal(t, wantCols, legacyColumns(t, conn), "a refused upgrade must not touch dw_etl_runs")
			var gotRows int64
			var gotHash string
			require.NoError(t, conn.QueryRow(ctx, legacyFingerprint).Scan(&gotRows, &gotHash))
			require.Equal(t, wantRows, gotRows)
			require.Equal(t, wantHash, gotHash)
			var jobs, revisions bool
			require.NoError(t, conn.QueryRow(ctx, `SELECT to_regclass('public.dw_etl_jobs') IS NOT NULL,
				EXISTS (SELECT 1 FROM atlas_schema_revisions.atlas_schema_revisions)`).Scan(&jobs, &revisions))
			require.False(t, jobs)
			require.False(t, revisions, "no file may be recorded, or the next run would no longer see a legacy database")

			// Fixed by the operator, the same database upgrades.
			_, err = conn.Exec(ctx, tt.fix)
			require.NoError(t, err)
			rep, err = m.Apply(ctx)
			require.NoError(t, err)
			require.Equal(t, embeddedFiles(t), rep.Applied)
			// Even from NULLable job_id/status columns, the result is exactly schema.hcl.
			drift, err := dbmigrate.Drift(ctx, m.DB, dbtest.ServerURL(), nil)
			require.NoError(t, err)
			require.Empty(t, drift)
		})
	}
}
