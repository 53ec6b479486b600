-- name: RequestCancel :execrows
UPDATE dw_etl_runs SET cancel_requested_at = coalesce(cancel_requested_at, now()),
  cancelled_by = @cancelled_by, cancel_reason = @cancel_reason, updated_at = now()
WHERE run_id = @run_id AND status IN ('PENDING', 'RUNNING');

-- name: RerunCandidates :many
SELECT item_no, param_hash, params, status, error_category, error_message, attempts, generation
FROM dw_etl_run_items
WHERE run_id = @run_id
  AND status = ANY(@statuses::text[])
  AND (cardinality(@categories::text[]) = 0 OR error_category = ANY(@categories::text[]))
  AND (cardinality(@param_hashes::text[]) = 0 OR param_hash = ANY(@param_hashes::text[]))
ORDER BY item_no;

-- ReopenItems puts failed or cancelled items back to PENDING under a new generation (so their
-- task ids are new) with max_attempts more attempts, and takes them out of the counters of the
-- caller's shard. SUCCESS is never reopened: a second success of an item in the same run would
-- load its data twice.
-- name: ReopenItems :many
WITH todo AS (
  SELECT i.run_id, i.item_no, i.status, i.error_category FROM dw_etl_run_items i
  WHERE i.run_id = @run_id AND i.item_no = ANY(@item_nos::int[]) AND i.status IN ('FAILED', 'CANCELLED', 'SKIPPED')
  ORDER BY i.run_id, i.item_no
  FOR NO KEY UPDATE OF i
), reopened AS (
  UPDATE dw_etl_run_items i
  SET status = 'PENDING', generation = i.generation + 1,
      attempt_limit = i.attempts - i.lost_attempts + @max_attempts::int,
      error_category = 'NONE', error_message = NULL, ended_at = NULL, duration_ms = NULL,
      cursor_note = NULL, current_attempt_id = NULL, claim_worker = NULL, next_retry_at = NULL, solo = false
  FROM todo t
  WHERE i.run_id = t.run_id AND i.item_no = t.item_no
  RETURNING i.item_no, i.generation, t.status AS old_status, t.error_category AS old_category
), prog AS (
  INSERT INTO dw_etl_run_progress AS p (run_id, shard, failed, cancelled, skipped, failed_api, failed_db, failed_data, failed_system)
  SELECT @run_id::uuid, @shard::smallint,
    -count(*) FILTER (WHERE old_status = 'FAILED'), -count(*) FILTER (WHERE old_status = 'CANCELLED'),
    -count(*) FILTER (WHERE old_status = 'SKIPPED'),
    -count(*) FILTER (WHERE old_status = 'FAILED' AND old_category = 'API'),
    -count(*) FILTER (WHERE old_status = 'FAILED' AND old_category = 'DB'),
    -count(*) FILTER (WHERE old_status = 'FAILED' AND old_category = 'DATA'),
    -count(*) FILTER (WHERE old_status = 'FAILED' AND old_category = 'SYSTEM')
  FROM reopened HAVING count(*) > 0
  ON CONFLICT (run_id, shard) DO UPDATE SET failed = p.failed + excluded.failed,
    cancelled = p.cancelled + excluded.cancelled, skipped = p.skipped + excluded.skipped,
    failed_api = p.failed_api + excluded.failed_api, failed_db = p.failed_db + excluded.failed_db,
    failed_data = p.failed_data + excluded.failed_data, failed_system = p.failed_system + excluded.failed_system
)
SELECT item_no, generation FROM reopened;

-- ReopenRun reopens a finished run for a rerun: RUNNING again, its fan-out to be done (under the
-- caller's fan-out lease, so the reconciler finishes it if the caller dies).
-- name: ReopenRun :execrows
UPDATE dw_etl_runs SET status = 'RUNNING', ended_at = NULL, duration_ms = NULL,
  error_category = 'NONE', error_message = NULL, cancel_requested_at = NULL, cancelled_by = NULL,
  cancel_reason = NULL, cursor_note = NULL, enqueued_at = NULL,
  fanout_until = now() + (@fanout_ms::bigint) * interval '1 millisecond', updated_at = now(),
  deadline_at = (SELECT now() + j.run_timeout_ms * interval '1 millisecond' FROM dw_etl_jobs j WHERE j.job_id = dw_etl_runs.job_id),
  metrics = metrics || jsonb_build_object('reruns', coalesce((metrics->>'reruns')::int, 0) + 1)
WHERE run_id = @run_id AND status IN ('SUCCESS', 'PARTIAL_SUCCESS', 'FAILED', 'CANCELLED');

-- ClaimedItems lists a run's claimed items (their tasks are running somewhere).
-- name: ClaimedItems :many
SELECT item_no, generation FROM dw_etl_run_items
WHERE run_id = @run_id AND status = 'PENDING' AND current_attempt_id IS NOT NULL
ORDER BY item_no;
