-- name: UpsertJob :one
INSERT INTO dw_etl_jobs (job_id, kind, description, supports_params, supports_incremental, strategy,
  cursor_policy, config, param_source, schedule, overlap_policy, queue, max_attempts, timeout_ms,
  run_timeout_ms, retention_ms, enabled)
VALUES (@job_id, @kind, @description, @supports_params, @supports_incremental, @strategy,
  @cursor_policy, @config, @param_source, @schedule, @overlap_policy, @queue, @max_attempts, @timeout_ms,
  @run_timeout_ms, @retention_ms, @enabled)
ON CONFLICT (job_id) DO UPDATE SET kind = excluded.kind, description = excluded.description,
  supports_params = excluded.supports_params, supports_incremental = excluded.supports_incremental,
  strategy = excluded.strategy, cursor_policy = excluded.cursor_policy, config = excluded.config,
  param_source = excluded.param_source, schedule = excluded.schedule,
  overlap_policy = excluded.overlap_policy, queue = excluded.queue, max_attempts = excluded.max_attempts,
  timeout_ms = excluded.timeout_ms, run_timeout_ms = excluded.run_timeout_ms,
  retention_ms = excluded.retention_ms, enabled = excluded.enabled, updated_at = now()
RETURNING (xmax = 0)::boolean AS inserted;

-- name: GetJob :one
SELECT * FROM dw_etl_jobs WHERE job_id = @job_id;

-- name: ListJobs :many
SELECT j.*, r.run_id AS last_run_id, r.status AS last_status, r.started_at AS last_started_at
FROM dw_etl_jobs j
LEFT JOIN dw_etl_runs r ON r.run_id = (
  SELECT x.run_id FROM dw_etl_runs x WHERE x.job_id = j.job_id ORDER BY x.started_at DESC LIMIT 1
)
WHERE j.job_id > @after::text
ORDER BY j.job_id
LIMIT @page_size::int;

-- name: ListScheduledJobs :many
SELECT * FROM dw_etl_jobs WHERE enabled AND schedule IS NOT NULL ORDER BY job_id;
