-- History: read-only queries behind `enqueuer runs|items|attempts|cursors` and /api/v1. Every
-- statement here must stay an index scan under a GENERIC plan too (pgx prepares statements and
-- Postgres switches to a generic plan after five executions), so optional bounds are written as
-- coalesce(narg, ±infinity) — still an index condition with the parameter unknown — and never as
-- `(narg IS NULL OR col >= narg)`, which a generic plan can only apply as a filter. Optional
-- equality filters that do not drive the index (status, dry_run, category) use the IS NULL /
-- empty-array form (a nil Go slice arrives as NULL, hence coalesce(cardinality(..), 0)): they
-- only filter rows the index already narrowed. Log search has too many
-- optional predicates for one static statement and is built in history.go, as is the attempt
-- summary (sqlc cannot type min/max of a timestamp column as nullable).

-- HistoryJobRuns pages one job's runs on dw_etl_runs_job_started_idx (job_id, started_at DESC).
-- The index orders by started_at alone, so the inner query asks for exactly that order — a
-- Limit straight over the index scan, which stops after a page whatever the job's history — and
-- WITH TIES keeps every run sharing the last started_at, so the outer sort can break ties by
-- run_id correctly. (Ordering the scan by started_at, run_id directly leaves the choice between
-- an incremental and a full sort of the job's whole history to the row estimate, which a
-- generic plan gets wrong.)
-- name: HistoryJobRuns :many
SELECT r.* FROM (
  SELECT * FROM dw_etl_runs
  WHERE job_id = @job_id
    AND started_at >= coalesce(sqlc.narg('since')::timestamptz, '-infinity')
    AND started_at < coalesce(sqlc.narg('until')::timestamptz, 'infinity')
    AND started_at <= coalesce(sqlc.narg('after_started_at')::timestamptz, 'infinity')
    AND (sqlc.narg('after_started_at')::timestamptz IS NULL OR started_at < sqlc.narg('after_started_at')::timestamptz
      OR run_id < sqlc.narg('after_run_id')::uuid)
    AND (coalesce(cardinality(@statuses::text[]), 0) = 0 OR status = ANY(@statuses::text[]))
    AND (sqlc.narg('dry_run')::boolean IS NULL OR dry_run = sqlc.narg('dry_run')::boolean)
  ORDER BY started_at DESC
  FETCH FIRST (@row_limit::int) ROWS WITH TIES
) r
ORDER BY r.started_at DESC, r.run_id DESC
LIMIT @row_limit::int;

-- HistoryRecentRuns pages runs across jobs. A btree cannot return several status values in one
-- started_at order, so each wanted status is its own short walk down
-- dw_etl_runs_status_started_idx (status, started_at DESC), limited to a page (with ties, as
-- above), and the pages are merged: at most len(statuses) × row_limit rows are read whatever the
-- table size. Without a status filter the caller passes every status, which keeps the query off
-- a sort of the whole table (there is no index on started_at alone).
-- name: HistoryRecentRuns :many
SELECT r.* FROM unnest(@statuses::text[]) AS s(status)
CROSS JOIN LATERAL (
  SELECT * FROM dw_etl_runs x
  WHERE x.status = s.status
    AND x.started_at >= coalesce(sqlc.narg('since')::timestamptz, '-infinity')
    AND x.started_at < coalesce(sqlc.narg('until')::timestamptz, 'infinity')
    AND x.started_at <= coalesce(sqlc.narg('after_started_at')::timestamptz, 'infinity')
    AND (sqlc.narg('after_started_at')::timestamptz IS NULL OR x.started_at < sqlc.narg('after_started_at')::timestamptz
      OR x.run_id < sqlc.narg('after_run_id')::uuid)
    AND (sqlc.narg('dry_run')::boolean IS NULL OR x.dry_run = sqlc.narg('dry_run')::boolean)
  ORDER BY x.started_at DESC
  FETCH FIRST (@row_limit::int) ROWS WITH TIES
) r
ORDER BY r.started_at DESC, r.run_id DESC
LIMIT @row_limit::int;

-- name: HistoryRunExists :one
SELECT EXISTS (SELECT 1 FROM dw_etl_runs WHERE run_id = @run_id);

-- name: HistoryJobExists :one
SELECT EXISTS (SELECT 1 FROM dw_etl_jobs WHERE job_id = @job_id);

-- HistoryItems pages a run's items in item_no order on the primary key (run_id, item_no).
-- An item's status as shown is its settled status, or RUNNING while an attempt holds it
-- (the claim leaves the status column alone; see items.sql).
-- name: HistoryItems :many
SELECT run_id, item_no, params, param_hash,
  (CASE WHEN status = 'PENDING' AND current_attempt_id IS NOT NULL THEN 'RUNNING' ELSE status END)::text AS status,
  error_category, error_message, attempts, lost_attempts, generation, started_at, ended_at, duration_ms,
  records_read, records_written, page_count, cursor_start, cursor_end, cursor_note, next_retry_at
FROM dw_etl_run_items
WHERE run_id = @run_id AND item_no > @after_item_no
  AND (coalesce(cardinality(@statuses::text[]), 0) = 0
    OR (CASE WHEN status = 'PENDING' AND current_attempt_id IS NOT NULL THEN 'RUNNING' ELSE status END) = ANY(@statuses::text[]))
  AND (coalesce(cardinality(@categories::text[]), 0) = 0 OR error_category = ANY(@categories::text[]))
ORDER BY item_no
LIMIT @row_limit;

-- HistoryItemsByParamHash is HistoryItems for one param set: a point lookup on
-- dw_etl_run_items_run_param_hash_key instead of a walk over the whole run.
-- name: HistoryItemsByParamHash :many
SELECT run_id, item_no, params, param_hash,
  (CASE WHEN status = 'PENDING' AND current_attempt_id IS NOT NULL THEN 'RUNNING' ELSE status END)::text AS status,
  error_category, error_message, attempts, lost_attempts, generation, started_at, ended_at, duration_ms,
  records_read, records_written, page_count, cursor_start, cursor_end, cursor_note, next_retry_at
FROM dw_etl_run_items
WHERE run_id = @run_id AND param_hash = @param_hash AND item_no > @after_item_no
  AND (coalesce(cardinality(@statuses::text[]), 0) = 0
    OR (CASE WHEN status = 'PENDING' AND current_attempt_id IS NOT NULL THEN 'RUNNING' ELSE status END) = ANY(@statuses::text[]))
  AND (coalesce(cardinality(@categories::text[]), 0) = 0 OR error_category = ANY(@categories::text[]))
ORDER BY item_no
LIMIT @row_limit;

-- name: HistoryRunAttempts :many
SELECT * FROM dw_etl_run_attempts
WHERE run_id = @run_id AND attempt_no > @after_attempt_no
ORDER BY attempt_no
LIMIT @row_limit;

-- HistoryItemAttempts reads one item's attempts on dw_etl_run_attempts_item_attempt_key; an
-- item has at most max_attempts rows, so the sort by attempt_no is trivial.
-- name: HistoryItemAttempts :many
SELECT * FROM dw_etl_run_attempts
WHERE run_id = @run_id AND item_no = @item_no AND attempt_no > @after_attempt_no
ORDER BY attempt_no
LIMIT @row_limit;

-- HistoryItemRunningAttempt is the item's running attempt, which lives on the item until its end
-- writes its dw_etl_run_attempts row; no row when none runs (or it is before the page).
-- name: HistoryItemRunningAttempt :one
SELECT i.current_attempt_id::uuid AS attempt_id, i.current_attempt_no::bigint AS attempt_no, i.attempts AS item_attempt,
  i.current_started_at::timestamptz AS started_at, i.records_read, i.records_written, i.page_count,
  i.current_progress AS progress, i.current_progress_at AS progress_at, w.name AS worker_name, i.solo
FROM dw_etl_run_items i
LEFT JOIN dw_etl_workers w ON w.worker_id = i.claim_worker
WHERE i.run_id = @run_id AND i.item_no = @item_no AND i.current_attempt_id IS NOT NULL
  AND i.current_attempt_no > @after_attempt_no::bigint;

-- HistoryRunRunning lists up to row_limit running items of a run, oldest attempt first, with
-- what their workers last reported. It never reads the run's items to find them (no index
-- leads to an item's claim, so that claims stay HOT updates): the live workers
-- (dw_etl_workers_live_idx) say at each heartbeat which items they hold, and only those are
-- read, on the primary key, kept while that worker's attempt still holds them. An item claimed
-- since its worker's last heartbeat shows from the next one.
-- name: HistoryRunRunning :many
SELECT i.item_no, i.param_hash, i.attempts AS item_attempt, i.current_attempt_no::bigint AS attempt_no,
  i.current_started_at::timestamptz AS started_at, w.name AS worker_name, i.records_read, i.records_written,
  i.page_count, i.current_progress AS progress, i.current_progress_at AS progress_at
FROM dw_etl_workers w
JOIN dw_etl_run_items i ON i.run_id = @run_id AND i.item_no = ANY(w.held_item_nos) AND i.claim_worker = w.worker_id
WHERE w.dead_at IS NULL AND @run_id = ANY(w.held_run_ids) AND i.current_attempt_id IS NOT NULL
ORDER BY i.current_started_at, i.item_no
LIMIT @row_limit;

-- HistoryCursors pages a job's cursors in param_hash order on the primary key.
-- name: HistoryCursors :many
SELECT * FROM dw_etl_incremental_cursors
WHERE job_id = @job_id AND param_hash > @after_param_hash
ORDER BY param_hash
LIMIT @row_limit;
