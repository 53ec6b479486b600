-- Reconciliation and leadership: the statements the reconciler and the scheduler run to bring
-- Postgres (the record) and Redis (delivery) back in line, and the leases that elect one active
-- replica of each. Every repair follows the lock order in items.sql and is guarded so that a
-- live worker racing it wins.

-- AcquireLease takes or renews the named lease for holder until now() + ttl on the database
-- clock. It returns a row only when holder has the lease afterwards: it already held it, or the
-- previous holder let it lapse.
-- name: AcquireLease :one
INSERT INTO dw_etl_leases AS l (name, holder, holder_name, lease_until, acquired_at)
VALUES (@name, @holder, @holder_name, now() + (@ttl_ms::bigint) * interval '1 millisecond', now())
ON CONFLICT (name) DO UPDATE
SET holder = excluded.holder, holder_name = excluded.holder_name, lease_until = excluded.lease_until,
    acquired_at = CASE WHEN l.holder = excluded.holder THEN l.acquired_at ELSE now() END
WHERE l.holder = excluded.holder OR l.lease_until < now()
RETURNING l.acquired_at;

-- name: ReleaseLease :exec
UPDATE dw_etl_leases SET lease_until = now() WHERE name = @name AND holder = @holder;

-- name: LeaseHolder :one
SELECT holder, holder_name, lease_until, acquired_at, (lease_until > now())::bool AS live
FROM dw_etl_leases WHERE name = @name;

-- DeadWorkers lists workers whose lease lapsed that nobody declared dead yet (a worker that
-- stopped cleanly ends its lease when it stops).
-- name: DeadWorkers :many
SELECT worker_id, name, app_name, (stopped_at IS NOT NULL)::bool AS stopped FROM dw_etl_workers
WHERE dead_at IS NULL AND lease_until < now()
ORDER BY lease_until
LIMIT sqlc.arg(batch_size)::int;

-- DeclareWorkerDead marks a worker dead if its lease is still lapsed (a late heartbeat wins).
-- name: DeclareWorkerDead :execrows
UPDATE dw_etl_workers SET dead_at = now()
WHERE worker_id = @worker_id AND dead_at IS NULL AND lease_until < now();

-- LockLostAttempts locks (SKIP LOCKED, in key order) up to batch_size items whose claim belongs
-- to the given dead worker, with what the lost-attempt rule needs. Run it in a transaction with
-- CloseLostAttempts.
-- name: LockLostAttempts :many
SELECT i.run_id, i.item_no, i.current_attempt_id::uuid AS attempt_id, i.attempts, i.lost_attempts,
  coalesce(i.attempt_limit, j.max_attempts)::int AS attempt_limit, a.solo, i.generation, j.queue
FROM dw_etl_run_items i
JOIN dw_etl_run_attempts a ON a.attempt_id = i.current_attempt_id
JOIN dw_etl_runs r ON r.run_id = i.run_id
JOIN dw_etl_jobs j ON j.job_id = r.job_id
WHERE i.claim_worker = @worker::uuid AND a.worker = @worker::uuid AND a.status = 'RUNNING'
  AND i.current_attempt_id IS NOT NULL
ORDER BY i.run_id, i.item_no
LIMIT sqlc.arg(batch_size)::int
FOR NO KEY UPDATE OF i SKIP LOCKED;

-- CloseLostAttempts applies the decisions taken on LockLostAttempts' rows: each attempt ends
-- FAILED/SYSTEM with its message; its item goes back to PENDING under a new generation (its task
-- is stuck active under the dead worker's asynq server) or settles FAILED; counters follow.
-- name: CloseLostAttempts :many
WITH req AS (
  SELECT * FROM (SELECT unnest(@run_ids::uuid[]) AS run_id, unnest(@item_nos::int[]) AS item_no, unnest(@attempt_ids::uuid[]) AS attempt_id, unnest(@retry::bool[]) AS retry, unnest(@solo_next::bool[]) AS solo_next, unnest(@messages::text[]) AS message) AS r
), item AS (
  UPDATE dw_etl_run_items i
  SET status = CASE WHEN q.retry THEN 'PENDING' ELSE 'FAILED' END,
      error_category = 'SYSTEM', error_message = q.message,
      current_attempt_id = NULL, claim_worker = NULL, lost_attempts = i.lost_attempts + 1,
      solo = q.solo_next, generation = CASE WHEN q.retry THEN i.generation + 1 ELSE i.generation END,
      ended_at = CASE WHEN q.retry THEN NULL ELSE now() END,
      duration_ms = CASE WHEN q.retry THEN NULL ELSE (extract(epoch FROM now() - i.started_at) * 1000)::bigint END
  FROM req q
  WHERE i.run_id = q.run_id AND i.item_no = q.item_no AND i.current_attempt_id = q.attempt_id
  RETURNING i.run_id, i.item_no, i.generation, q.attempt_id, q.retry, q.message
), att AS (
  UPDATE dw_etl_run_attempts a
  SET status = 'FAILED', error_category = 'SYSTEM', error_message = item.message, ended_by = @ended_by::text,
      ended_at = now(), duration_ms = (extract(epoch FROM now() - a.started_at) * 1000)::bigint
  FROM item
  WHERE a.attempt_id = item.attempt_id AND a.status = 'RUNNING'
  RETURNING a.attempt_id, a.item_attempt
), prog AS (
  INSERT INTO dw_etl_run_progress AS p (run_id, shard, attempts_ended, attempts_lost, max_item_attempt,
    failed, failed_system, last_ended_at)
  SELECT item.run_id, @shard::smallint, count(*)::int, count(*)::int, max(att.item_attempt)::int,
    count(*) FILTER (WHERE NOT item.retry)::int, count(*) FILTER (WHERE NOT item.retry)::int, now()
  FROM item JOIN att ON att.attempt_id = item.attempt_id
  GROUP BY item.run_id
  ORDER BY item.run_id
  ON CONFLICT (run_id, shard) DO UPDATE SET attempts_ended = p.attempts_ended + excluded.attempts_ended,
    attempts_lost = p.attempts_lost + excluded.attempts_lost,
    max_item_attempt = greatest(p.max_item_attempt, excluded.max_item_attempt),
    failed = p.failed + excluded.failed, failed_system = p.failed_system + excluded.failed_system,
    last_ended_at = excluded.last_ended_at
)
SELECT item.run_id, item.item_no, item.generation, item.attempt_id::uuid AS attempt_id, item.retry::bool AS retry FROM item;

-- CloseOrphanAttempts ends RUNNING attempts of a dead worker that no item names any more (none
-- should exist: every path that moves a claim closes its attempt in the same statement).
-- name: CloseOrphanAttempts :execrows
UPDATE dw_etl_run_attempts a
SET status = 'FAILED', error_category = 'SYSTEM', error_message = 'worker lost', ended_by = 'reconciler',
    ended_at = now(), duration_ms = (extract(epoch FROM now() - a.started_at) * 1000)::bigint
WHERE a.worker = @worker::uuid AND a.status = 'RUNNING'
  AND NOT EXISTS (
    SELECT 1 FROM dw_etl_run_items i
    WHERE i.run_id = a.run_id AND i.item_no = a.item_no AND i.current_attempt_id = a.attempt_id
  );

-- UnenqueuedRuns lists open runs whose fan-out never finished and whose fan-out lease lapsed
-- (their enqueuer died, or a rerun's enqueue failed); a run still being fanned out is left alone.
-- name: UnenqueuedRuns :many
SELECT run_id FROM dw_etl_runs
WHERE status IN ('PENDING', 'RUNNING') AND enqueued_at IS NULL
  AND (fanout_until IS NULL OR fanout_until < now())
ORDER BY created_at
LIMIT sqlc.arg(batch_size)::int;

-- TakeFanout takes (or renews for holder) a run's fan-out lease; no row means someone else holds
-- it or the fan-out is done.
-- name: TakeFanout :one
UPDATE dw_etl_runs SET fanout_until = now() + (@ttl_ms::bigint) * interval '1 millisecond'
WHERE run_id = @run_id AND enqueued_at IS NULL AND status IN ('PENDING', 'RUNNING')
  AND (fanout_until IS NULL OR fanout_until < now() OR @renew::bool)
RETURNING fanout_until;

-- OpenRunCounts gives, per open enqueued run, its queue and counters: what Redis should hold for
-- it. At most ProgressShards counter rows per run are read, never items.
-- name: OpenRunCounts :many
SELECT r.run_id, j.queue, r.item_count, r.deadline_at, r.cancel_requested_at,
  coalesce(sum(p.succeeded + p.failed + p.cancelled + p.skipped), 0)::bigint AS terminal,
  coalesce(sum(p.attempts_started - p.attempts_ended), 0)::bigint AS running
FROM dw_etl_runs r
JOIN dw_etl_jobs j ON j.job_id = r.job_id
LEFT JOIN dw_etl_run_progress p ON p.run_id = r.run_id
WHERE r.status IN ('PENDING', 'RUNNING') AND r.enqueued_at IS NOT NULL
GROUP BY r.run_id, j.queue
ORDER BY r.run_id;

-- DeliverableItems pages (keyset on run_id, item_no) the items of a queue's open enqueued runs
-- that wait for a delivery: PENDING, unclaimed, within their attempt limit.
-- name: DeliverableItems :many
SELECT i.run_id, i.item_no, i.generation, i.next_retry_at
FROM dw_etl_runs r
JOIN dw_etl_jobs j ON j.job_id = r.job_id
JOIN dw_etl_run_items i ON i.run_id = r.run_id
WHERE j.queue = @queue AND r.status IN ('PENDING', 'RUNNING') AND r.enqueued_at IS NOT NULL
  AND i.status = 'PENDING' AND i.current_attempt_id IS NULL
  AND i.attempts - i.lost_attempts < coalesce(i.attempt_limit, j.max_attempts)
  AND (i.run_id, i.item_no) > (@after_run_id::uuid, @after_item_no::int)
ORDER BY i.run_id, i.item_no
LIMIT sqlc.arg(batch_size)::int;

-- name: GetRedisEpoch :one
SELECT epoch FROM dw_etl_redis_epochs WHERE queue = @queue;

-- name: SetRedisEpoch :exec
INSERT INTO dw_etl_redis_epochs (queue, epoch, set_at) VALUES (@queue, @epoch, now())
ON CONFLICT (queue) DO UPDATE SET epoch = excluded.epoch, set_at = now();

-- NextItemGeneration moves a PENDING, unclaimed item to its next task generation (its task is
-- stuck, or was rebuilt) and returns it; no row when the item is claimed or settled meanwhile.
-- name: NextItemGeneration :one
UPDATE dw_etl_run_items SET generation = generation + 1
WHERE run_id = @run_id AND item_no = @item_no AND status = 'PENDING' AND current_attempt_id IS NULL
RETURNING generation, next_retry_at;

-- ItemGenerations reads the current state of items named by tasks found in Redis.
-- name: ItemGenerations :many
SELECT i.run_id, i.item_no, i.generation, i.status, i.current_attempt_id, i.next_retry_at
FROM dw_etl_run_items i
JOIN (SELECT unnest(@run_ids::uuid[]) AS run_id, unnest(@item_nos::int[]) AS item_no) AS q ON i.run_id = q.run_id AND i.item_no = q.item_no;

-- NextRunDeadline is the earliest deadline among open runs, so the leader wakes up for it.
-- name: NextRunDeadline :one
SELECT deadline_at FROM dw_etl_runs
WHERE status IN ('PENDING', 'RUNNING') AND deadline_at IS NOT NULL
ORDER BY deadline_at
LIMIT 1;

-- TimedOutRuns lists open runs past their deadline.
-- name: TimedOutRuns :many
SELECT run_id, job_id, started_at, deadline_at::timestamptz AS deadline_at FROM dw_etl_runs
WHERE status IN ('PENDING', 'RUNNING') AND deadline_at < now()
ORDER BY deadline_at
LIMIT sqlc.arg(batch_size)::int;

-- LockTimedOutClaims locks (SKIP LOCKED) the claimed items of a timed-out run whose attempt
-- started more than grace before now: their worker had the deadline and its grace to record
-- them, so the reconciler closes them.
-- name: LockTimedOutClaims :many
SELECT i.run_id, i.item_no, i.current_attempt_id::uuid AS attempt_id
FROM dw_etl_run_items i
JOIN dw_etl_runs r ON r.run_id = i.run_id
WHERE i.run_id = @run_id AND i.status = 'PENDING' AND i.current_attempt_id IS NOT NULL
  AND r.deadline_at < now() - (@grace_ms::bigint) * interval '1 millisecond'
ORDER BY i.run_id, i.item_no
LIMIT sqlc.arg(batch_size)::int
FOR NO KEY UPDATE OF i SKIP LOCKED;

-- CloseTimedOutClaims fails the given claimed items and their attempts with message.
-- name: CloseTimedOutClaims :execrows
WITH req AS (
  SELECT * FROM (SELECT unnest(@item_nos::int[]) AS item_no, unnest(@attempt_ids::uuid[]) AS attempt_id) AS r
), item AS (
  UPDATE dw_etl_run_items i
  SET status = 'FAILED', error_category = 'SYSTEM', error_message = @message::text,
      current_attempt_id = NULL, claim_worker = NULL, ended_at = now(),
      duration_ms = (extract(epoch FROM now() - i.started_at) * 1000)::bigint
  FROM req q
  WHERE i.run_id = @run_id AND i.item_no = q.item_no AND i.current_attempt_id = q.attempt_id
  RETURNING i.item_no, q.attempt_id
), att AS (
  UPDATE dw_etl_run_attempts a
  SET status = 'FAILED', error_category = 'SYSTEM', error_message = @message::text, ended_by = 'timeout',
      ended_at = now(), duration_ms = (extract(epoch FROM now() - a.started_at) * 1000)::bigint
  FROM item WHERE a.attempt_id = item.attempt_id AND a.status = 'RUNNING'
  RETURNING a.attempt_id, a.item_attempt
)
INSERT INTO dw_etl_run_progress AS p (run_id, shard, attempts_ended, max_item_attempt, failed, failed_system, last_ended_at)
SELECT @run_id::uuid, @shard::smallint, count(*)::int, coalesce(max(att.item_attempt), 0)::int, count(*)::int, count(*)::int, now()
FROM att HAVING count(*) > 0
ON CONFLICT (run_id, shard) DO UPDATE SET attempts_ended = p.attempts_ended + excluded.attempts_ended,
  max_item_attempt = greatest(p.max_item_attempt, excluded.max_item_attempt),
  failed = p.failed + excluded.failed, failed_system = p.failed_system + excluded.failed_system,
  last_ended_at = excluded.last_ended_at;

-- CompleteOpenRuns lists open, enqueued runs whose counters say every item settled.
-- name: CompleteOpenRuns :many
SELECT r.run_id FROM dw_etl_runs r
WHERE r.status IN ('PENDING', 'RUNNING') AND r.enqueued_at IS NOT NULL
  AND r.item_count <= (SELECT coalesce(sum(p.succeeded + p.failed + p.cancelled + p.skipped), 0)
    FROM dw_etl_run_progress p WHERE p.run_id = r.run_id)
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
