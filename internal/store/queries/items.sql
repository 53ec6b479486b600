-- The item ledger: claim → liveness → finish, the statements on a worker's hot path.
--
-- Lock order (docs/state-machine.md; every statement that waits follows it):
--   run row (FOR NO KEY UPDATE, never FOR UPDATE) → item rows in (run_id, item_no) order →
--   their attempt rows → progress rows in (run_id, shard) order → cursor rows in
--   (job_id, param_hash) order.
-- Statements that touch attempt rows without holding their items (the heartbeat's progress
-- report) take them with SKIP LOCKED and never wait. Batches arrive as arrays (claims) or one
-- jsonb array (finishes, which carry NULLs), so one statement serves any batch size and keeps a
-- generic plan.

-- ClaimItems takes each requested item for one attempt: the item must be PENDING, unclaimed, of
-- the requested generation, within its attempt limit (worker-lost attempts count against their
-- own limit, not this one), of an open run that is neither cancelled nor past its deadline, and
-- not a suspect waiting to run alone unless the caller runs it alone. The claim changes no
-- indexed column of the item (a HOT update); the attempt row is inserted RUNNING and the run's
-- counters note it started. Every request gets a row back saying what it found, so a caller
-- learns why an item was not claimed without another round trip. A request whose attempt already
-- holds the item (a retried statement whose first commit was not acknowledged) comes back
-- claimed.
-- name: ClaimItems :many
WITH req AS (
  SELECT r.run_id, r.item_no, r.generation, r.attempt_id
  FROM (SELECT unnest(@run_ids::uuid[]) AS run_id, unnest(@item_nos::int[]) AS item_no, unnest(@generations::int[]) AS generation, unnest(@attempt_ids::uuid[]) AS attempt_id) AS r
), eligible AS (
  SELECT i.run_id, i.item_no, q.attempt_id, i.attempts + 1 AS item_attempt, i.solo
  FROM req q
  JOIN dw_etl_run_items i ON i.run_id = q.run_id AND i.item_no = q.item_no
  JOIN dw_etl_runs ru ON ru.run_id = i.run_id
  JOIN dw_etl_jobs j ON j.job_id = ru.job_id
  WHERE i.status = 'PENDING' AND i.current_attempt_id IS NULL AND i.generation = q.generation
    AND (NOT i.solo OR @alone::bool)
    AND i.attempts - i.lost_attempts < coalesce(i.attempt_limit, j.max_attempts)
    AND ru.status IN ('PENDING', 'RUNNING') AND ru.cancel_requested_at IS NULL
    AND (ru.deadline_at IS NULL OR ru.deadline_at > now())
  ORDER BY i.run_id, i.item_no
  FOR NO KEY UPDATE OF i
), claimed AS (
  UPDATE dw_etl_run_items i
  SET current_attempt_id = e.attempt_id, claim_worker = @worker::uuid, attempts = e.item_attempt,
      started_at = coalesce(i.started_at, now()), solo = false, next_retry_at = NULL
  FROM eligible e
  WHERE i.run_id = e.run_id AND i.item_no = e.item_no
  RETURNING i.run_id, i.item_no, e.attempt_id, e.item_attempt, e.solo
), ins AS (
  INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt, worker_id, worker, solo)
  SELECT c.attempt_id, c.run_id, c.item_no, c.item_attempt, @worker_name::text, @worker::uuid, c.solo
  FROM claimed c
  ORDER BY c.run_id, c.item_no
  RETURNING attempt_id, attempt_no, started_at
), prog AS (
  INSERT INTO dw_etl_run_progress AS p (run_id, shard, attempts_started)
  SELECT c.run_id, @shard::smallint, count(*)::int FROM claimed c GROUP BY c.run_id ORDER BY c.run_id
  ON CONFLICT (run_id, shard) DO UPDATE SET attempts_started = p.attempts_started + excluded.attempts_started
)
SELECT q.run_id::uuid AS run_id, q.item_no::int AS item_no, q.attempt_id::uuid AS attempt_id,
  coalesce(c.attempt_id IS NOT NULL OR i.current_attempt_id = q.attempt_id, false)::bool AS claimed,
  coalesce(c.item_attempt, i.attempts, 0)::int AS item_attempt,
  coalesce(ins.attempt_no, a0.attempt_no, 0)::bigint AS attempt_no,
  coalesce(c.solo, a0.solo, false)::bool AS solo,
  (i.run_id IS NOT NULL)::bool AS found,
  coalesce(i.status, '')::text AS item_status,
  coalesce(i.generation, 0)::int AS item_generation,
  coalesce(i.current_attempt_id IS NOT NULL AND i.current_attempt_id <> q.attempt_id, false)::bool AS held,
  coalesce(i.solo, false)::bool AS item_solo,
  coalesce(i.attempts - i.lost_attempts >= coalesce(i.attempt_limit, j.max_attempts), false)::bool AS exhausted,
  coalesce(i.attempt_limit, j.max_attempts, 0)::int AS attempt_limit,
  coalesce(i.lost_attempts, 0)::int AS lost_attempts,
  i.params, coalesce(i.param_hash, '')::text AS param_hash, i.cursor_start, i.cursor_meta, i.cursor_end,
  coalesce(ru.job_id, '')::text AS job_id, coalesce(ru.status, '')::text AS run_status,
  coalesce(ru.dry_run, false)::bool AS dry_run, ru.logical_start, coalesce(ru.item_count, 0)::int AS item_count,
  (ru.cancel_requested_at IS NOT NULL)::bool AS cancel_requested,
  ru.deadline_at, now()::timestamptz AS db_now,
  j.updated_at AS job_updated_at
FROM req q
LEFT JOIN claimed c ON c.attempt_id = q.attempt_id
LEFT JOIN ins ON ins.attempt_id = q.attempt_id
LEFT JOIN dw_etl_run_items i ON i.run_id = q.run_id AND i.item_no = q.item_no
LEFT JOIN dw_etl_run_attempts a0 ON a0.attempt_id = q.attempt_id
LEFT JOIN dw_etl_runs ru ON ru.run_id = q.run_id
LEFT JOIN dw_etl_jobs j ON j.job_id = ru.job_id;

-- FinishAttempts records attempt ends, each only while its attempt still holds the item (an end
-- from an attempt that lost the claim changes nothing), in one statement: the item's state
-- after the attempt, the attempt's end, the counters of the caller's progress shard, and the
-- cursors of items whose job moves cursors per item. Per request it reports whether it was
-- recorded now or had been recorded already by the holder (a retried statement), and how many
-- items of the run were still open before this statement.
-- name: FinishAttempts :many
WITH req AS (
  SELECT (e.v->>'attempt_id')::uuid AS attempt_id,
    (e.v->>'run_id')::uuid AS run_id,
    (e.v->>'item_no')::int AS item_no,
    (e.v->>'attempt_status') AS attempt_status,
    (e.v->>'item_status') AS item_status,
    (e.v->>'terminal')::bool AS terminal,
    (e.v->>'category') AS category,
    (e.v->>'message') AS message,
    nullif(e.v->'detail', 'null'::jsonb) AS detail,
    (e.v->>'backoff_ms')::bigint AS backoff_ms,
    (e.v->>'records_read')::bigint AS records_read,
    (e.v->>'records_written')::bigint AS records_written,
    (e.v->>'records_discarded')::bigint AS records_discarded,
    (e.v->>'pages')::bigint AS pages,
    (e.v->>'cursor_end')::timestamptz AS cursor_end,
    nullif(e.v->'cursor_end_meta', 'null'::jsonb) AS cursor_end_meta,
    (e.v->>'cursor_note') AS cursor_note,
    (e.v->>'advance_cursor')::bool AS advance_cursor,
    (e.v->>'ended_by') AS ended_by
  FROM jsonb_array_elements(@ends::jsonb) AS e(v)
), locked AS (
  SELECT i.run_id, i.item_no, q.attempt_id
  FROM req q
  JOIN dw_etl_run_items i ON i.run_id = q.run_id AND i.item_no = q.item_no
  WHERE i.current_attempt_id = q.attempt_id
  ORDER BY i.run_id, i.item_no
  FOR NO KEY UPDATE OF i
), item AS (
  UPDATE dw_etl_run_items i
  SET status = q.item_status, error_category = q.category, error_message = q.message,
      current_attempt_id = NULL, claim_worker = NULL,
      next_retry_at = CASE WHEN q.backoff_ms IS NULL THEN NULL ELSE now() + q.backoff_ms * interval '1 millisecond' END,
      ended_at = CASE WHEN q.terminal THEN now() END,
      duration_ms = CASE WHEN q.terminal THEN (extract(epoch FROM now() - i.started_at) * 1000)::bigint END,
      records_read = q.records_read, records_written = q.records_written, page_count = q.pages,
      cursor_end = coalesce(q.cursor_end, i.cursor_end), cursor_end_meta = coalesce(q.cursor_end_meta, i.cursor_end_meta),
      cursor_note = coalesce(q.cursor_note, i.cursor_note)
  FROM locked l
  JOIN req q ON q.attempt_id = l.attempt_id
  WHERE i.run_id = l.run_id AND i.item_no = l.item_no AND i.current_attempt_id = l.attempt_id
  RETURNING i.run_id, i.item_no, i.param_hash, i.params, l.attempt_id
), att AS (
  UPDATE dw_etl_run_attempts a
  SET status = q.attempt_status, error_category = q.category, error_message = q.message,
      error_detail = q.detail, backoff_ms = q.backoff_ms,
      next_retry_at = now() + q.backoff_ms * interval '1 millisecond',
      ended_at = now(), duration_ms = (extract(epoch FROM now() - a.started_at) * 1000)::bigint,
      records_read = q.records_read, records_written = q.records_written,
      records_discarded = q.records_discarded, page_count = q.pages, ended_by = q.ended_by
  FROM item
  JOIN req q ON q.attempt_id = item.attempt_id
  WHERE a.attempt_id = item.attempt_id AND a.status = 'RUNNING'
  RETURNING a.attempt_id, a.run_id, a.item_attempt
), prog AS (
  INSERT INTO dw_etl_run_progress AS p (run_id, shard, attempts_ended, retries, backoff_ms,
    max_item_attempt, succeeded, failed, cancelled, skipped, failed_api, failed_db, failed_data,
    failed_system, records_read, records_written, records_discarded, page_count, last_ended_at)
  SELECT q.run_id, @shard::smallint, count(*)::int,
    count(*) FILTER (WHERE q.backoff_ms IS NOT NULL)::int, coalesce(sum(q.backoff_ms), 0)::bigint,
    max(a.item_attempt)::int,
    count(*) FILTER (WHERE q.terminal AND q.item_status = 'SUCCESS')::int,
    count(*) FILTER (WHERE q.terminal AND q.item_status = 'FAILED')::int,
    count(*) FILTER (WHERE q.terminal AND q.item_status = 'CANCELLED')::int,
    count(*) FILTER (WHERE q.terminal AND q.item_status = 'SKIPPED')::int,
    count(*) FILTER (WHERE q.terminal AND q.item_status = 'FAILED' AND q.category = 'API')::int,
    count(*) FILTER (WHERE q.terminal AND q.item_status = 'FAILED' AND q.category = 'DB')::int,
    count(*) FILTER (WHERE q.terminal AND q.item_status = 'FAILED' AND q.category = 'DATA')::int,
    count(*) FILTER (WHERE q.terminal AND q.item_status = 'FAILED' AND q.category = 'SYSTEM')::int,
    coalesce(sum(q.records_read), 0)::bigint, coalesce(sum(q.records_written), 0)::bigint,
    coalesce(sum(q.records_discarded), 0)::bigint, coalesce(sum(q.pages), 0)::bigint, now()
  FROM att a
  JOIN req q ON q.attempt_id = a.attempt_id
  GROUP BY q.run_id
  ORDER BY q.run_id
  ON CONFLICT (run_id, shard) DO UPDATE SET
    attempts_ended = p.attempts_ended + excluded.attempts_ended, retries = p.retries + excluded.retries,
    backoff_ms = p.backoff_ms + excluded.backoff_ms,
    max_item_attempt = greatest(p.max_item_attempt, excluded.max_item_attempt),
    succeeded = p.succeeded + excluded.succeeded, failed = p.failed + excluded.failed,
    cancelled = p.cancelled + excluded.cancelled, skipped = p.skipped + excluded.skipped,
    failed_api = p.failed_api + excluded.failed_api, failed_db = p.failed_db + excluded.failed_db,
    failed_data = p.failed_data + excluded.failed_data, failed_system = p.failed_system + excluded.failed_system,
    records_read = p.records_read + excluded.records_read, records_written = p.records_written + excluded.records_written,
    records_discarded = p.records_discarded + excluded.records_discarded, page_count = p.page_count + excluded.page_count,
    last_ended_at = excluded.last_ended_at
  RETURNING p.run_id
), cur AS (
  INSERT INTO dw_etl_incremental_cursors AS c (job_id, param_hash, params, strategy, cursor_value, cursor_meta, last_run_id, updated_at)
  SELECT ru.job_id, item.param_hash, item.params, j.strategy, q.cursor_end, coalesce(q.cursor_end_meta, '{}'::jsonb), ru.run_id, now()
  FROM item
  JOIN req q ON q.attempt_id = item.attempt_id
  JOIN dw_etl_runs ru ON ru.run_id = item.run_id
  JOIN dw_etl_jobs j ON j.job_id = ru.job_id
  WHERE q.advance_cursor AND q.cursor_end IS NOT NULL AND j.strategy IN ('modified_date', 'last_run')
  ORDER BY ru.job_id, item.param_hash
  ON CONFLICT (job_id, param_hash) DO UPDATE
  SET cursor_value = excluded.cursor_value, cursor_meta = excluded.cursor_meta,
      last_run_id = excluded.last_run_id, updated_at = now(), strategy = excluded.strategy
  WHERE c.cursor_value IS NULL OR c.cursor_value < excluded.cursor_value
  RETURNING c.param_hash
)
SELECT q.attempt_id, q.run_id,
  (item.attempt_id IS NOT NULL)::bool AS recorded,
  coalesce(a0.status <> 'RUNNING' AND a0.ended_by = 'holder', false)::bool AS already,
  coalesce(a0.status, '')::text AS previous_status,
  coalesce(ru.item_count - (SELECT sum(x.succeeded + x.failed + x.cancelled + x.skipped)
    FROM dw_etl_run_progress x WHERE x.run_id = q.run_id), 0)::int AS open_before
FROM req q
LEFT JOIN item ON item.attempt_id = q.attempt_id
LEFT JOIN dw_etl_run_attempts a0 ON a0.attempt_id = q.attempt_id
LEFT JOIN dw_etl_runs ru ON ru.run_id = q.run_id;

-- SettleItems ends PENDING, unclaimed items of a run that can never be claimed again (out of
-- attempts, of a cancelled run, past the run's deadline) with the given status and message,
-- counting them in the caller's progress shard.
-- name: SettleItems :many
WITH todo AS (
  SELECT i.run_id, i.item_no
  FROM dw_etl_run_items i
  WHERE i.run_id = @run_id AND i.item_no = ANY(@item_nos::int[]) AND i.status = 'PENDING' AND i.current_attempt_id IS NULL
  ORDER BY i.run_id, i.item_no
  FOR NO KEY UPDATE OF i
), settled AS (
  UPDATE dw_etl_run_items i
  SET status = @status::text, error_category = @category::text, error_message = @message::text, ended_at = now(),
      duration_ms = (extract(epoch FROM now() - coalesce(i.started_at, now())) * 1000)::bigint, next_retry_at = NULL
  FROM todo t
  WHERE i.run_id = t.run_id AND i.item_no = t.item_no
  RETURNING i.run_id, i.item_no, i.generation
), prog AS (
  INSERT INTO dw_etl_run_progress AS p (run_id, shard, failed, cancelled, skipped, failed_api, failed_db, failed_data, failed_system, last_ended_at)
  SELECT @run_id::uuid, @shard::smallint,
    CASE WHEN @status::text = 'FAILED' THEN count(*) ELSE 0 END,
    CASE WHEN @status::text = 'CANCELLED' THEN count(*) ELSE 0 END,
    CASE WHEN @status::text = 'SKIPPED' THEN count(*) ELSE 0 END,
    CASE WHEN @status::text = 'FAILED' AND @category::text = 'API' THEN count(*) ELSE 0 END,
    CASE WHEN @status::text = 'FAILED' AND @category::text = 'DB' THEN count(*) ELSE 0 END,
    CASE WHEN @status::text = 'FAILED' AND @category::text = 'DATA' THEN count(*) ELSE 0 END,
    CASE WHEN @status::text = 'FAILED' AND @category::text = 'SYSTEM' THEN count(*) ELSE 0 END,
    now()
  FROM settled HAVING count(*) > 0
  ON CONFLICT (run_id, shard) DO UPDATE SET failed = p.failed + excluded.failed,
    cancelled = p.cancelled + excluded.cancelled, skipped = p.skipped + excluded.skipped,
    failed_api = p.failed_api + excluded.failed_api,
    failed_db = p.failed_db + excluded.failed_db, failed_data = p.failed_data + excluded.failed_data,
    failed_system = p.failed_system + excluded.failed_system, last_ended_at = excluded.last_ended_at
)
SELECT s.item_no, s.generation FROM settled s;

-- OpenItemsOfRun pages a run's PENDING, unclaimed items (keyset on item_no), for settling them
-- in bounded batches (cancel, run timeout) or re-enqueueing their tasks.
-- name: OpenItemsOfRun :many
SELECT item_no, generation, next_retry_at FROM dw_etl_run_items
WHERE run_id = @run_id AND item_no > @after_item_no AND status = 'PENDING' AND current_attempt_id IS NULL
ORDER BY item_no
LIMIT sqlc.arg(batch_size)::int;

-- name: RegisterWorker :one
INSERT INTO dw_etl_workers (worker_id, name, host, pid, app_name, queues, concurrency, lease_ms, lease_until)
VALUES (@worker_id, @name, @host, @pid, @app_name, @queues, @concurrency, @lease_ms::bigint, now() + (@lease_ms::bigint) * interval '1 millisecond')
RETURNING lease_until;

-- WorkerHeartbeat renews the worker's own lease on the database clock. It returns no row once
-- the reconciler declared the worker dead (its attempts are closed and its identity is spent);
-- lapsed says the lease had run out before this renewal, and cancelled_runs lists which of the
-- given runs an operator asked to cancel.
-- name: WorkerHeartbeat :one
UPDATE dw_etl_workers w
SET heartbeat_at = now(), lease_until = now() + w.lease_ms * interval '1 millisecond'
WHERE w.worker_id = @worker_id AND w.dead_at IS NULL
RETURNING w.lease_until,
  ((SELECT o.lease_until FROM dw_etl_workers o WHERE o.worker_id = @worker_id) < now())::bool AS lapsed,
  coalesce((SELECT array_agg(r.run_id) FROM dw_etl_runs r
    WHERE r.run_id = ANY(@run_ids::uuid[]) AND r.cancel_requested_at IS NOT NULL), '{}')::uuid[] AS cancelled_runs;

-- ReportProgress writes the live counters and message of running attempts. It takes only rows it
-- can lock at once, in key order, so it never waits on (or deadlocks with) a finish.
-- name: ReportProgress :execrows
WITH req AS (
  SELECT * FROM (SELECT unnest(@attempt_ids::uuid[]) AS attempt_id, unnest(@records_read::bigint[]) AS records_read, unnest(@records_written::bigint[]) AS records_written, unnest(@pages::bigint[]) AS pages, unnest(@messages::text[]) AS message) AS r
), l AS (
  SELECT a.attempt_id FROM dw_etl_run_attempts a JOIN req q ON q.attempt_id = a.attempt_id
  WHERE a.status = 'RUNNING'
  ORDER BY a.attempt_id
  FOR NO KEY UPDATE OF a SKIP LOCKED
)
UPDATE dw_etl_run_attempts a
SET records_read = q.records_read, records_written = q.records_written, page_count = q.pages,
    progress = nullif(q.message, ''), progress_at = now()
FROM l JOIN req q ON q.attempt_id = l.attempt_id
WHERE a.attempt_id = l.attempt_id;

-- StopWorker ends a worker that shut down cleanly: its lease ends now, so the reconciler closes
-- anything it left running at once.
-- name: StopWorker :exec
UPDATE dw_etl_workers SET stopped_at = now(), lease_until = least(lease_until, now())
WHERE worker_id = @worker_id;

-- name: GetJobIfChanged :one
SELECT * FROM dw_etl_jobs WHERE job_id = @job_id;
