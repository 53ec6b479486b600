-- name: RequestCancel :execrows
UPDATE dw_etl_runs SET cancel_requested_at = coalesce(cancel_requested_at, now()),
  cancelled_by = @cancelled_by, cancel_reason = @cancel_reason, updated_at = now()
WHERE run_id = @run_id AND status IN ('PENDING', 'RUNNING');

-- name: CancelPendingItems :many
UPDATE dw_etl_run_items SET status = 'CANCELLED', ended_at = now(), error_message = 'run cancelled'
WHERE run_id = @run_id AND status = 'PENDING'
RETURNING item_no, task_id;

-- name: AddProgress :exec
UPDATE dw_etl_run_progress p SET terminal = p.terminal + d.n
FROM (SELECT unnest(@shards::smallint[]) AS shard, unnest(@deltas::int[]) AS n) AS d
WHERE p.run_id = @run_id AND p.shard = d.shard;

-- name: RerunCandidates :many
SELECT item_no, param_hash, params, status, error_category, error_message, attempts, task_id
FROM dw_etl_run_items
WHERE run_id = @run_id
  AND status = ANY(@statuses::text[])
  AND (cardinality(@categories::text[]) = 0 OR error_category = ANY(@categories::text[]))
  AND (cardinality(@param_hashes::text[]) = 0 OR param_hash = ANY(@param_hashes::text[]))
ORDER BY item_no;

-- ReopenItems puts finished items back to PENDING under a new generation (so their task ids are
-- new) with max_attempts more attempts.
-- name: ReopenItems :many
UPDATE dw_etl_run_items i
SET status = 'PENDING', generation = i.generation + 1,
    task_id = i.run_id::text || ':' || left(i.param_hash, 32) || ':g' || (i.generation + 1)::text,
    attempt_limit = i.attempts + @max_attempts::int,
    error_category = 'NONE', error_message = NULL, ended_at = NULL, duration_ms = NULL,
    cursor_note = NULL, current_attempt_id = NULL, heartbeat_at = NULL
WHERE i.run_id = @run_id AND i.item_no = ANY(@item_nos::int[]) AND i.status IN ('FAILED', 'CANCELLED', 'SKIPPED', 'SUCCESS')
RETURNING i.item_no, i.param_hash, i.task_id;

-- name: ReopenRun :execrows
UPDATE dw_etl_runs SET status = 'RUNNING', ended_at = NULL, duration_ms = NULL, trigger = trigger,
  error_category = 'NONE', error_message = NULL, cancel_requested_at = NULL, cancelled_by = NULL,
  cancel_reason = NULL, updated_at = now(),
  metrics = metrics || jsonb_build_object('reruns', coalesce((metrics->>'reruns')::int, 0) + 1)
WHERE run_id = @run_id AND status IN ('SUCCESS', 'PARTIAL_SUCCESS', 'FAILED', 'CANCELLED');

-- name: RunningTaskIDs :many
SELECT task_id FROM dw_etl_run_items WHERE run_id = @run_id AND status = 'RUNNING';
