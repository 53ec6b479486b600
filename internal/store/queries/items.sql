-- The item ledger: claim → liveness → finish, the statements on a worker's hot path.
--
-- Lock order (docs/development.md; every statement that waits follows it):
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
-- not a suspect waiting to run alone unless the caller runs it alone. The running attempt lives
-- on the item (current_*: its id, number, start and worker) until its end inserts its
-- dw_etl_run_attempts row, so the claim is one HOT update per item (it changes no indexed
-- column) and the run's counters note the starts. Every request gets a row back saying what it
-- found, so a caller learns why an item was not claimed without another round trip. A request
-- whose attempt already holds the item (a retried statement whose first commit was not
-- acknowledged) comes back claimed.
-- name: ClaimItems :many
WITH req AS (
  SELECT r.run_id, r.item_no, r.generation, r.attempt_id
  FROM (SELECT unnest(@run_ids::uuid[]) AS run_id, unnest(@item_nos::int[]) AS item_no, unnest(@generations::int[]) AS generation, unnest(@attempt_ids::uuid[]) AS attempt_id) AS r
), eligible AS (
  SELECT i.run_id, i.item_no, q.attempt_id, i.attempts + 1 AS item_attempt
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
      current_attempt_no = nextval('public.dw_etl_run_attempts_attempt_no_seq'::regclass), current_started_at = now(),
      current_progress = NULL, current_progress_at = NULL,
      started_at = coalesce(i.started_at, now()), next_retry_at = NULL
  FROM eligible e
  WHERE i.run_id = e.run_id AND i.item_no = e.item_no
  RETURNING i.run_id, i.item_no, e.attempt_id, e.item_attempt, i.current_attempt_no, i.solo
), prog AS (
  INSERT INTO dw_etl_run_progress AS p (run_id, shard, attempts_started)
  SELECT c.run_id, @shard::smallint, count(*)::int FROM claimed c GROUP BY c.run_id ORDER BY c.run_id
  ON CONFLICT (run_id, shard) DO UPDATE SET attempts_started = p.attempts_started + excluded.attempts_started
)
SELECT q.run_id::uuid AS run_id, q.item_no::int AS item_no, q.attempt_id::uuid AS attempt_id,
  coalesce(c.attempt_id IS NOT NULL OR i.current_attempt_id = q.attempt_id, false)::bool AS claimed,
  coalesce(c.item_attempt, i.attempts, 0)::int AS item_attempt,
  coalesce(c.current_attempt_no, CASE WHEN i.current_attempt_id = q.attempt_id THEN i.current_attempt_no END, 0)::bigint AS attempt_no,
  coalesce(c.solo, i.current_attempt_id = q.attempt_id AND i.solo, false)::bool AS solo,
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
LEFT JOIN dw_etl_run_items i ON i.run_id = q.run_id AND i.item_no = q.item_no
LEFT JOIN dw_etl_runs ru ON ru.run_id = q.run_id
LEFT JOIN dw_etl_jobs j ON j.job_id = ru.job_id;

-- FinishAttempts records attempt ends, each only while its attempt still holds the item (an end
-- from an attempt that lost the claim changes nothing), in one statement: the item's state
-- after the attempt, the attempt's row (inserted now, from what the claim left on the item), the
-- counters of the caller's progress shard, and the cursors of items whose job moves cursors per
-- item. Per request it reports whether it was recorded now or had been recorded already by the
-- holder (a retried statement), and how many items of the run were still open before this
-- statement.
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
  SELECT i.run_id, i.item_no, q.attempt_id, i.attempts AS item_attempt, i.current_attempt_no AS attempt_no,
    i.current_started_at AS attempt_started_at, i.current_progress AS progress, i.current_progress_at AS progress_at,
    i.claim_worker, i.solo
  FROM req q
  JOIN dw_etl_run_items i ON i.run_id = q.run_id AND i.item_no = q.item_no
  WHERE i.current_attempt_id = q.attempt_id
  ORDER BY i.run_id, i.item_no
  FOR NO KEY UPDATE OF i
), item AS (
  -- Carries everything the attempt's row, the counters and the cursors need, so that none of
  -- them joins back to another CTE.
  UPDATE dw_etl_run_items i
  SET status = q.item_status, error_category = q.category, error_message = q.message,
      current_attempt_id = NULL, claim_worker = NULL, current_attempt_no = NULL, current_started_at = NULL,
      current_progress = NULL, current_progress_at = NULL, solo = false,
      next_retry_at = CASE WHEN q.backoff_ms IS NULL THEN NULL ELSE now() + q.backoff_ms * interval '1 millisecond' END,
      ended_at = CASE WHEN q.terminal THEN now() END,
      duration_ms = CASE WHEN q.terminal THEN (extract(epoch FROM now() - i.started_at) * 1000)::bigint END,
      records_read = q.records_read, records_written = q.records_written, page_count = q.pages,
      cursor_end = coalesce(q.cursor_end, i.cursor_end), cursor_end_meta = coalesce(q.cursor_end_meta, i.cursor_end_meta),
      cursor_note = coalesce(q.cursor_note, i.cursor_note)
  FROM locked l
  JOIN req q ON q.attempt_id = l.attempt_id
  WHERE i.run_id = l.run_id AND i.item_no = l.item_no AND i.current_attempt_id = l.attempt_id
  RETURNING i.run_id, i.item_no, i.param_hash, i.params, l.attempt_id, l.item_attempt, l.attempt_no,
    l.attempt_started_at, l.progress, l.progress_at, l.claim_worker, l.solo,
    q.attempt_status, q.item_status, q.terminal, q.category, q.message, q.detail, q.backoff_ms,
    q.records_read, q.records_written, q.records_discarded, q.pages, q.cursor_end, q.cursor_end_meta,
    q.advance_cursor, q.ended_by
), att AS (
  INSERT INTO dw_etl_run_attempts AS a (attempt_id, run_id, attempt_no, item_no, item_attempt, status,
    error_category, error_message, error_detail, backoff_ms, next_retry_at, started_at, ended_at, duration_ms,
    records_read, records_written, records_discarded, page_count, progress, progress_at, worker_id, worker, solo, ended_by)
  OVERRIDING SYSTEM VALUE
  SELECT t.attempt_id, t.run_id, t.attempt_no, t.item_no, t.item_attempt, t.attempt_status,
    t.category, t.message, t.detail, t.backoff_ms, now() + t.backoff_ms * interval '1 millisecond',
    t.attempt_started_at, now(), (extract(epoch FROM now() - t.attempt_started_at) * 1000)::bigint,
    t.records_read, t.records_written, t.records_discarded, t.pages, t.progress, t.progress_at,
    @worker_name::text, t.claim_worker, t.solo, t.ended_by
  FROM item t
  ORDER BY t.run_id, t.item_no
), prog AS (
  -- Counted from item, not from att: every row of item gets its attempt row, or the statement fails.
  INSERT INTO dw_etl_run_progress AS p (run_id, shard, attempts_ended, retries, backoff_ms,
    max_item_attempt, succeeded, failed, cancelled, skipped, failed_api, failed_db, failed_data,
    failed_system, records_read, records_written, records_discarded, page_count, last_ended_at)
  SELECT t.run_id, @shard::smallint, count(*)::int,
    count(*) FILTER (WHERE t.backoff_ms IS NOT NULL)::int, coalesce(sum(t.backoff_ms), 0)::bigint,
    max(t.item_attempt)::int,
    count(*) FILTER (WHERE t.terminal AND t.item_status = 'SUCCESS')::int,
    count(*) FILTER (WHERE t.terminal AND t.item_status = 'FAILED')::int,
    count(*) FILTER (WHERE t.terminal AND t.item_status = 'CANCELLED')::int,
    count(*) FILTER (WHERE t.terminal AND t.item_status = 'SKIPPED')::int,
    count(*) FILTER (WHERE t.terminal AND t.item_status = 'FAILED' AND t.category = 'API')::int,
    count(*) FILTER (WHERE t.terminal AND t.item_status = 'FAILED' AND t.category = 'DB')::int,
    count(*) FILTER (WHERE t.terminal AND t.item_status = 'FAILED' AND t.category = 'DATA')::int,
    count(*) FILTER (WHERE t.terminal AND t.item_status = 'FAILED' AND t.category = 'SYSTEM')::int,
    coalesce(sum(t.records_read), 0)::bigint, coalesce(sum(t.records_written), 0)::bigint,
    coalesce(sum(t.records_discarded), 0)::bigint, coalesce(sum(t.pages), 0)::bigint, now()
  FROM item t
  GROUP BY t.run_id
  ORDER BY t.run_id
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
), cur AS (
  INSERT INTO dw_etl_incremental_cursors AS c (job_id, param_hash, params, strategy, cursor_value, cursor_meta, last_run_id, updated_at)
  SELECT ru.job_id, t.param_hash, t.params, j.strategy, t.cursor_end, coalesce(t.cursor_end_meta, '{}'::jsonb), ru.run_id, now()
  FROM item t
  JOIN dw_etl_runs ru ON ru.run_id = t.run_id
  JOIN dw_etl_jobs j ON j.job_id = ru.job_id
  WHERE t.advance_cursor AND t.cursor_end IS NOT NULL AND j.strategy IN ('modified_date', 'last_run')
  ORDER BY ru.job_id, t.param_hash
  ON CONFLICT (job_id, param_hash) DO UPDATE
  SET cursor_value = excluded.cursor_value, cursor_meta = excluded.cursor_meta,
      last_run_id = excluded.last_run_id, updated_at = now(), strategy = excluded.strategy
  WHERE c.cursor_value IS NULL OR c.cursor_value < excluded.cursor_value
  RETURNING c.param_hash
), open AS (
  SELECT x.run_id, ru.item_count - sum(x.succeeded + x.failed + x.cancelled + x.skipped) AS open_before
  FROM dw_etl_run_progress x
  JOIN dw_etl_runs ru ON ru.run_id = x.run_id
  WHERE x.run_id IN (SELECT DISTINCT run_id FROM req)
  GROUP BY x.run_id, ru.item_count
)
-- An end not recorded now looks up its attempt's row (a retried statement whose first commit
-- landed); a recorded one never does.
SELECT q.attempt_id, q.run_id,
  (item.attempt_id IS NOT NULL)::bool AS recorded,
  coalesce(CASE WHEN item.attempt_id IS NULL THEN
    (SELECT a0.status || ':' || coalesce(a0.ended_by, '') FROM dw_etl_run_attempts a0 WHERE a0.attempt_id = q.attempt_id) END, '')::text AS previous,
  coalesce(o.open_before, 0)::int AS open_before
FROM req q
LEFT JOIN item ON item.attempt_id = q.attempt_id
LEFT JOIN open o ON o.run_id = q.run_id;

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

-- WorkerHeartbeat renews the worker's own lease on the database clock and records the items
-- its attempts hold (held_run_ids/held_item_nos, pairwise), which history reads to list a run's
-- running items. It returns no row once the reconciler declared the worker dead (its attempts
-- are closed and its identity is spent); lapsed says the lease had run out before this renewal,
-- and cancelled_runs lists which of the held items' runs an operator asked to cancel.
-- name: WorkerHeartbeat :one
UPDATE dw_etl_workers w
SET heartbeat_at = now(), lease_until = now() + w.lease_ms * interval '1 millisecond',
    held_run_ids = @held_run_ids::uuid[], held_item_nos = @held_item_nos::int[]
WHERE w.worker_id = @worker_id AND w.dead_at IS NULL
RETURNING w.lease_until,
  ((SELECT o.lease_until FROM dw_etl_workers o WHERE o.worker_id = @worker_id) < now())::bool AS lapsed,
  coalesce((SELECT array_agg(r.run_id) FROM dw_etl_runs r
    WHERE r.run_id = ANY(@held_run_ids::uuid[]) AND r.cancel_requested_at IS NOT NULL), '{}')::uuid[] AS cancelled_runs;

-- ReportProgress writes the live counters and message of running attempts onto their items. It
-- takes only rows it can lock at once, in key order, so it never waits on (or deadlocks with) a
-- finish.
-- name: ReportProgress :execrows
WITH req AS (
  SELECT * FROM (SELECT unnest(@run_ids::uuid[]) AS run_id, unnest(@item_nos::int[]) AS item_no, unnest(@attempt_ids::uuid[]) AS attempt_id, unnest(@records_read::bigint[]) AS records_read, unnest(@records_written::bigint[]) AS records_written, unnest(@pages::bigint[]) AS pages, unnest(@messages::text[]) AS message) AS r
), l AS (
  SELECT i.run_id, i.item_no, q.attempt_id FROM dw_etl_run_items i
  JOIN req q ON i.run_id = q.run_id AND i.item_no = q.item_no AND i.current_attempt_id = q.attempt_id
  ORDER BY i.run_id, i.item_no
  FOR NO KEY UPDATE OF i SKIP LOCKED
)
UPDATE dw_etl_run_items i
SET records_read = q.records_read, records_written = q.records_written, page_count = q.pages,
    current_progress = nullif(q.message, ''), current_progress_at = now()
FROM l JOIN req q ON q.attempt_id = l.attempt_id
WHERE i.run_id = l.run_id AND i.item_no = l.item_no AND i.current_attempt_id = l.attempt_id;

-- StopWorker ends a worker that shut down cleanly: its lease ends now, so the reconciler closes
-- anything it left running at once.
-- name: StopWorker :exec
UPDATE dw_etl_workers SET stopped_at = now(), lease_until = least(lease_until, now()),
  held_run_ids = '{}', held_item_nos = '{}'
WHERE worker_id = @worker_id;

-- name: GetJobIfChanged :one
SELECT * FROM dw_etl_jobs WHERE job_id = @job_id;

-- HoldsClaim reports whether the attempt still holds the item: after a commit whose answer was
-- lost, whether the commit (which releases the claim) landed.
-- name: HoldsClaim :one
SELECT EXISTS (SELECT 1 FROM dw_etl_run_items
  WHERE run_id = @run_id AND item_no = @item_no AND current_attempt_id = @attempt_id::uuid)::bool AS held;
