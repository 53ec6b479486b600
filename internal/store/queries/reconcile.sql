-- Reconciliation and scheduling: the statements the reconciler and the scheduler run to bring
-- Postgres (the record) and Redis (delivery) back in line, and the leadership lock they share.
-- Progress shards are computed as in Go's ShardOf: (item_no - 1) % least(greatest(item_count, 1), @shards).

-- name: TryAdvisoryLock :one
SELECT pg_try_advisory_lock(hashtext(@name::text))::bool AS locked;

-- name: AdvisoryUnlock :one
SELECT pg_advisory_unlock(hashtext(@name::text))::bool AS unlocked;

-- UnenqueuedRuns lists runs recorded but never marked enqueued (their enqueuer died mid-fan-out).
-- name: UnenqueuedRuns :many
SELECT run_id FROM dw_etl_runs
WHERE status = 'PENDING' AND enqueued_at IS NULL
  AND created_at < now() - make_interval(secs => @grace_seconds::float8)
ORDER BY created_at
LIMIT sqlc.arg(batch_size)::int;

-- PendingItemsToCheck pages (keyset on run_id, item_no) through the PENDING, still claimable
-- items of enqueued open runs, with what it takes to rebuild their tasks. An item's attempt
-- limit is its attempt_limit (raised by reruns), else the job's max_attempts, as in ClaimItem.
-- name: PendingItemsToCheck :many
SELECT i.run_id, i.item_no, i.param_hash, i.task_id, r.job_id
FROM dw_etl_runs r
JOIN dw_etl_run_items i ON i.run_id = r.run_id
JOIN dw_etl_jobs j ON j.job_id = r.job_id
WHERE r.status IN ('PENDING', 'RUNNING') AND r.enqueued_at IS NOT NULL
  AND r.created_at < now() - make_interval(secs => @grace_seconds::float8)
  AND i.status = 'PENDING' AND i.attempts < coalesce(i.attempt_limit, j.max_attempts)
  AND (i.run_id, i.item_no) > (@after_run_id::uuid, @after_item_no::int)
ORDER BY i.run_id, i.item_no
LIMIT sqlc.arg(batch_size)::int;

-- name: ItemsStillPending :many
SELECT item_no FROM dw_etl_run_items
WHERE run_id = @run_id AND item_no = ANY(@item_nos::int[]) AND status = 'PENDING';

-- CloseLostAttempts ends, in one statement, up to batch_size attempts whose worker stopped
-- heartbeating: each attempt FAILED/SYSTEM "worker lost", its item back to PENDING while
-- attempts remain or FAILED (and counted terminal) when none do. The item must still name the
-- attempt and still be stale under its row lock, so a live worker's finish or heartbeat wins;
-- items a worker is writing right now are skipped and seen again next pass.
-- name: CloseLostAttempts :many
WITH lost AS (
  SELECT i.run_id, i.item_no, i.current_attempt_id AS attempt_id, (i.attempts < coalesce(i.attempt_limit, j.max_attempts)) AS retry,
    r.item_count
  FROM dw_etl_run_items i
  JOIN dw_etl_runs r ON r.run_id = i.run_id
  JOIN dw_etl_jobs j ON j.job_id = r.job_id
  WHERE i.status = 'RUNNING' AND i.current_attempt_id IS NOT NULL
    AND i.heartbeat_at < now() - make_interval(secs => @lease_seconds::float8)
  LIMIT sqlc.arg(batch_size)::int
  FOR UPDATE OF i SKIP LOCKED
), closed AS (
  UPDATE dw_etl_run_items i
  SET status = CASE WHEN l.retry THEN 'PENDING' ELSE 'FAILED' END,
      error_category = 'SYSTEM', error_message = 'worker lost',
      current_attempt_id = NULL, heartbeat_at = NULL,
      ended_at = CASE WHEN l.retry THEN NULL ELSE now() END,
      duration_ms = CASE WHEN l.retry THEN NULL
        ELSE (extract(epoch FROM now() - i.started_at) * 1000)::bigint END
  FROM lost l
  WHERE i.run_id = l.run_id AND i.item_no = l.item_no AND i.current_attempt_id = l.attempt_id
    AND i.status = 'RUNNING' AND i.heartbeat_at < now() - make_interval(secs => @lease_seconds::float8)
  RETURNING i.run_id, i.item_no, l.attempt_id, l.retry, l.item_count
), attempts AS (
  UPDATE dw_etl_run_attempts a
  SET status = 'FAILED', error_category = 'SYSTEM', error_message = 'worker lost',
      ended_at = now(), duration_ms = (extract(epoch FROM now() - a.started_at) * 1000)::bigint
  FROM closed c
  WHERE a.attempt_id = c.attempt_id AND a.status = 'RUNNING'
  RETURNING a.attempt_id
), progress AS (
  UPDATE dw_etl_run_progress p SET terminal = p.terminal + b.n
  FROM (
    SELECT c.run_id, ((c.item_no - 1) % least(greatest(c.item_count, 1), @shards::int))::smallint AS shard,
      count(*)::int AS n
    FROM closed c WHERE NOT c.retry GROUP BY 1, 2
  ) b
  WHERE p.run_id = b.run_id AND p.shard = b.shard
  RETURNING p.run_id
)
SELECT c.run_id, c.item_no, c.attempt_id::uuid AS attempt_id, c.retry::bool AS retry
FROM closed c;

-- CloseOrphanAttempts ends RUNNING attempts with a stale heartbeat that no item names any more
-- (none should exist: every path that moves an item's claim closes its attempt).
-- name: CloseOrphanAttempts :execrows
UPDATE dw_etl_run_attempts a
SET status = 'FAILED', error_category = 'SYSTEM', error_message = 'worker lost',
    ended_at = now(), duration_ms = (extract(epoch FROM now() - a.started_at) * 1000)::bigint
WHERE a.status = 'RUNNING' AND a.heartbeat_at < now() - make_interval(secs => @lease_seconds::float8)
  AND NOT EXISTS (
    SELECT 1 FROM dw_etl_run_items i
    WHERE i.run_id = a.run_id AND i.item_no = a.item_no AND i.current_attempt_id = a.attempt_id
  );

-- FailExhaustedItems ends PENDING items that can never be claimed again (attempts reached the
-- item's attempt limit, e.g. after the job's max_attempts was lowered), so their run can finish.
-- name: FailExhaustedItems :many
WITH stuck AS (
  SELECT i.run_id, i.item_no, r.item_count
  FROM dw_etl_runs r
  JOIN dw_etl_jobs j ON j.job_id = r.job_id
  JOIN dw_etl_run_items i ON i.run_id = r.run_id
  WHERE r.status IN ('PENDING', 'RUNNING')
    AND r.created_at < now() - make_interval(secs => @grace_seconds::float8)
    AND i.status = 'PENDING' AND i.attempts >= coalesce(i.attempt_limit, j.max_attempts)
  LIMIT sqlc.arg(batch_size)::int
  FOR UPDATE OF i SKIP LOCKED
), failed AS (
  UPDATE dw_etl_run_items i
  SET status = 'FAILED', error_category = 'SYSTEM', error_message = 'out of attempts',
      ended_at = now(), duration_ms = (extract(epoch FROM now() - coalesce(i.started_at, now())) * 1000)::bigint
  FROM stuck s
  WHERE i.run_id = s.run_id AND i.item_no = s.item_no AND i.status = 'PENDING'
  RETURNING i.run_id, i.item_no, s.item_count
), progress AS (
  UPDATE dw_etl_run_progress p SET terminal = p.terminal + b.n
  FROM (
    SELECT f.run_id, ((f.item_no - 1) % least(greatest(f.item_count, 1), @shards::int))::smallint AS shard,
      count(*)::int AS n
    FROM failed f GROUP BY 1, 2
  ) b
  WHERE p.run_id = b.run_id AND p.shard = b.shard
  RETURNING p.run_id
)
SELECT f.run_id, f.item_no FROM failed f;

-- TimedOutRuns lists open runs past their job's run_timeout_ms.
-- name: TimedOutRuns :many
SELECT r.run_id, r.job_id, r.started_at, j.run_timeout_ms::bigint AS run_timeout_ms
FROM dw_etl_runs r
JOIN dw_etl_jobs j ON j.job_id = r.job_id
WHERE r.status IN ('PENDING', 'RUNNING') AND j.run_timeout_ms IS NOT NULL
  AND r.started_at + j.run_timeout_ms * interval '1 millisecond' < now()
ORDER BY r.started_at
LIMIT sqlc.arg(batch_size)::int;

-- FailOpenItems ends up to batch_size PENDING/RUNNING items of a run as FAILED/SYSTEM with
-- the given message, closing their running attempts the same way and counting them terminal.
-- A worker still running such an item loses its claim: its finish changes nothing.
-- name: FailOpenItems :one
WITH todo AS (
  SELECT i.run_id, i.item_no, i.current_attempt_id, r.item_count
  FROM dw_etl_run_items i
  JOIN dw_etl_runs r ON r.run_id = i.run_id
  WHERE i.run_id = @run_id AND i.status IN ('PENDING', 'RUNNING')
  LIMIT sqlc.arg(batch_size)::int
  FOR UPDATE OF i SKIP LOCKED
), failed AS (
  UPDATE dw_etl_run_items i
  SET status = 'FAILED', error_category = 'SYSTEM', error_message = @message::text,
      current_attempt_id = NULL, heartbeat_at = NULL, ended_at = now(),
      duration_ms = (extract(epoch FROM now() - coalesce(i.started_at, now())) * 1000)::bigint
  FROM todo o
  WHERE i.run_id = o.run_id AND i.item_no = o.item_no AND i.status IN ('PENDING', 'RUNNING')
  RETURNING i.run_id, i.item_no, o.current_attempt_id, o.item_count
), attempts AS (
  UPDATE dw_etl_run_attempts a
  SET status = 'FAILED', error_category = 'SYSTEM', error_message = @message::text,
      ended_at = now(), duration_ms = (extract(epoch FROM now() - a.started_at) * 1000)::bigint
  FROM failed f
  WHERE a.attempt_id = f.current_attempt_id AND a.status = 'RUNNING'
  RETURNING a.attempt_id
), progress AS (
  UPDATE dw_etl_run_progress p SET terminal = p.terminal + b.n
  FROM (
    SELECT f.run_id, ((f.item_no - 1) % least(greatest(f.item_count, 1), @shards::int))::smallint AS shard,
      count(*)::int AS n
    FROM failed f GROUP BY 1, 2
  ) b
  WHERE p.run_id = b.run_id AND p.shard = b.shard
  RETURNING p.run_id
)
SELECT (SELECT count(*) FROM failed)::int AS items, (SELECT count(*) FROM attempts)::int AS attempts;

-- CompleteOpenRuns lists open runs whose progress shards say every item is terminal.
-- name: CompleteOpenRuns :many
SELECT r.run_id FROM dw_etl_runs r
WHERE r.status IN ('PENDING', 'RUNNING')
  AND r.created_at < now() - make_interval(secs => @grace_seconds::float8)
  AND NOT EXISTS (
    SELECT 1 FROM dw_etl_run_progress p WHERE p.run_id = r.run_id AND p.terminal < p.items
  )
ORDER BY r.created_at
LIMIT sqlc.arg(batch_size)::int;

-- ScheduledJobTicks lists enabled jobs with a cron schedule and the last tick each fired
-- (a backward scan of dw_etl_runs_schedule_tick_idx per job).
-- name: ScheduledJobTicks :many
SELECT j.job_id, j.schedule::text AS schedule, j.updated_at, t.scheduled_for AS last_scheduled_for
FROM dw_etl_jobs j
LEFT JOIN LATERAL (
  SELECT r.scheduled_for FROM dw_etl_runs r
  WHERE r.job_id = j.job_id AND r.scheduled_for IS NOT NULL
  ORDER BY r.scheduled_for DESC LIMIT 1
) t ON true
WHERE j.enabled AND j.schedule IS NOT NULL
ORDER BY j.job_id;

-- RegenerateItemTask gives a PENDING item a new task id (next generation) when its task is
-- stuck active in Redis under a dead worker: the stuck task becomes stale and is ignored.
-- name: RegenerateItemTask :one
UPDATE dw_etl_run_items
SET generation = generation + 1,
    task_id = run_id::text || ':' || left(param_hash, 32) || ':g' || (generation + 1)::text
WHERE run_id = @run_id AND item_no = @item_no AND status = 'PENDING'
RETURNING task_id;
