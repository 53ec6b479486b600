-- name: InsertRun :one
INSERT INTO dw_etl_runs (run_id, job_id, status, dry_run, trigger, params, logical_start,
  scheduled_for, exclusive, error_message)
VALUES (@run_id, @job_id, @status, @dry_run, @trigger, @params, @logical_start,
  @scheduled_for, @exclusive, @error_message)
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

-- name: MarkRunEnqueued :exec
UPDATE dw_etl_runs SET enqueued_at = coalesce(enqueued_at, now()),
  status = CASE WHEN status = 'PENDING' THEN 'RUNNING' ELSE status END, updated_at = now()
WHERE run_id = @run_id;

-- name: InsertProgressShards :exec
INSERT INTO dw_etl_run_progress (run_id, shard, items)
SELECT @run_id::uuid, unnest(@shards::smallint[]), unnest(@items::integer[]);

-- name: BumpProgress :exec
UPDATE dw_etl_run_progress SET terminal = terminal + 1
WHERE run_id = @run_id AND shard = @shard;

-- name: RunProgress :one
SELECT coalesce(sum(items), 0)::bigint AS items, coalesce(sum(terminal), 0)::bigint AS terminal
FROM dw_etl_run_progress WHERE run_id = @run_id;

-- name: LockRunForFinalise :one
SELECT * FROM dw_etl_runs WHERE run_id = @run_id AND status IN ('PENDING', 'RUNNING') FOR UPDATE;

-- name: ItemOutcomes :many
SELECT item_no, param_hash, params, status, error_category, cursor_start, cursor_end
FROM dw_etl_run_items WHERE run_id = @run_id ORDER BY item_no;

-- name: RunTotals :one
SELECT
  count(*) FILTER (WHERE status = 'SUCCESS')::int AS succeeded,
  count(*) FILTER (WHERE status = 'FAILED')::int AS failed,
  count(*) FILTER (WHERE status = 'SKIPPED')::int AS skipped,
  count(*) FILTER (WHERE status = 'CANCELLED')::int AS cancelled,
  count(*) FILTER (WHERE status = 'PENDING')::int AS pending,
  count(*) FILTER (WHERE status = 'RUNNING')::int AS running,
  coalesce(sum(records_read), 0)::bigint AS records_read,
  coalesce(sum(records_written), 0)::bigint AS records_written,
  coalesce(sum(page_count), 0)::bigint AS page_count
FROM dw_etl_run_items WHERE run_id = @run_id;

-- name: FailedCategories :many
SELECT error_category, count(*)::int AS n FROM dw_etl_run_items
WHERE run_id = @run_id AND status = 'FAILED' GROUP BY error_category;

-- name: RunAttemptCount :one
SELECT count(*)::int FROM dw_etl_run_attempts WHERE run_id = @run_id;

-- name: FinishRun :exec
UPDATE dw_etl_runs SET status = @status, error_category = @error_category, error_message = @error_message,
  ended_at = now(), duration_ms = (extract(epoch FROM now() - started_at) * 1000)::bigint,
  attempt_count = @attempt_count, items_succeeded = @items_succeeded, items_failed = @items_failed,
  items_skipped = @items_skipped, items_cancelled = @items_cancelled, records_read = @records_read,
  records_written = @records_written, page_count = @page_count, updated_at = now()
WHERE run_id = @run_id;

-- name: RunFailedItems :one
SELECT count(*)::int FROM dw_etl_run_items WHERE run_id = @run_id AND status = 'FAILED';
