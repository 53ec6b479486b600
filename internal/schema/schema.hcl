# The desired state of etlexec's Postgres schema. This file is the one source of truth:
# `make migrate-diff NAME=x` plans the next file in internal/schema/migrations/ from it, and a
# test fails when the migration directory and this file disagree. Partition children of
# dw_etl_run_logs are not expressible here; `enqueuer logs-maintain` creates and drops them.

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
    default = 0
    comment = "How long asynq keeps a completed task visible (asynq.Retention); 0 keeps none."
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
  column "max_running_items" {
    type    = integer
    default = 0
    comment = "The most items of the job running at once across the fleet (a Redis semaphore); 0 means no limit."
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
  check "dw_etl_jobs_max_running_items_check" {
    expr = "max_running_items >= 0"
  }
}

table "dw_etl_sources" {
  schema  = schema.public
  comment = "Named sources (jobs.yaml sources:): one request rate shared by every worker and job naming the source in its config."
  column "source" {
    type = text
  }
  column "rate" {
    type    = integer
    comment = "Requests allowed per period_ms, steadily (GCRA in Redis)."
  }
  column "burst" {
    type    = integer
    comment = "Requests allowed at once (the bucket's size); the steady rate refills it."
  }
  column "period_ms" {
    type    = bigint
    default = 1000
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
    columns = [column.source]
  }
  check "dw_etl_sources_rate_check" {
    expr = "rate >= 1"
  }
  check "dw_etl_sources_burst_check" {
    expr = "burst >= 1"
  }
  check "dw_etl_sources_period_ms_check" {
    expr = "period_ms >= 1"
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
  column "deadline_at" {
    type    = timestamptz
    null    = true
    comment = "started_at + the job's run_timeout_ms, fixed when the run is created."
  }
  column "fanout_until" {
    type    = timestamptz
    null    = true
    comment = "Lease of the enqueuer fanning the run out; the reconciler takes over only once it lapsed."
  }
  column "records_discarded" {
    type    = bigint
    default = 0
    comment = "Records written by attempts whose target transaction was rolled back."
  }
  column "cursor_note" {
    type    = text
    null    = true
    comment = "What finalisation decided for the run's cursors (advanced, held and why)."
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
  comment = "A run's counters, one row per (run, shard): each worker adds to its own shard, so the summary and finalisation read at most ProgressShards rows and never the items."
  column "run_id" {
    type = uuid
  }
  column "shard" {
    type = smallint
  }
  column "attempts_started" {
    type    = integer
    default = 0
  }
  column "attempts_ended" {
    type    = integer
    default = 0
  }
  column "attempts_lost" {
    type    = integer
    default = 0
    comment = "Attempts closed because their worker died (worker lost)."
  }
  column "retries" {
    type    = integer
    default = 0
    comment = "Attempts that ended with a retry following."
  }
  column "backoff_ms" {
    type    = bigint
    default = 0
  }
  column "max_item_attempt" {
    type    = integer
    default = 0
  }
  column "succeeded" {
    type    = integer
    default = 0
  }
  column "failed" {
    type    = integer
    default = 0
  }
  column "skipped" {
    type    = integer
    default = 0
  }
  column "cancelled" {
    type    = integer
    default = 0
  }
  column "failed_api" {
    type    = integer
    default = 0
  }
  column "failed_db" {
    type    = integer
    default = 0
  }
  column "failed_data" {
    type    = integer
    default = 0
  }
  column "failed_system" {
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
  column "records_discarded" {
    type    = bigint
    default = 0
  }
  column "page_count" {
    type    = bigint
    default = 0
  }
  column "last_ended_at" {
    type = timestamptz
    null = true
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
}

table "dw_etl_run_items" {
  schema  = schema.public
  comment = "One row per deduplicated parameter set of a run; it also holds the running attempt (current_*), whose dw_etl_run_attempts row is written when it ends. The claim changes no indexed column, so it is a HOT update (fillfactor set in migrations/)."
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
    comment = "PENDING until the item settles (SUCCESS, FAILED, CANCELLED, SKIPPED); a PENDING item with current_attempt_id is RUNNING. The claim leaves it alone so that it stays a HOT update."
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
    comment = "Attempts started; the next attempt is attempts + 1."
  }
  column "lost_attempts" {
    type    = integer
    default = 0
    comment = "Attempts closed because their worker died; counted against their own limit, not max_attempts."
  }
  column "solo" {
    type    = boolean
    default = false
    comment = "The next attempt runs alone on its worker: the item was present at two or more worker deaths."
  }
  column "generation" {
    type    = integer
    default = 0
    comment = "Bumped by every rerun or task replacement so the item's task id is new."
  }
  column "attempt_limit" {
    type    = integer
    null    = true
    comment = "Attempts allowed in total; NULL means the job's max_attempts. A rerun grants max_attempts more."
  }
  column "current_attempt_id" {
    type    = uuid
    null    = true
    comment = "The attempt holding the claim; a finish from any other attempt is rejected."
  }
  column "claim_worker" {
    type    = uuid
    null    = true
    comment = "The worker (dw_etl_workers) whose liveness lease covers current_attempt_id."
  }
  column "current_attempt_no" {
    type    = bigint
    null    = true
    comment = "The running attempt's attempt_no, drawn from the attempts' sequence at its claim."
  }
  column "current_started_at" {
    type    = timestamptz
    null    = true
    comment = "When the running attempt was claimed."
  }
  column "current_progress" {
    type    = text
    null    = true
    comment = "The running attempt's last progress message (heartbeat); kept on its attempt row when it ends."
  }
  column "current_progress_at" {
    type = timestamptz
    null = true
  }
  column "next_retry_at" {
    type    = timestamptz
    null    = true
    comment = "When the next attempt is due after a failed one (backoff, Retry-After)."
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
  column "cursor_meta" {
    type    = jsonb
    null    = true
    comment = "The stored cursor's meta when the run expanded its items."
  }
  column "cursor_end" {
    type = timestamptz
    null = true
  }
  column "cursor_end_meta" {
    type    = jsonb
    null    = true
    comment = "The meta the handler asked to keep with the cursor."
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
    where   = "ended_at IS NOT NULL"
    comment = "Ended items only: a new item costs this index nothing."
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
  comment = "One row per execution of an item, inserted once when it ends (the running attempt lives on its item, current_*): retries are visible in attempt_no order."
  column "attempt_id" {
    type = uuid
  }
  column "run_id" {
    type = uuid
  }
  column "attempt_no" {
    type    = bigint
    comment = "Drawn from this identity's sequence when the attempt is claimed: increases within a run in the order attempts start, with gaps."
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
    comment = "Records this attempt committed (in a dry run: would have written)."
  }
  column "records_discarded" {
    type    = bigint
    default = 0
    comment = "Records this attempt wrote in a target transaction that was rolled back."
  }
  column "page_count" {
    type    = bigint
    default = 0
  }
  column "progress" {
    type    = text
    null    = true
    comment = "The handler's last progress message before the attempt ended."
  }
  column "progress_at" {
    type = timestamptz
    null = true
  }
  column "worker_id" {
    type    = text
    null    = true
    comment = "The worker's name (ETL_WORKER_ID, else host:pid)."
  }
  column "worker" {
    type    = uuid
    null    = true
    comment = "The worker process (dw_etl_workers) whose liveness lease covered this attempt."
  }
  column "solo" {
    type    = boolean
    default = false
    comment = "The attempt ran alone on its worker (the item was a suspect of earlier worker deaths)."
  }
  column "ended_by" {
    type    = text
    null    = true
    comment = "Who recorded the end: holder (the attempt's worker), reconciler, takeover (a later claim), timeout, operator."
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
  check "dw_etl_run_attempts_status_check" {
    expr = "status IN ('PENDING', 'RUNNING', 'SUCCESS', 'PARTIAL_SUCCESS', 'FAILED', 'SKIPPED', 'CANCELLED')"
  }
  check "dw_etl_run_attempts_error_category_check" {
    expr = "error_category IN ('API', 'DB', 'DATA', 'SYSTEM', 'NONE')"
  }
  check "dw_etl_run_attempts_item_attempt_check" {
    expr = "item_attempt >= 1"
  }
  check "dw_etl_run_attempts_ended_by_check" {
    expr = "ended_by IN ('holder', 'reconciler', 'takeover', 'timeout', 'operator')"
  }
}

table "dw_etl_workers" {
  schema  = schema.public
  comment = "One row per worker process: its liveness lease, set by the worker itself on the database clock. Attempts name their worker; a worker whose lease lapsed is dead and its attempts are closed."
  column "worker_id" {
    type = uuid
  }
  column "name" {
    type = text
  }
  column "host" {
    type    = text
    default = ""
  }
  column "pid" {
    type    = integer
    default = 0
  }
  column "app_name" {
    type    = text
    default = ""
    comment = "The application_name of the process's sessions; the reconciler ends them when it declares the worker dead."
  }
  column "queues" {
    type    = sql("text[]")
    default = sql("'{}'::text[]")
  }
  column "concurrency" {
    type    = integer
    default = 0
  }
  column "lease_ms" {
    type    = bigint
    comment = "The worker's own lease length (ETL_LEASE)."
  }
  column "started_at" {
    type    = timestamptz
    default = sql("now()")
  }
  column "heartbeat_at" {
    type    = timestamptz
    default = sql("now()")
  }
  column "lease_until" {
    type    = timestamptz
    comment = "heartbeat_at + lease_ms, written by the worker; past it the worker counts as dead."
  }
  column "stopped_at" {
    type    = timestamptz
    null    = true
    comment = "Set by the worker when it shut down cleanly."
  }
  column "dead_at" {
    type    = timestamptz
    null    = true
    comment = "Set by the reconciler when it declared the worker dead and closed its attempts."
  }
  column "held_run_ids" {
    type    = sql("uuid[]")
    default = sql("'{}'::uuid[]")
    comment = "With held_item_nos, the items the worker's attempts held at its last heartbeat: how history finds a run's running items without an index on the items' claim (which would make every claim a non-HOT update)."
  }
  column "held_item_nos" {
    type    = sql("integer[]")
    default = sql("'{}'::integer[]")
  }
  primary_key {
    columns = [column.worker_id]
  }
  index "dw_etl_workers_live_idx" {
    columns = [column.lease_until]
    where   = "dead_at IS NULL"
  }
}

table "dw_etl_leases" {
  schema  = schema.public
  comment = "Named leader leases on the database clock (reconciler, scheduler): the holder renews lease_until; anyone may take a lapsed lease."
  column "name" {
    type = text
  }
  column "holder" {
    type = uuid
  }
  column "holder_name" {
    type    = text
    default = ""
  }
  column "lease_until" {
    type = timestamptz
  }
  column "acquired_at" {
    type    = timestamptz
    default = sql("now()")
  }
  primary_key {
    columns = [column.name]
  }
}

table "dw_etl_redis_epochs" {
  schema  = schema.public
  comment = "The marker the reconciler keeps in Redis per queue: when Redis no longer holds it, Redis lost data and the queue's tasks are rebuilt from Postgres."
  column "queue" {
    type = text
  }
  column "epoch" {
    type = text
  }
  column "set_at" {
    type    = timestamptz
    default = sql("now()")
  }
  primary_key {
    columns = [column.queue]
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
    type    = uuid
    null    = true
    comment = "The attempt (dw_etl_run_attempts) that logged the line; not a foreign key, since a running attempt's lines land before its row, written when it ends."
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
