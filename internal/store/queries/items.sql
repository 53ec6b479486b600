-- name: CopyItems :copyfrom
INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash, task_id, cursor_start, cursor_end)
VALUES (@run_id, @item_no, @params, @param_hash, @task_id, @cursor_start, @cursor_end);

-- name: PendingItemTasks :many
SELECT item_no, param_hash, task_id FROM dw_etl_run_items
WHERE run_id = @run_id AND status = 'PENDING' ORDER BY item_no;

-- name: GetItemContext :one
SELECT i.run_id, i.item_no, i.params, i.param_hash, i.status, i.attempts, i.task_id, i.generation,
  coalesce(i.attempt_limit, j.max_attempts)::int AS attempt_limit,
  i.current_attempt_id, i.heartbeat_at, i.cursor_start, i.cursor_end,
  r.job_id, r.status AS run_status, r.dry_run, r.logical_start, r.item_count, r.cancel_requested_at,
  j.kind, j.strategy, j.cursor_policy, j.config, j.max_attempts, j.timeout_ms
FROM dw_etl_run_items i
JOIN dw_etl_runs r ON r.run_id = i.run_id
JOIN dw_etl_jobs j ON j.job_id = r.job_id
WHERE i.run_id = @run_id AND i.item_no = @item_no;

-- ClaimItem takes the item for one attempt. It succeeds only from PENDING, or from RUNNING when
-- the holder stopped heartbeating (its attempt is then closed as "worker lost"), and only while
-- attempts remain; concurrent claims serialise on the row lock, so one wins.
-- name: ClaimItem :one
WITH prev AS (
  SELECT x.run_id, x.item_no, x.current_attempt_id AS prev_attempt_id
  FROM dw_etl_run_items x
  WHERE x.run_id = @run_id AND x.item_no = @item_no
  FOR UPDATE
), claimed AS (
  UPDATE dw_etl_run_items i
  SET status = 'RUNNING', attempts = i.attempts + 1, current_attempt_id = @attempt_id,
      heartbeat_at = now(), started_at = coalesce(i.started_at, now()), ended_at = NULL,
      error_category = 'NONE', error_message = NULL
  FROM prev p
  WHERE i.run_id = p.run_id AND i.item_no = p.item_no AND i.attempts < coalesce(i.attempt_limit, @max_attempts::int)
    AND (i.status = 'PENDING'
      OR (i.status = 'RUNNING' AND i.heartbeat_at < now() - make_interval(secs => @lease_seconds::float8)))
  RETURNING i.run_id, i.item_no, i.attempts, p.prev_attempt_id
), lost AS (
  UPDATE dw_etl_run_attempts a
  SET status = 'FAILED', error_category = 'SYSTEM', error_message = 'worker lost',
      ended_at = now(), duration_ms = (extract(epoch FROM now() - a.started_at) * 1000)::bigint
  FROM claimed c
  WHERE a.attempt_id = c.prev_attempt_id AND a.status = 'RUNNING'
  RETURNING a.attempt_id
), ins AS (
  INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt, scheduled_at, worker_id)
  SELECT @attempt_id, c.run_id, c.item_no, c.attempts, @scheduled_at, @worker_id
  FROM claimed c
  RETURNING attempt_no, started_at
)
SELECT c.attempts AS item_attempt, ins.attempt_no, ins.started_at,
  (SELECT count(*) FROM lost)::int AS lost_attempts
FROM claimed c, ins;

-- FinishAttempt records an attempt's end and the item's state after it in one statement. It
-- matches only while the attempt still holds the item's claim (a finish from an attempt that
-- lost it changes nothing and returns matched = 0), and when the item became terminal it counts
-- it in its progress shard, returning the shard's state so the caller reads the whole run's
-- progress only when its own shard is complete.
-- name: FinishAttempts :batchone
WITH item AS (
  UPDATE dw_etl_run_items i
  SET status = @item_status, error_category = @error_category, error_message = @error_message,
      current_attempt_id = NULL, heartbeat_at = NULL,
      ended_at = CASE WHEN @terminal::bool THEN now() ELSE NULL END,
      duration_ms = CASE WHEN @terminal::bool THEN (extract(epoch FROM now() - i.started_at) * 1000)::bigint ELSE NULL END,
      records_read = @records_read, records_written = @records_written, page_count = @page_count,
      cursor_end = coalesce(sqlc.narg('cursor_end'), i.cursor_end), cursor_note = coalesce(sqlc.narg('cursor_note'), i.cursor_note)
  WHERE i.run_id = @run_id AND i.item_no = @item_no AND i.current_attempt_id = @attempt_id
  RETURNING i.run_id
), att AS (
  UPDATE dw_etl_run_attempts a
  SET status = @attempt_status, error_category = @error_category, error_message = @error_message,
      error_detail = @error_detail, backoff_ms = sqlc.narg('backoff_ms'),
      next_retry_at = now() + sqlc.narg('backoff_ms')::bigint * interval '1 millisecond',
      ended_at = now(), duration_ms = (extract(epoch FROM now() - a.started_at) * 1000)::bigint,
      records_read = @records_read, records_written = @records_written, page_count = @page_count
  FROM item
  WHERE a.attempt_id = @attempt_id AND a.status = 'RUNNING'
  RETURNING a.attempt_id
), prog AS (
  UPDATE dw_etl_run_progress p SET terminal = p.terminal + 1
  FROM item
  WHERE @terminal::bool AND p.run_id = item.run_id AND p.shard = @shard
  RETURNING p.terminal, p.items
)
SELECT (SELECT count(*) FROM item)::int AS matched,
  coalesce((SELECT terminal >= items FROM prog), false)::bool AS shard_complete;

-- name: HeartbeatItems :execrows
UPDATE dw_etl_run_items SET heartbeat_at = now()
WHERE current_attempt_id = ANY(@attempt_ids::uuid[]) AND status = 'RUNNING';

-- name: HeartbeatAttempts :exec
UPDATE dw_etl_run_attempts SET heartbeat_at = now()
WHERE attempt_id = ANY(@attempt_ids::uuid[]) AND status = 'RUNNING';

-- name: SetCursorNotes :exec
UPDATE dw_etl_run_items i SET cursor_note = n.note
FROM (SELECT unnest(@item_nos::int[]) AS item_no, unnest(@notes::text[]) AS note) AS n
WHERE i.run_id = @run_id AND i.item_no = n.item_no;

-- name: CancelPendingItem :execrows
UPDATE dw_etl_run_items SET status = 'CANCELLED', ended_at = now(), error_message = 'run cancelled'
WHERE run_id = @run_id AND item_no = @item_no AND status = 'PENDING';
