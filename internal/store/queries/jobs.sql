-- name: UpsertJob :one
INSERT INTO dw_etl_jobs (job_id, kind, description, supports_params, supports_incremental, strategy,
  cursor_policy, config, param_source, schedule, overlap_policy, queue, max_attempts, timeout_ms,
  run_timeout_ms, retention_ms, enabled, max_running_items)
VALUES (@job_id, @kind, @description, @supports_params, @supports_incremental, @strategy,
  @cursor_policy, @config, @param_source, @schedule, @overlap_policy, @queue, @max_attempts, @timeout_ms,
  @run_timeout_ms, @retention_ms, @enabled, @max_running_items)
ON CONFLICT (job_id) DO UPDATE SET kind = excluded.kind, description = excluded.description,
  supports_params = excluded.supports_params, supports_incremental = excluded.supports_incremental,
  strategy = excluded.strategy, cursor_policy = excluded.cursor_policy, config = excluded.config,
  param_source = excluded.param_source, schedule = excluded.schedule,
  overlap_policy = excluded.overlap_policy, queue = excluded.queue, max_attempts = excluded.max_attempts,
  timeout_ms = excluded.timeout_ms, run_timeout_ms = excluded.run_timeout_ms,
  retention_ms = excluded.retention_ms, enabled = excluded.enabled,
  max_running_items = excluded.max_running_items, updated_at = now()
RETURNING (xmax = 0)::boolean AS inserted;

-- name: GetJob :one
SELECT * FROM dw_etl_jobs WHERE job_id = @job_id;

-- name: ListJobs :many
-- last_status is '' for a job without runs: the runstate.Status override of dw_etl_runs.status
-- ignores the LEFT JOIN's nullability, so a NULL could not be scanned (store makes '' nil).
SELECT sqlc.embed(j), r.run_id AS last_run_id, coalesce(r.status, '') AS last_status,
  r.started_at AS last_started_at
FROM dw_etl_jobs j
LEFT JOIN dw_etl_runs r ON r.run_id = (
  SELECT x.run_id FROM dw_etl_runs x WHERE x.job_id = j.job_id ORDER BY x.started_at DESC LIMIT 1
)
WHERE j.job_id > @after::text
ORDER BY j.job_id
LIMIT @page_size::int;

-- name: ListScheduledJobs :many
SELECT * FROM dw_etl_jobs WHERE enabled AND schedule IS NOT NULL ORDER BY job_id;

-- name: RunLimit :one
-- What a worker needs before it claims an item of the run: the job and its fleet-wide limit.
SELECT r.job_id, j.max_running_items
FROM dw_etl_runs r JOIN dw_etl_jobs j ON j.job_id = r.job_id
WHERE r.run_id = @run_id;

-- name: UpsertSource :exec
INSERT INTO dw_etl_sources (source, rate, burst, period_ms)
VALUES (@source, @rate, @burst, @period_ms)
ON CONFLICT (source) DO UPDATE SET rate = excluded.rate, burst = excluded.burst,
  period_ms = excluded.period_ms, updated_at = now()
WHERE (dw_etl_sources.rate, dw_etl_sources.burst, dw_etl_sources.period_ms)
  IS DISTINCT FROM (excluded.rate, excluded.burst, excluded.period_ms);

-- name: GetSource :one
SELECT * FROM dw_etl_sources WHERE source = @source;

-- name: DeleteSourcesNotIn :many
DELETE FROM dw_etl_sources WHERE NOT (source = ANY(@keep::text[])) RETURNING source;
