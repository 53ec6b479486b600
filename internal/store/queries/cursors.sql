-- StartItemsAtCursors gives a new run's items the window start and meta of their stored
-- cursors, in one statement (a HOT update of rows the same transaction just copied in).
-- name: StartItemsAtCursors :exec
UPDATE dw_etl_run_items i SET cursor_start = c.cursor_value, cursor_meta = c.cursor_meta
FROM dw_etl_incremental_cursors c
WHERE i.run_id = @run_id AND c.job_id = @job_id AND c.param_hash = i.param_hash;

-- StartItemsAt gives a new run's items one window start (a backfill window).
-- name: StartItemsAt :exec
UPDATE dw_etl_run_items SET cursor_start = sqlc.narg('window_start')::timestamptz WHERE run_id = @run_id;
