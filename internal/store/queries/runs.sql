-- name: InsertRun :one
INSERT INTO dw_etl_runs (run_id, job_id, status, dry_run, trigger, params, logical_start,
  scheduled_for, exclusive, error_message, deadline_at, fanout_until)
SELECT @run_id, @job_id, @status, @dry_run, @trigger, @params, @logical_start,
  @scheduled_for, @exclusive, @error_message,
  now() + j.run_timeout_ms * interval '1 millisecond',
  now() + (@fanout_ms::bigint) * interval '1 millisecond'
FROM dw_etl_jobs j WHERE j.job_id = @job_id
RETURNING *;

-- name: GetRun :one
SELECT * FROM dw_etl_runs WHERE run_id = @run_id;

-- name: ActiveRun :one
SELECT run_id, status FROM dw_etl_runs
WHERE job_id = @job_id AND exclusive AND status IN ('PENDING', 'RUNNING')
LIMIT 1;

-- name: SetRunItems :exec
UPDATE dw_etl_runs SET item_count = @item_count, items_deduplicated = @items_deduplicated, updated_at = now()
WHERE run_id = @run_id;

-- MarkRunEnqueued records that every task was handed to Redis: the fan-out lease ends and the
-- run is RUNNING.
-- name: MarkRunEnqueued :exec
UPDATE dw_etl_runs SET enqueued_at = coalesce(enqueued_at, now()), fanout_until = NULL,
  status = CASE WHEN status = 'PENDING' THEN 'RUNNING' ELSE status END, updated_at = now()
WHERE run_id = @run_id;

-- RunCounters sums a run's progress shards (at most ProgressShards rows).
-- name: RunCounters :one
SELECT coalesce(sum(attempts_started), 0)::bigint AS attempts_started,
  coalesce(sum(attempts_ended), 0)::bigint AS attempts_ended,
  coalesce(sum(attempts_lost), 0)::bigint AS attempts_lost,
  coalesce(sum(retries), 0)::bigint AS retries,
  coalesce(sum(backoff_ms), 0)::bigint AS backoff_ms,
  coalesce(max(max_item_attempt), 0)::int AS max_item_attempt,
  coalesce(sum(succeeded), 0)::bigint AS succeeded,
  coalesce(sum(failed), 0)::bigint AS failed,
  coalesce(sum(skipped), 0)::bigint AS skipped,
  coalesce(sum(cancelled), 0)::bigint AS cancelled,
  coalesce(sum(failed_api), 0)::bigint AS failed_api,
  coalesce(sum(failed_db), 0)::bigint AS failed_db,
  coalesce(sum(failed_data), 0)::bigint AS failed_data,
  coalesce(sum(failed_system), 0)::bigint AS failed_system,
  coalesce(sum(records_read), 0)::bigint AS records_read,
  coalesce(sum(records_written), 0)::bigint AS records_written,
  coalesce(sum(records_discarded), 0)::bigint AS records_discarded,
  coalesce(sum(page_count), 0)::bigint AS page_count
FROM dw_etl_run_progress WHERE run_id = @run_id;

-- LockRunForFinalise locks an open run for its one finalisation. NO KEY UPDATE, not UPDATE: the
-- KEY SHARE locks that inserting log lines and attempts take on the run row must not wait.
-- name: LockRunForFinalise :one
SELECT r.*, j.strategy, j.cursor_policy, coalesce(r.deadline_at <= now(), false)::bool AS timed_out
FROM dw_etl_runs r JOIN dw_etl_jobs j ON j.job_id = r.job_id
WHERE r.run_id = @run_id AND r.status IN ('PENDING', 'RUNNING')
FOR NO KEY UPDATE OF r;

-- AdvanceRunCursors moves the cursor of every succeeded item of a run to the candidate its
-- finish stored (cursor_end), never backwards: the run-level cursor policy applied at once.
-- name: AdvanceRunCursors :execrows
INSERT INTO dw_etl_incremental_cursors AS c (job_id, param_hash, params, strategy, cursor_value, cursor_meta, last_run_id, updated_at)
SELECT @job_id::text, i.param_hash, i.params, @strategy::text, i.cursor_end, coalesce(i.cursor_end_meta, '{}'::jsonb), i.run_id, now()
FROM dw_etl_run_items i
WHERE i.run_id = @run_id AND i.status = 'SUCCESS' AND i.cursor_end IS NOT NULL
ORDER BY i.param_hash
ON CONFLICT (job_id, param_hash) DO UPDATE
SET cursor_value = excluded.cursor_value, cursor_meta = excluded.cursor_meta, last_run_id = excluded.last_run_id,
    updated_at = now(), strategy = excluded.strategy
WHERE c.cursor_value IS NULL OR c.cursor_value < excluded.cursor_value;

-- name: FinishRun :exec
UPDATE dw_etl_runs SET status = @status, error_category = @error_category, error_message = @error_message,
  ended_at = now(), duration_ms = (extract(epoch FROM now() - started_at) * 1000)::bigint,
  attempt_count = @attempt_count, items_succeeded = @items_succeeded, items_failed = @items_failed,
  items_skipped = @items_skipped, items_cancelled = @items_cancelled, records_read = @records_read,
  records_written = @records_written, records_discarded = @records_discarded, page_count = @page_count,
  cursor_note = @cursor_note, fanout_until = NULL, updated_at = now()
WHERE run_id = @run_id;
