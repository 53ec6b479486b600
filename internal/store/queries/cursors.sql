-- name: CursorsForHashes :many
SELECT param_hash, cursor_value, cursor_meta FROM dw_etl_incremental_cursors
WHERE job_id = @job_id AND param_hash = ANY(@param_hashes::text[]);

-- name: ListCursors :many
SELECT * FROM dw_etl_incremental_cursors WHERE job_id = @job_id ORDER BY cursor_value DESC NULLS LAST, param_hash;
