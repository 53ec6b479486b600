-- name: CursorsForHashes :many
SELECT param_hash, cursor_value FROM dw_etl_incremental_cursors
WHERE job_id = @job_id AND param_hash = ANY(@param_hashes::text[]);

-- AdvanceCursors moves each (job, param_hash) cursor forward, never backwards.
-- name: AdvanceCursors :exec
INSERT INTO dw_etl_incremental_cursors (job_id, param_hash, params, strategy, cursor_value, last_run_id, updated_at)
SELECT @job_id::text, unnest(@param_hashes::text[]), unnest(@params::jsonb[]), @strategy::text,
  unnest(@cursor_values::timestamptz[]), @run_id::uuid, now()
ON CONFLICT (job_id, param_hash) DO UPDATE
SET cursor_value = excluded.cursor_value, last_run_id = excluded.last_run_id, updated_at = now(),
    strategy = excluded.strategy
WHERE dw_etl_incremental_cursors.cursor_value IS NULL
   OR dw_etl_incremental_cursors.cursor_value < excluded.cursor_value;

-- name: ListCursors :many
SELECT * FROM dw_etl_incremental_cursors WHERE job_id = @job_id ORDER BY cursor_value DESC NULLS LAST, param_hash;
