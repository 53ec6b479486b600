package store_test

import (
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
)

// planNodes flattens an EXPLAIN (FORMAT JSON) plan tree into its nodes.
func planNodes(t *testing.T, raw []byte) []map[string]any {
	t.Helper()
	var doc []struct {
		Plan map[string]any `json:"Plan"`
	}
	require.NoError(t, json.Unmarshal(raw, &doc))
	require.Len(t, doc, 1)
	var nodes []map[string]any
	var walk func(n map[string]any)
	walk = func(n map[string]any) {
		nodes = append(nodes, n)
		children, _ := n["Plans"].([]any)
		for _, c := range children {
			if m, ok := c.(map[string]any); ok {
				walk(m)
			}
		}
	}
	walk(doc[0].Plan)
	return nodes
}

func explainPlan(t *testing.T, pool *pgxpool.Pool, query string, args ...any) []map[string]any {
	t.Helper()
	var raw []byte
	require.NoError(t, pool.QueryRow(context.Background(), "EXPLAIN (FORMAT JSON) "+query, args...).Scan(&raw))
	return planNodes(t, raw)
}

func planField(nodes []map[string]any, key string) []string {
	var out []string
	for _, n := range nodes {
		if v, ok := n[key].(string); ok {
			out = append(out, v)
		}
	}
	return out
}

// TestHotQueriesUseTheirIndexes seeds a realistic volume (200 jobs × 100 runs, 50k cursors) and
// checks that the two lookups on the hot path are index scans, not table scans or sorts.
func TestHotQueriesUseTheirIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.Pool(t)
	for _, q := range []string{
		`INSERT INTO dw_etl_jobs (job_id, kind, supports_incremental, strategy)
			SELECT 'job_' || j, 'synthetic', true, 'last_run' FROM generate_series(1, 200) j`,
		`INSERT INTO dw_etl_runs (run_id, job_id, status, exclusive, started_at, ended_at)
			SELECT gen_random_uuid(), 'job_' || j, 'SUCCESS', false,
				timestamptz '2026-01-01' + (r * interval '1 hour') + (j * interval '1 second'),
				timestamptz '2026-01-01' + (r * interval '1 hour') + (j * interval '1 second') + interval '5 minutes'
			FROM generate_series(1, 200) j, generate_series(1, 100) r`,
		`INSERT INTO dw_etl_incremental_cursors (job_id, param_hash, params, strategy, cursor_value)
			SELECT 'job_' || (c % 200 + 1), md5(c::text), jsonb_build_object('shard', c), 'last_run',
				timestamptz '2026-01-01' + c * interval '1 minute'
			FROM generate_series(1, 50000) c`,
		`ANALYZE dw_etl_jobs, dw_etl_runs, dw_etl_incremental_cursors`,
	} {
		_, err := pool.Exec(ctx, q)
		require.NoError(t, err, q)
	}

	t.Run("CursorLookupUsesPrimaryKey", func(t *testing.T) {
		t.Parallel()
		// c = 4242 lives on job_43 (4242 % 200 + 1).
		nodes := explainPlan(t, pool, `SELECT cursor_value FROM dw_etl_incremental_cursors WHERE job_id = $1 AND param_hash = $2`,
			"job_43", fmt.Sprintf("%x", md5.Sum([]byte("4242"))))
		require.Contains(t, planField(nodes, "Index Name"), "dw_etl_incremental_cursors_pkey", "plan: %v", nodes)
		var found bool
		require.NoError(t, pool.QueryRow(ctx, `SELECT cursor_value IS NOT NULL FROM dw_etl_incremental_cursors
			WHERE job_id = $1 AND param_hash = $2`, "job_43", fmt.Sprintf("%x", md5.Sum([]byte("4242")))).Scan(&found))
		require.True(t, found, "the explained lookup must hit a seeded row")
		require.NotContains(t, planField(nodes, "Node Type"), "Seq Scan")
	})

	t.Run("RunHistoryUsesJobStartedIndex", func(t *testing.T) {
		t.Parallel()
		nodes := explainPlan(t, pool, `SELECT * FROM dw_etl_runs WHERE job_id = $1 ORDER BY started_at DESC LIMIT 50`, "job_7")
		require.Contains(t, planField(nodes, "Index Name"), "dw_etl_runs_job_started_idx", "plan: %v", nodes)
		types := planField(nodes, "Node Type")
		require.NotContains(t, types, "Seq Scan")
		require.NotContains(t, types, "Sort", "the index must deliver started_at DESC order")
	})
}
