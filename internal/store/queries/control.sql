-- Control plane: job lifecycle (pause, resume, delete, policies), idempotency keys, ledger
-- retention, the alerter's run watch and deliveries, backfills and small named state. Read by
-- internal/ops, internal/retention, internal/alert and internal/schedule through control.go.

-- name: SetJobPolicies :exec
UPDATE dw_etl_jobs SET history_retention_ms = @history_retention_ms, alert_on = @alert_on,
  expected_duration_ms = @expected_duration_ms, catchup_policy = @catchup_policy, catchup_limit = @catchup_limit
WHERE job_id = @job_id;

-- name: PauseJob :one
UPDATE dw_etl_jobs SET paused = true, paused_at = coalesce(CASE WHEN paused THEN paused_at END, now()),
  paused_by = @paused_by, pause_reason = @pause_reason, updated_at = updated_at
WHERE job_id = @job_id
RETURNING paused, paused_at, paused_by, pause_reason, resumed_at;

-- name: ResumeJob :one
UPDATE dw_etl_jobs SET paused = false, resumed_at = CASE WHEN paused THEN now() ELSE resumed_at END,
  paused_at = NULL, paused_by = NULL, pause_reason = NULL
WHERE job_id = @job_id
RETURNING paused, paused_at, paused_by, pause_reason, resumed_at;

-- JobControls reads whole job rows: store has one conversion of a job row (the control state
-- is part of it).
-- name: JobControls :many
SELECT * FROM dw_etl_jobs WHERE job_id = ANY(@job_ids::text[]);

-- JobHistory counts what deleting a job's history removes. Runs are read on
-- dw_etl_runs_job_started_idx; item and attempt totals come from the runs' own counters.
-- name: JobHistory :one
SELECT count(*)::bigint AS runs,
  count(*) FILTER (WHERE status IN ('PENDING', 'RUNNING'))::bigint AS active_runs,
  coalesce(sum(item_count), 0)::bigint AS items,
  coalesce(sum(attempt_count), 0)::bigint AS attempts,
  (SELECT count(*) FROM dw_etl_incremental_cursors c WHERE c.job_id = @job_id)::bigint AS cursors,
  (SELECT count(*) FROM dw_etl_backfills b WHERE b.job_id = @job_id)::bigint AS backfills
FROM dw_etl_runs WHERE job_id = @job_id;

-- name: JobRunBatch :many
SELECT run_id, item_count, attempt_count FROM dw_etl_runs
WHERE job_id = @job_id AND status NOT IN ('PENDING', 'RUNNING')
ORDER BY started_at
LIMIT @batch_size::int;

-- name: DeleteJobIfNoRuns :execrows
DELETE FROM dw_etl_jobs j WHERE j.job_id = @job_id
  AND NOT EXISTS (SELECT 1 FROM dw_etl_runs r WHERE r.job_id = j.job_id);

-- name: JobsNotIn :many
SELECT j.job_id, EXISTS (SELECT 1 FROM dw_etl_runs r WHERE r.job_id = j.job_id) AS has_runs
FROM dw_etl_jobs j WHERE NOT (j.job_id = ANY(@keep::text[]))
ORDER BY j.job_id;

-- name: InsertIdempotencyKey :exec
INSERT INTO dw_etl_idempotency_keys (job_id, key, run_id, request_hash)
VALUES (@job_id, @key, @run_id, @request_hash);

-- name: InsertIdempotencyKeyIfAbsent :exec
INSERT INTO dw_etl_idempotency_keys (job_id, key, run_id, request_hash)
VALUES (@job_id, @key, @run_id, @request_hash)
ON CONFLICT (job_id, key) DO NOTHING;

-- name: GetIdempotencyKey :one
SELECT run_id, request_hash, created_at FROM dw_etl_idempotency_keys WHERE job_id = @job_id AND key = @key;

-- name: IdempotencyKeysWithPrefix :many
SELECT k.key, k.run_id, r.status FROM dw_etl_idempotency_keys k JOIN dw_etl_runs r USING (run_id)
WHERE k.job_id = @job_id AND left(k.key, length(@prefix::text)) = @prefix::text
ORDER BY k.key;

-- name: AllJobRetention :many
SELECT job_id, history_retention_ms FROM dw_etl_jobs ORDER BY job_id;

-- RetentionCandidates picks the oldest finished runs of a job that started (and ended) before
-- the cutoff, on dw_etl_runs_job_started_idx. It never picks the job's latest run or a run a
-- cursor names as its last run, and skips rows another transaction holds.
-- name: RetentionCandidates :many
SELECT r.run_id, r.item_count, r.attempt_count FROM dw_etl_runs r
WHERE r.job_id = @job_id AND r.started_at < @cutoff
  AND r.status NOT IN ('PENDING', 'RUNNING') AND coalesce(r.ended_at, r.started_at) < @cutoff
  AND r.run_id <> coalesce((SELECT x.run_id FROM dw_etl_runs x WHERE x.job_id = @job_id
                            ORDER BY x.started_at DESC, x.run_id DESC LIMIT 1), '00000000-0000-0000-0000-000000000000')
  AND NOT (r.run_id = ANY(@keep::uuid[]))
ORDER BY r.started_at
LIMIT @batch_size::int
FOR UPDATE OF r SKIP LOCKED;

-- name: CursorRunIDs :many
SELECT DISTINCT last_run_id::uuid FROM dw_etl_incremental_cursors WHERE job_id = @job_id AND last_run_id IS NOT NULL;

-- name: DeleteRuns :execrows
DELETE FROM dw_etl_runs WHERE run_id = ANY(@run_ids::uuid[]) AND status NOT IN ('PENDING', 'RUNNING');

-- name: RetentionPreview :one
SELECT count(*)::bigint AS runs, coalesce(sum(r.item_count), 0)::bigint AS items,
  coalesce(sum(r.attempt_count), 0)::bigint AS attempts
FROM dw_etl_runs r
WHERE r.job_id = @job_id AND r.started_at < @cutoff
  AND r.status NOT IN ('PENDING', 'RUNNING') AND coalesce(r.ended_at, r.started_at) < @cutoff
  AND r.run_id <> coalesce((SELECT x.run_id FROM dw_etl_runs x WHERE x.job_id = @job_id
                            ORDER BY x.started_at DESC, x.run_id DESC LIMIT 1), '00000000-0000-0000-0000-000000000000')
  AND NOT (r.run_id = ANY(@keep::uuid[]));

-- WatchOpenRuns adds every open run to the watch (dw_etl_runs_status_started_idx), and re-opens
-- the watch of a run that ended and was re-run since.
-- name: WatchOpenRuns :execrows
INSERT INTO dw_etl_run_watch (run_id, job_id, started_at, seen_at)
SELECT r.run_id, r.job_id, r.started_at, r.started_at FROM unnest(ARRAY['PENDING', 'RUNNING']::text[]) AS s(status)
CROSS JOIN LATERAL (SELECT x.run_id, x.job_id, x.started_at FROM dw_etl_runs x WHERE x.status = s.status) r
ON CONFLICT (run_id) DO UPDATE SET ended_at = NULL, status = NULL, overdue_at = NULL, seen_at = now()
WHERE dw_etl_run_watch.ended_at IS NOT NULL;

-- WatchRecentRuns adds runs that started since @since and already ended: they opened and closed
-- between two passes.
-- name: WatchRecentRuns :execrows
INSERT INTO dw_etl_run_watch (run_id, job_id, started_at, seen_at)
SELECT r.run_id, r.job_id, r.started_at, r.started_at
FROM unnest(ARRAY['SUCCESS', 'PARTIAL_SUCCESS', 'FAILED', 'SKIPPED', 'CANCELLED']::text[]) AS s(status)
CROSS JOIN LATERAL (SELECT x.run_id, x.job_id, x.started_at FROM dw_etl_runs x
                    WHERE x.status = s.status AND x.started_at >= @since) r
ON CONFLICT (run_id) DO NOTHING;

-- name: WatchedRuns :many
SELECT w.run_id, w.job_id, w.started_at, w.seen_at AS opened_at, w.overdue_at, r.status, r.ended_at, r.duration_ms,
  r.dry_run, r.trigger, r.item_count, r.items_succeeded, r.items_failed, r.items_cancelled,
  r.error_category, r.error_message, j.alert_on, j.expected_duration_ms
FROM dw_etl_run_watch w
JOIN dw_etl_runs r ON r.run_id = w.run_id
JOIN dw_etl_jobs j ON j.job_id = r.job_id
WHERE w.ended_at IS NULL
ORDER BY w.started_at
LIMIT @batch_size::int;

-- name: MarkWatchEnded :execrows
UPDATE dw_etl_run_watch SET ended_at = @ended_at, status = @status WHERE run_id = @run_id AND ended_at IS NULL;

-- name: MarkWatchOverdue :execrows
UPDATE dw_etl_run_watch SET overdue_at = now() WHERE run_id = @run_id AND overdue_at IS NULL;

-- name: ForgetWatched :execrows
DELETE FROM dw_etl_run_watch WHERE ended_at IS NOT NULL AND started_at < @before;

-- name: InsertDelivery :exec
INSERT INTO dw_etl_alert_deliveries (delivery_id, run_id, job_id, event, occurred_at, destination, payload)
VALUES (@delivery_id, @run_id, @job_id, @event, @occurred_at, @destination, @payload)
ON CONFLICT (run_id, event, occurred_at, destination) DO NOTHING;

-- name: DueDeliveries :many
SELECT * FROM dw_etl_alert_deliveries
WHERE status = 'PENDING' AND next_attempt_at <= now()
ORDER BY next_attempt_at
LIMIT @batch_size::int;

-- name: InsertAlertAttempt :exec
INSERT INTO dw_etl_alert_attempts (delivery_id, attempt, status_code, error, duration_ms)
VALUES (@delivery_id, @attempt, @status_code, @error, @duration_ms);

-- name: FinishDeliveryAttempt :exec
UPDATE dw_etl_alert_deliveries SET attempts = @attempts, status = @status, last_status_code = @status_code,
  last_error = @error, next_attempt_at = now() + make_interval(secs => @backoff_seconds::float8),
  delivered_at = CASE WHEN @status = 'DELIVERED' THEN now() END
WHERE delivery_id = @delivery_id;

-- name: RunDeliveries :many
SELECT * FROM dw_etl_alert_deliveries WHERE run_id = @run_id ORDER BY created_at, destination;

-- name: DeliveryAttempts :many
SELECT * FROM dw_etl_alert_attempts WHERE delivery_id = @delivery_id ORDER BY attempt;

-- name: UpsertBackfill :one
INSERT INTO dw_etl_backfills (backfill_id, job_id, spec_hash, window_from, window_to, step_ms, params, dry_run,
  concurrency, created_by)
VALUES (@backfill_id, @job_id, @spec_hash, @window_from, @window_to, @step_ms, @params, @dry_run, @concurrency, @created_by)
ON CONFLICT (job_id, spec_hash) DO UPDATE SET concurrency = excluded.concurrency, finished_at = NULL
RETURNING *;

-- name: GetBackfill :one
SELECT * FROM dw_etl_backfills WHERE backfill_id = @backfill_id;

-- name: FinishBackfill :exec
UPDATE dw_etl_backfills SET finished_at = now() WHERE backfill_id = @backfill_id;

-- name: GetControlState :one
SELECT value, updated_at FROM dw_etl_control_state WHERE name = @name;

-- name: SetControlState :exec
INSERT INTO dw_etl_control_state (name, value, updated_at) VALUES (@name, @value, now())
ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now();

-- ResolveParamHash finds the param hashes of a run's items that start with @prefix, on
-- dw_etl_run_items_run_param_hash_key (hex sorts the same in every collation).
-- name: ResolveParamHash :many
SELECT param_hash FROM dw_etl_run_items
WHERE run_id = @run_id AND param_hash >= @prefix::text AND param_hash < (@prefix::text || 'g')
  AND left(param_hash, length(@prefix::text)) = @prefix::text
ORDER BY param_hash
LIMIT 2;

-- name: FindBackfill :one
SELECT * FROM dw_etl_backfills WHERE job_id = @job_id AND spec_hash = @spec_hash;
