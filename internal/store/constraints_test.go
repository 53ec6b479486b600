package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
)

const (
	codeUnique     = "23505"
	codeCheck      = "23514"
	codeForeignKey = "23503"

	fixtureRun = "0193a0b0-0000-7000-8000-000000000001"
)

// seedConstraintFixture inserts job j1 with run fixtureRun, item 1 (param hash h1), its first attempt
// (attempt_no 1, the identity's first value) and a cursor for (j1, h1).
func seedConstraintFixture(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO dw_etl_jobs (job_id, kind) VALUES ('j1', 'synthetic')`,
		`INSERT INTO dw_etl_runs (run_id, job_id, status) VALUES ('` + fixtureRun + `', 'j1', 'RUNNING')`,
		`INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash)
			VALUES ('` + fixtureRun + `', 1, '{"a":1}', 'h1')`,
		`INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt)
			VALUES (gen_random_uuid(), '` + fixtureRun + `', 1, 1)`,
		`INSERT INTO dw_etl_incremental_cursors (job_id, param_hash, params, strategy)
			VALUES ('j1', 'h1', '{"a":1}', 'last_run')`,
	} {
		_, err := pool.Exec(ctx, q)
		require.NoError(t, err, q)
	}
}

func requirePgError(t *testing.T, err error, code, constraint string) {
	t.Helper()
	var pe *pgconn.PgError
	require.True(t, errors.As(err, &pe), "want SQLSTATE %s on %s, got %v", code, constraint, err)
	require.Equal(t, code, pe.Code, pe.Message)
	require.Equal(t, constraint, pe.ConstraintName, pe.Message)
}

func TestConstraints(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		// ok must succeed on the seeded database (it proves the statement shape is valid);
		// bad differs from it only in the constrained value and must be rejected.
		ok, bad          string
		code, constraint string
	}{
		{
			name: "AttemptNoUniquePerRun",
			ok: `INSERT INTO dw_etl_run_attempts (attempt_id, run_id, attempt_no, item_no, item_attempt)
				OVERRIDING SYSTEM VALUE VALUES (gen_random_uuid(), '` + fixtureRun + `', 2, 1, 2)`,
			bad: `INSERT INTO dw_etl_run_attempts (attempt_id, run_id, attempt_no, item_no, item_attempt)
				OVERRIDING SYSTEM VALUE VALUES (gen_random_uuid(), '` + fixtureRun + `', 1, 1, 3)`,
			code: codeUnique, constraint: "dw_etl_run_attempts_run_attempt_no_key",
		},
		{
			name: "ItemAttemptUnique",
			ok: `INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt)
				VALUES (gen_random_uuid(), '` + fixtureRun + `', 1, 2)`,
			bad: `INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt)
				VALUES (gen_random_uuid(), '` + fixtureRun + `', 1, 1)`,
			code: codeUnique, constraint: "dw_etl_run_attempts_item_attempt_key",
		},
		{
			name: "ItemNoUniquePerRun",
			ok: `INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash)
				VALUES ('` + fixtureRun + `', 2, '{"a":2}', 'h2')`,
			bad: `INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash)
				VALUES ('` + fixtureRun + `', 1, '{"a":3}', 'h3')`,
			code: codeUnique, constraint: "dw_etl_run_items_pkey",
		},
		{
			name: "ParamHashUniquePerRun",
			ok: `INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash)
				VALUES ('` + fixtureRun + `', 2, '{"a":2}', 'h2')`,
			bad: `INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash)
				VALUES ('` + fixtureRun + `', 3, '{"a":1}', 'h1')`,
			code: codeUnique, constraint: "dw_etl_run_items_run_param_hash_key",
		},
		{
			name: "CursorUniquePerJobAndParamHash",
			ok: `INSERT INTO dw_etl_incremental_cursors (job_id, param_hash, params, strategy)
				VALUES ('j1', 'h2', '{"a":2}', 'last_run')`,
			bad: `INSERT INTO dw_etl_incremental_cursors (job_id, param_hash, params, strategy)
				VALUES ('j1', 'h1', '{"a":1}', 'modified_date')`,
			code: codeUnique, constraint: "dw_etl_incremental_cursors_pkey",
		},
		{
			name: "RunStatus",
			ok:   `UPDATE dw_etl_runs SET status = 'PARTIAL_SUCCESS' WHERE run_id = '` + fixtureRun + `'`,
			bad:  `UPDATE dw_etl_runs SET status = 'DONE' WHERE run_id = '` + fixtureRun + `'`,
			code: codeCheck, constraint: "dw_etl_runs_status_check",
		},
		{
			name: "RunErrorCategory",
			ok:   `UPDATE dw_etl_runs SET error_category = 'DATA' WHERE run_id = '` + fixtureRun + `'`,
			bad:  `UPDATE dw_etl_runs SET error_category = 'NETWORK' WHERE run_id = '` + fixtureRun + `'`,
			code: codeCheck, constraint: "dw_etl_runs_error_category_check",
		},
		{
			name: "ItemStatus",
			ok:   `UPDATE dw_etl_run_items SET status = 'SKIPPED' WHERE run_id = '` + fixtureRun + `'`,
			bad:  `UPDATE dw_etl_run_items SET status = 'success' WHERE run_id = '` + fixtureRun + `'`,
			code: codeCheck, constraint: "dw_etl_run_items_status_check",
		},
		{
			name: "ItemErrorCategory",
			ok:   `UPDATE dw_etl_run_items SET error_category = 'API' WHERE run_id = '` + fixtureRun + `'`,
			bad:  `UPDATE dw_etl_run_items SET error_category = 'TIMEOUT' WHERE run_id = '` + fixtureRun + `'`,
			code: codeCheck, constraint: "dw_etl_run_items_error_category_check",
		},
		{
			name: "AttemptStatus",
			ok:   `UPDATE dw_etl_run_attempts SET status = 'FAILED' WHERE run_id = '` + fixtureRun + `'`,
			bad:  `UPDATE dw_etl_run_attempts SET status = 'RETRYING' WHERE run_id = '` + fixtureRun + `'`,
			code: codeCheck, constraint: "dw_etl_run_attempts_status_check",
		},
		{
			name: "AttemptErrorCategory",
			ok:   `UPDATE dw_etl_run_attempts SET error_category = 'SYSTEM' WHERE run_id = '` + fixtureRun + `'`,
			bad:  `UPDATE dw_etl_run_attempts SET error_category = '' WHERE run_id = '` + fixtureRun + `'`,
			code: codeCheck, constraint: "dw_etl_run_attempts_error_category_check",
		},
		{
			name: "JobWithRunsCannotBeDeleted",
			ok:   `INSERT INTO dw_etl_jobs (job_id, kind) VALUES ('j2', 'synthetic')`,
			bad:  `DELETE FROM dw_etl_jobs WHERE job_id = 'j1'`,
			code: codeForeignKey, constraint: "dw_etl_runs_job_id_fkey",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool := dbtest.Pool(t)
			seedConstraintFixture(t, pool)
			_, err := pool.Exec(ctx, tt.ok)
			require.NoError(t, err, "the valid variant must pass")
			_, err = pool.Exec(ctx, tt.bad)
			requirePgError(t, err, tt.code, tt.constraint)
		})
	}

	t.Run("JobWithoutRunsCanBeDeleted", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		pool := dbtest.Pool(t)
		seedConstraintFixture(t, pool)
		_, err := pool.Exec(ctx, `DELETE FROM dw_etl_runs WHERE run_id = '`+fixtureRun+`'`)
		require.NoError(t, err, "items and attempts cascade with their run")
		tag, err := pool.Exec(ctx, `DELETE FROM dw_etl_jobs WHERE job_id = 'j1'`)
		require.NoError(t, err, "cursors cascade with their job")
		require.EqualValues(t, 1, tag.RowsAffected())
		var left int
		require.NoError(t, pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM dw_etl_run_items)
			+ (SELECT count(*) FROM dw_etl_run_attempts) + (SELECT count(*) FROM dw_etl_incremental_cursors)`).Scan(&left))
		require.Zero(t, left)
	})
}
