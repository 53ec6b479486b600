# The desired state of etlexec's Postgres schema. This file is the one source of truth:
# `make migrate-diff NAME=x` plans the next file in migrations/ from it, and a test fails when
# the migration directory and this file disagree. Partition children of dw_etl_run_logs are not
# expressible here; `enqueuer logs-maintain` creates and drops them.

schema "public" {}

table "dw_etl_jobs" {
  schema  = schema.public
  comment = "Job definitions: what a run of each job does and how it is delivered."
  column "job_id" {
    type = text
  }
  column "kind" {
    type    = text
    comment = "Name of the registered handler that runs each item."
  }
  column "description" {
    type    = text
    default = ""
  }
  column "supports_params" {
    type    = boolean
    default = false
  }
  column "supports_incremental" {
    type    = boolean
    default = false
  }
  column "strategy" {
    type    = text
    default = "none"
  }
  column "cursor_policy" {
    type    = text
    default = "run"
    comment = "run: cursors move only when the whole run succeeds; item: per succeeded item."
  }
  column "config" {
    type    = jsonb
    default = sql("'{}'::jsonb")
  }
  column "param_source" {
    type = jsonb
    null = true
  }
  column "schedule" {
    type = text
    null = true
  }
  column "overlap_policy" {
    type    = text
    default = "skip"
  }
  column "queue" {
    type    = text
    default = "etl"
  }
  column "max_attempts" {
    type    = integer
    default = 3
  }
  column "timeout_ms" {
    type    = bigint
    default = 600000
  }
  column "run_timeout_ms" {
    type = bigint
    null = true
  }
  column "retention_ms" {
    type    = bigint
    default = 3600000
    comment = "How long asynq keeps a completed task visible (asynq.Retention)."
  }
  column "enabled" {
    type    = boolean
    default = true
  }
  column "paused" {
    type    = boolean
    default = false
    comment = "A paused job starts no new run: its schedule, triggers, reruns and backfills are refused."
  }
  column "paused_at" {
    type = timestamptz
    null = true
  }
  column "paused_by" {
    type = text
    null = true
  }
  column "pause_reason" {
    type = text
    null = true
  }
  column "resumed_at" {
    type    = timestamptz
    null    = true
    comment = "When the job was last resumed: cron ticks before it are not fired (not caught up)."
  }
  column "history_retention_ms" {
    type    = bigint
    null    = true
    comment = "How long finished runs (items, attempts) are kept; NULL means the global retention."
  }
  column "alert_on" {
    type    = sql("text[]")
    null    = true
    comment = "Run end statuses that notify; NULL means the alerter's default, empty means none."
  }
  column "expected_duration_ms" {
    type    = bigint
    null    = true
    comment = "An open run older than this notifies once (run_overdue)."
  }
  column "catchup_policy" {
    type    = text
    default = "once"
    comment = "Missed cron ticks: skip (none), once (only the latest), each (every one, at most catchup_limit)."
  }
  column "catchup_limit" {
    type    = integer
    default = 10
  }
  column "created_at" {
    type    = timestamptz
    default = sql("now()")
  }
  column "updated_at" {
    type    = timestamptz
    default = sql("now()")
  }
  primary_key {
    columns = [column.job_id]
  }
  check "dw_etl_jobs_catchup_policy_check" {
    expr = "catchup_policy IN ('skip', 'once', 'each')"
  }
  check "dw_etl_jobs_catchup_limit_check" {
    expr = "catchup_limit >= 1"
  }
  check "dw_etl_jobs_history_retention_ms_check" {
    expr = "history_retention_ms > 0"
  }
  check "dw_etl_jobs_expected_duration_ms_check" {
    expr = "expected_duration_ms > 0"
  }
  check "dw_etl_jobs_strategy_check" {
    expr = "strategy IN ('none', 'modified_date', 'last_run')"
  }
  check "dw_etl_jobs_cursor_policy_check" {
    expr = "cursor_policy IN ('run', 'item')"
  }
  check "dw_etl_jobs_overlap_policy_check" {
    expr = "overlap_policy IN ('skip', 'queue', 'allow')"
  }
  check "dw_etl_jobs_max_attempts_check" {
    expr = "max_attempts >= 1"
  }
  check "dw_etl_jobs_timeout_ms_check" {
    expr = "timeout_ms > 0"
  }
  check "dw_etl_jobs_queue_check" {
    expr = "queue <> '' AND strpos(queue, '{') = 0 AND strpos(queue, '}') = 0"
  }
}

table "dw_etl_runs" {
  schema  = schema.public
  comment = "One row per run of a job: lifecycle, totals and dry-run intent."
  column "run_id" {
    type = uuid
  }
  column "job_id" {
    type = text
  }
  column "status" {
    type    = text
    default = "PENDING"
  }
  column "error_category" {
    type    = text
    default = "NONE"
  }
  column "error_message" {
    type = text
    null = true
  }
  column "dry_run" {
    type    = boolean
    default = false
  }
  column "trigger" {
    type    = text
    default = "manual"
  }
  column "params" {
    type    = jsonb
    default = sql("'{}'::jsonb")
  }
  column "logical_start" {
    type    = timestamptz
    null    = true
    comment = "The window end of a last_run job: the run's logical start."
  }
  column "scheduled_for" {
    type    = timestamptz
    null    = true
    comment = "The cron tick a scheduled run belongs to; unique per job."
  }
  column "exclusive" {
    type    = boolean
    default = true
    comment = "Holds the job's single active slot (overlap policies skip and queue)."
  }
  column "created_at" {
    type    = timestamptz
    default = sql("now()")
  }
  column "started_at" {
    type    = timestamptz
    default = sql("now()")
  }
  column "enqueued_at" {
    type    = timestamptz
    null    = true
    comment = "Set once every item's task was handed to Redis."
  }
  column "ended_at" {
    type = timestamptz
    null = true
  }
  column "duration_ms" {
    type = bigint
    null = true
  }
  column "attempt_count" {
    type    = integer
    default = 0
  }
  column "item_count" {
    type    = integer
    default = 0
  }
  column "items_deduplicated" {
    type    = integer
    default = 0
  }
  column "items_succeeded" {
    type    = integer
    default = 0
  }
  column "items_failed" {
    type    = integer
    default = 0
  }
  column "items_skipped" {
    type    = integer
    default = 0
  }
  column "items_cancelled" {
    type    = integer
    default = 0
  }
  column "records_read" {
    type    = bigint
    default = 0
  }
  column "records_written" {
    type    = bigint
    default = 0
  }
  column "page_count" {
    type    = bigint
    default = 0
  }
  column "metrics" {
    type    = jsonb
    default = sql("'{}'::jsonb")
  }
  column "cancel_requested_at" {
    type = timestamptz
    null = true
  }
  column "cancelled_by" {
    type = text
    null = true
  }
  column "cancel_reason" {
    type = text
    null = true
  }
  column "updated_at" {
    type    = timestamptz
    default = sql("now()")
  }
  primary_key {
    columns = [column.run_id]
  }
  foreign_key "dw_etl_runs_job_id_fkey" {
    columns     = [column.job_id]
    ref_columns = [table.dw_etl_jobs.column.job_id]
    on_update   = NO_ACTION
    on_delete   = RESTRICT
  }
  index "dw_etl_runs_job_started_idx" {
    on {
      column = column.job_id
    }
    on {
      desc   = true
      column = column.started_at
    }
  }
  index "dw_etl_runs_status_started_idx" {
    on {
      column = column.status
    }
    on {
      desc   = true
      column = column.started_at
    }
  }
  index "dw_etl_runs_failed_started_idx" {
    on {
      desc   = true
      column = column.started_at
    }
    where = "status = 'FAILED'"
  }
  index "dw_etl_runs_one_active_idx" {
    unique  = true
    columns = [column.job_id]
    where   = "exclusive AND status IN ('PENDING', 'RUNNING')"
  }
  index "dw_etl_runs_schedule_tick_idx" {
    unique  = true
    columns = [column.job_id, column.scheduled_for]
    where   = "scheduled_for IS NOT NULL"
  }
  check "dw_etl_runs_status_check" {
    expr = "status IN ('PENDING', 'RUNNING', 'SUCCESS', 'PARTIAL_SUCCESS', 'FAILED', 'SKIPPED', 'CANCELLED')"
  }
  check "dw_etl_runs_error_category_check" {
    expr = "error_category IN ('API', 'DB', 'DATA', 'SYSTEM', 'NONE')"
  }
  check "dw_etl_runs_trigger_check" {
    expr = "trigger IN ('manual', 'schedule', 'rerun', 'legacy')"
  }
}

table "dw_etl_run_progress" {
  schema  = schema.public
  comment = "Sharded terminal-item counters: a run learns its last item finished without a hot row or a scan."
  column "run_id" {
    type = uuid
  }
  column "shard" {
    type = smallint
  }
  column "items" {
    type    = integer
    comment = "Items of the run that hash to this shard."
  }
  column "terminal" {
    type    = integer
    default = 0
  }
  primary_key {
    columns = [column.run_id, column.shard]
  }
  foreign_key "dw_etl_run_progress_run_id_fkey" {
    columns     = [column.run_id]
    ref_columns = [table.dw_etl_runs.column.run_id]
    on_update   = NO_ACTION
    on_delete   = CASCADE
  }
  check "dw_etl_run_progress_terminal_check" {
    expr = "terminal >= 0 AND terminal <= items"
  }
}

table "dw_etl_run_items" {
  schema  = schema.public
  comment = "One row per deduplicated parameter set of a run."
  column "run_id" {
    type = uuid
  }
  column "item_no" {
    type = integer
  }
  column "params" {
    type = jsonb
  }
  column "param_hash" {
    type    = text
    comment = "Hex SHA-256 of the canonical JSON of params."
  }
  column "status" {
    type    = text
    default = "PENDING"
  }
  column "error_category" {
    type    = text
    default = "NONE"
  }
  column "error_message" {
    type = text
    null = true
  }
  column "attempts" {
    type    = integer
    default = 0
  }
  column "generation" {
    type    = integer
    default = 0
    comment = "Bumped by every rerun so the item's task id is new."
  }
  column "attempt_limit" {
    type    = integer
    null    = true
    comment = "Attempts allowed in total; NULL means the job's max_attempts. A rerun grants max_attempts more."
  }
  column "task_id" {
    type = text
  }
  column "current_attempt_id" {
    type    = uuid
    null    = true
    comment = "The attempt holding the claim; a finish from any other attempt is rejected."
  }
  column "heartbeat_at" {
    type = timestamptz
    null = true
  }
  column "started_at" {
    type = timestamptz
    null = true
  }
  column "ended_at" {
    type = timestamptz
    null = true
  }
  column "duration_ms" {
    type = bigint
    null = true
  }
  column "records_read" {
    type    = bigint
    default = 0
  }
  column "records_written" {
    type    = bigint
    default = 0
  }
  column "page_count" {
    type    = bigint
    default = 0
  }
  column "cursor_start" {
    type = timestamptz
    null = true
  }
  column "cursor_end" {
    type = timestamptz
    null = true
  }
  column "cursor_note" {
    type = text
    null = true
  }
  primary_key {
    columns = [column.run_id, column.item_no]
  }
  foreign_key "dw_etl_run_items_run_id_fkey" {
    columns     = [column.run_id]
    ref_columns = [table.dw_etl_runs.column.run_id]
    on_update   = NO_ACTION
    on_delete   = CASCADE
  }
  index "dw_etl_run_items_run_param_hash_key" {
    unique  = true
    columns = [column.run_id, column.param_hash]
  }
  index "dw_etl_run_items_status_idx" {
    columns = [column.status]
  }
  index "dw_etl_run_items_run_ended_idx" {
    on {
      column = column.run_id
    }
    on {
      desc   = true
      column = column.ended_at
    }
  }
  check "dw_etl_run_items_status_check" {
    expr = "status IN ('PENDING', 'RUNNING', 'SUCCESS', 'PARTIAL_SUCCESS', 'FAILED', 'SKIPPED', 'CANCELLED')"
  }
  check "dw_etl_run_items_error_category_check" {
    expr = "error_category IN ('API', 'DB', 'DATA', 'SYSTEM', 'NONE')"
  }
  check "dw_etl_run_items_item_no_check" {
    expr = "item_no >= 1"
  }
}

table "dw_etl_run_attempts" {
  schema  = schema.public
  comment = "One row per execution of an item: retries are visible in attempt_no order."
  column "attempt_id" {
    type = uuid
  }
  column "run_id" {
    type = uuid
  }
  column "attempt_no" {
    type    = bigint
    comment = "Drawn from a sequence: increases within a run in the order attempts start, with gaps."
    identity {
      generated = ALWAYS
    }
  }
  column "item_no" {
    type = integer
  }
  column "item_attempt" {
    type = integer
  }
  column "status" {
    type    = text
    default = "RUNNING"
  }
  column "error_category" {
    type    = text
    default = "NONE"
  }
  column "error_message" {
    type = text
    null = true
  }
  column "error_detail" {
    type = jsonb
    null = true
  }
  column "backoff_ms" {
    type = bigint
    null = true
  }
  column "next_retry_at" {
    type = timestamptz
    null = true
  }
  column "scheduled_at" {
    type = timestamptz
    null = true
  }
  column "started_at" {
    type    = timestamptz
    default = sql("now()")
  }
  column "heartbeat_at" {
    type    = timestamptz
    default = sql("now()")
  }
  column "ended_at" {
    type = timestamptz
    null = true
  }
  column "duration_ms" {
    type = bigint
    null = true
  }
  column "records_read" {
    type    = bigint
    default = 0
  }
  column "records_written" {
    type    = bigint
    default = 0
  }
  column "page_count" {
    type    = bigint
    default = 0
  }
  column "worker_id" {
    type = text
    null = true
  }
  primary_key {
    columns = [column.attempt_id]
  }
  foreign_key "dw_etl_run_attempts_run_id_fkey" {
    columns     = [column.run_id]
    ref_columns = [table.dw_etl_runs.column.run_id]
    on_update   = NO_ACTION
    on_delete   = CASCADE
  }
  foreign_key "dw_etl_run_attempts_item_fkey" {
    columns     = [column.run_id, column.item_no]
    ref_columns = [table.dw_etl_run_items.column.run_id, table.dw_etl_run_items.column.item_no]
    on_update   = NO_ACTION
    on_delete   = CASCADE
  }
  index "dw_etl_run_attempts_run_attempt_no_key" {
    unique  = true
    columns = [column.run_id, column.attempt_no]
  }
  index "dw_etl_run_attempts_item_attempt_key" {
    unique  = true
    columns = [column.run_id, column.item_no, column.item_attempt]
  }
  index "dw_etl_run_attempts_run_ended_idx" {
    on {
      column = column.run_id
    }
    on {
      desc   = true
      column = column.ended_at
    }
  }
  index "dw_etl_run_attempts_open_idx" {
    columns = [column.heartbeat_at]
    where   = "status = 'RUNNING'"
  }
  check "dw_etl_run_attempts_status_check" {
    expr = "status IN ('PENDING', 'RUNNING', 'SUCCESS', 'PARTIAL_SUCCESS', 'FAILED', 'SKIPPED', 'CANCELLED')"
  }
  check "dw_etl_run_attempts_error_category_check" {
    expr = "error_category IN ('API', 'DB', 'DATA', 'SYSTEM', 'NONE')"
  }
  check "dw_etl_run_attempts_item_attempt_check" {
    expr = "item_attempt >= 1"
  }
}

table "dw_etl_incremental_cursors" {
  schema  = schema.public
  comment = "Where each (job, parameter set) resumes its incremental load."
  column "job_id" {
    type = text
  }
  column "param_hash" {
    type = text
  }
  column "params" {
    type = jsonb
  }
  column "strategy" {
    type = text
  }
  column "cursor_value" {
    type = timestamptz
    null = true
  }
  column "cursor_meta" {
    type    = jsonb
    default = sql("'{}'::jsonb")
  }
  column "last_run_id" {
    type = uuid
    null = true
  }
  column "updated_at" {
    type    = timestamptz
    default = sql("now()")
  }
  primary_key {
    columns = [column.job_id, column.param_hash]
  }
  foreign_key "dw_etl_incremental_cursors_job_id_fkey" {
    columns     = [column.job_id]
    ref_columns = [table.dw_etl_jobs.column.job_id]
    on_update   = NO_ACTION
    on_delete   = CASCADE
  }
  index "dw_etl_incremental_cursors_job_value_idx" {
    on {
      column = column.job_id
    }
    on {
      desc   = true
      column = column.cursor_value
    }
  }
  index "dw_etl_incremental_cursors_params_idx" {
    type = GIN
    on {
      column = column.params
      ops    = jsonb_path_ops
    }
  }
  check "dw_etl_incremental_cursors_strategy_check" {
    expr = "strategy IN ('modified_date', 'last_run')"
  }
}

table "dw_etl_run_logs" {
  schema  = schema.public
  comment = "Structured log lines of runs, range-partitioned by month on ts for retention by DROP."
  column "log_id" {
    type = bigint
    identity {
      generated = ALWAYS
    }
  }
  column "ts" {
    type    = timestamptz
    default = sql("now()")
  }
  column "run_id" {
    type = uuid
  }
  column "attempt_id" {
    type = uuid
    null = true
  }
  column "job_id" {
    type = text
  }
  column "item_no" {
    type = integer
    null = true
  }
  column "level" {
    type = text
  }
  column "message" {
    type = text
  }
  column "fields" {
    type    = jsonb
    default = sql("'{}'::jsonb")
  }
  primary_key {
    columns = [column.log_id, column.ts]
  }
  foreign_key "dw_etl_run_logs_run_id_fkey" {
    columns     = [column.run_id]
    ref_columns = [table.dw_etl_runs.column.run_id]
    on_update   = NO_ACTION
    on_delete   = CASCADE
  }
  foreign_key "dw_etl_run_logs_attempt_id_fkey" {
    columns     = [column.attempt_id]
    ref_columns = [table.dw_etl_run_attempts.column.attempt_id]
    on_update   = NO_ACTION
    on_delete   = CASCADE
  }
  index "dw_etl_run_logs_run_ts_idx" {
    columns = [column.run_id, column.ts]
  }
  index "dw_etl_run_logs_level_ts_idx" {
    columns = [column.level, column.ts]
  }
  index "dw_etl_run_logs_fields_idx" {
    type = GIN
    on {
      column = column.fields
      ops    = jsonb_path_ops
    }
  }
  check "dw_etl_run_logs_level_check" {
    expr = "level IN ('trace', 'debug', 'info', 'warn', 'error', 'fatal', 'panic')"
  }
  partition {
    type    = RANGE
    columns = [column.ts]
  }
}

table "dw_etl_idempotency_keys" {
  schema  = schema.public
  comment = "Idempotency-Key of a trigger: a retried request returns the run the first one created."
  column "job_id" {
    type = text
  }
  column "key" {
    type = text
  }
  column "run_id" {
    type = uuid
  }
  column "request_hash" {
    type    = text
    comment = "SHA-256 of what was asked (params, dry run): the same key with another request is refused."
  }
  column "created_at" {
    type    = timestamptz
    default = sql("now()")
  }
  primary_key {
    columns = [column.job_id, column.key]
  }
  foreign_key "dw_etl_idempotency_keys_job_id_fkey" {
    columns     = [column.job_id]
    ref_columns = [table.dw_etl_jobs.column.job_id]
    on_update   = NO_ACTION
    on_delete   = CASCADE
  }
  foreign_key "dw_etl_idempotency_keys_run_id_fkey" {
    columns     = [column.run_id]
    ref_columns = [table.dw_etl_runs.column.run_id]
    on_update   = NO_ACTION
    on_delete   = CASCADE
  }
  index "dw_etl_idempotency_keys_run_idx" {
    columns = [column.run_id]
  }
  check "dw_etl_idempotency_keys_key_check" {
    expr = "length(key) BETWEEN 1 AND 255"
  }
}

table "dw_etl_backfills" {
  schema  = schema.public
  comment = "A backfill of a last_run job: one run per window from window_from to window_to by step."
  column "backfill_id" {
    type = uuid
  }
  column "job_id" {
    type = text
  }
  column "spec_hash" {
    type    = text
    comment = "SHA-256 of the job, bounds, step, params and dry run: the same command resumes the same backfill."
  }
  column "window_from" {
    type = timestamptz
  }
  column "window_to" {
    type = timestamptz
  }
  column "step_ms" {
    type = bigint
  }
  column "params" {
    type    = jsonb
    comment = "The param sets every window's run gets (a JSON array)."
  }
  column "dry_run" {
    type    = boolean
    default = false
  }
  column "concurrency" {
    type    = integer
    default = 1
  }
  column "created_by" {
    type = text
  }
  column "created_at" {
    type    = timestamptz
    default = sql("now()")
  }
  column "finished_at" {
    type = timestamptz
    null = true
  }
  primary_key {
    columns = [column.backfill_id]
  }
  foreign_key "dw_etl_backfills_job_id_fkey" {
    columns     = [column.job_id]
    ref_columns = [table.dw_etl_jobs.column.job_id]
    on_update   = NO_ACTION
    on_delete   = CASCADE
  }
  index "dw_etl_backfills_spec_key" {
    unique  = true
    columns = [column.job_id, column.spec_hash]
  }
  check "dw_etl_backfills_window_check" {
    expr = "window_from < window_to"
  }
  check "dw_etl_backfills_step_ms_check" {
    expr = "step_ms > 0"
  }
  check "dw_etl_backfills_concurrency_check" {
    expr = "concurrency >= 1"
  }
}

table "dw_etl_run_watch" {
  schema  = schema.public
  comment = "The alerter's view of runs: each run end (and overdue run) is noticed exactly once."
  column "run_id" {
    type = uuid
  }
  column "job_id" {
    type = text
  }
  column "started_at" {
    type = timestamptz
  }
  column "ended_at" {
    type    = timestamptz
    null    = true
    comment = "The end the alerter handled; NULL while the run is open (a rerun clears it)."
  }
  column "status" {
    type = text
    null = true
  }
  column "overdue_at" {
    type    = timestamptz
    null    = true
    comment = "When the run_overdue notice was recorded for this opening."
  }
  column "seen_at" {
    type    = timestamptz
    default = sql("now()")
  }
  primary_key {
    columns = [column.run_id]
  }
  foreign_key "dw_etl_run_watch_run_id_fkey" {
    columns     = [column.run_id]
    ref_columns = [table.dw_etl_runs.column.run_id]
    on_update   = NO_ACTION
    on_delete   = CASCADE
  }
  index "dw_etl_run_watch_open_idx" {
    columns = [column.started_at]
    where   = "ended_at IS NULL"
  }
}

table "dw_etl_alert_deliveries" {
  schema  = schema.public
  comment = "One notification of a run event to one destination, retried with backoff until delivered or given up."
  column "delivery_id" {
    type = uuid
  }
  column "run_id" {
    type = uuid
  }
  column "job_id" {
    type = text
  }
  column "event" {
    type = text
  }
  column "occurred_at" {
    type    = timestamptz
    comment = "The run's end (run_ended) or when it was found overdue (run_overdue)."
  }
  column "destination" {
    type = text
  }
  column "status" {
    type    = text
    default = "PENDING"
  }
  column "attempts" {
    type    = integer
    default = 0
  }
  column "next_attempt_at" {
    type    = timestamptz
    default = sql("now()")
  }
  column "last_status_code" {
    type = integer
    null = true
  }
  column "last_error" {
    type = text
    null = true
  }
  column "payload" {
    type = jsonb
  }
  column "created_at" {
    type    = timestamptz
    default = sql("now()")
  }
  column "delivered_at" {
    type = timestamptz
    null = true
  }
  primary_key {
    columns = [column.delivery_id]
  }
  foreign_key "dw_etl_alert_deliveries_run_id_fkey" {
    columns     = [column.run_id]
    ref_columns = [table.dw_etl_runs.column.run_id]
    on_update   = NO_ACTION
    on_delete   = CASCADE
  }
  index "dw_etl_alert_deliveries_event_key" {
    unique  = true
    columns = [column.run_id, column.event, column.occurred_at, column.destination]
  }
  index "dw_etl_alert_deliveries_due_idx" {
    columns = [column.next_attempt_at]
    where   = "status = 'PENDING'"
  }
  check "dw_etl_alert_deliveries_event_check" {
    expr = "event IN ('run_ended', 'run_overdue')"
  }
  check "dw_etl_alert_deliveries_status_check" {
    expr = "status IN ('PENDING', 'DELIVERED', 'FAILED')"
  }
}

table "dw_etl_alert_attempts" {
  schema  = schema.public
  comment = "Every HTTP attempt of an alert delivery, with its outcome."
  column "delivery_id" {
    type = uuid
  }
  column "attempt" {
    type = integer
  }
  column "at" {
    type    = timestamptz
    default = sql("now()")
  }
  column "status_code" {
    type = integer
    null = true
  }
  column "error" {
    type = text
    null = true
  }
  column "duration_ms" {
    type = bigint
  }
  primary_key {
    columns = [column.delivery_id, column.attempt]
  }
  foreign_key "dw_etl_alert_attempts_delivery_id_fkey" {
    columns     = [column.delivery_id]
    ref_columns = [table.dw_etl_alert_deliveries.column.delivery_id]
    on_update   = NO_ACTION
    on_delete   = CASCADE
  }
}

table "dw_etl_control_state" {
  schema  = schema.public
  comment = "Small named state of the control loop (e.g. when the last retention pass finished)."
  column "name" {
    type = text
  }
  column "value" {
    type    = jsonb
    default = sql("'{}'::jsonb")
  }
  column "updated_at" {
    type    = timestamptz
    default = sql("now()")
  }
  primary_key {
    columns = [column.name]
  }
}
