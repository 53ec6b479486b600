-- Create "dw_etl_jobs" table
CREATE TABLE "public"."dw_etl_jobs" (
  "job_id" text NOT NULL,
  "kind" text NOT NULL,
  "description" text NOT NULL DEFAULT '',
  "supports_params" boolean NOT NULL DEFAULT false,
  "supports_incremental" boolean NOT NULL DEFAULT false,
  "strategy" text NOT NULL DEFAULT 'none',
  "cursor_policy" text NOT NULL DEFAULT 'run',
  "config" jsonb NOT NULL DEFAULT '{}',
  "param_source" jsonb NULL,
  "schedule" text NULL,
  "overlap_policy" text NOT NULL DEFAULT 'skip',
  "queue" text NOT NULL DEFAULT 'etl',
  "max_attempts" integer NOT NULL DEFAULT 3,
  "timeout_ms" bigint NOT NULL DEFAULT 600000,
  "run_timeout_ms" bigint NULL,
  "retention_ms" bigint NOT NULL DEFAULT 3600000,
  "enabled" boolean NOT NULL DEFAULT true,
  "created_at" timestamptz NOT NULL DEFAULT now(),
  "updated_at" timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY ("job_id"),
  CONSTRAINT "dw_etl_jobs_cursor_policy_check" CHECK (cursor_policy = ANY (ARRAY['run'::text, 'item'::text])),
  CONSTRAINT "dw_etl_jobs_max_attempts_check" CHECK (max_attempts >= 1),
  CONSTRAINT "dw_etl_jobs_overlap_policy_check" CHECK (overlap_policy = ANY (ARRAY['skip'::text, 'queue'::text, 'allow'::text])),
  CONSTRAINT "dw_etl_jobs_queue_check" CHECK ((queue <> ''::text) AND (strpos(queue, '{'::text) = 0) AND (strpos(queue, '}'::text) = 0)),
  CONSTRAINT "dw_etl_jobs_strategy_check" CHECK (strategy = ANY (ARRAY['none'::text, 'modified_date'::text, 'last_run'::text])),
  CONSTRAINT "dw_etl_jobs_timeout_ms_check" CHECK (timeout_ms > 0)
);
-- Set comment to table: "dw_etl_jobs"
COMMENT ON TABLE "public"."dw_etl_jobs" IS 'Job definitions: what a run of each job does and how it is delivered.';
-- Set comment to column: "kind" on table: "dw_etl_jobs"
COMMENT ON COLUMN "public"."dw_etl_jobs"."kind" IS 'Name of the registered handler that runs each item.';
-- Set comment to column: "cursor_policy" on table: "dw_etl_jobs"
COMMENT ON COLUMN "public"."dw_etl_jobs"."cursor_policy" IS 'run: cursors move only when the whole run succeeds; item: per succeeded item.';
-- Set comment to column: "retention_ms" on table: "dw_etl_jobs"
COMMENT ON COLUMN "public"."dw_etl_jobs"."retention_ms" IS 'How long asynq keeps a completed task visible (asynq.Retention).';
-- Create "dw_etl_incremental_cursors" table
CREATE TABLE "public"."dw_etl_incremental_cursors" (
  "job_id" text NOT NULL,
  "param_hash" text NOT NULL,
  "params" jsonb NOT NULL,
  "strategy" text NOT NULL,
  "cursor_value" timestamptz NULL,
  "cursor_meta" jsonb NOT NULL DEFAULT '{}',
  "last_run_id" uuid NULL,
  "updated_at" timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY ("job_id", "param_hash"),
  CONSTRAINT "dw_etl_incremental_cursors_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "public"."dw_etl_jobs" ("job_id") ON UPDATE NO ACTION ON DELETE CASCADE,
  CONSTRAINT "dw_etl_incremental_cursors_strategy_check" CHECK (strategy = ANY (ARRAY['modified_date'::text, 'last_run'::text]))
);
-- Create index "dw_etl_incremental_cursors_job_value_idx" to table: "dw_etl_incremental_cursors"
CREATE INDEX "dw_etl_incremental_cursors_job_value_idx" ON "public"."dw_etl_incremental_cursors" ("job_id", "cursor_value" DESC);
-- Create index "dw_etl_incremental_cursors_params_idx" to table: "dw_etl_incremental_cursors"
CREATE INDEX "dw_etl_incremental_cursors_params_idx" ON "public"."dw_etl_incremental_cursors" USING gin ("params" jsonb_path_ops);
-- Set comment to table: "dw_etl_incremental_cursors"
COMMENT ON TABLE "public"."dw_etl_incremental_cursors" IS 'Where each (job, parameter set) resumes its incremental load.';
-- Upgrade "dw_etl_runs" in place (hand-edited from the plan; see docs/migrations.md). New
-- columns arrive NULLable so the ALTER is metadata-only, existing rows are populated, and only
-- then do defaults, NOT NULL, checks and the foreign key apply. The whole file is one transaction.
ALTER TABLE "public"."dw_etl_runs" ADD COLUMN "error_category" text NULL, ADD COLUMN "dry_run" boolean NULL, ADD COLUMN "trigger" text NULL, ADD COLUMN "params" jsonb NULL, ADD COLUMN "logical_start" timestamptz NULL, ADD COLUMN "scheduled_for" timestamptz NULL, ADD COLUMN "exclusive" boolean NULL, ADD COLUMN "created_at" timestamptz NULL, ADD COLUMN "enqueued_at" timestamptz NULL, ADD COLUMN "duration_ms" bigint NULL, ADD COLUMN "attempt_count" integer NULL, ADD COLUMN "item_count" integer NULL, ADD COLUMN "items_deduplicated" integer NULL, ADD COLUMN "items_succeeded" integer NULL, ADD COLUMN "items_failed" integer NULL, ADD COLUMN "items_skipped" integer NULL, ADD COLUMN "items_cancelled" integer NULL, ADD COLUMN "records_read" bigint NULL, ADD COLUMN "records_written" bigint NULL, ADD COLUMN "page_count" bigint NULL, ADD COLUMN "metrics" jsonb NULL, ADD COLUMN "cancel_requested_at" timestamptz NULL, ADD COLUMN "cancelled_by" text NULL, ADD COLUMN "cancel_reason" text NULL, ADD COLUMN "updated_at" timestamptz NULL;
-- Backfill existing rows: duration from their own timestamps; legacy runs never hold the job's active slot.
UPDATE "public"."dw_etl_runs" SET "error_category" = 'NONE', "dry_run" = false, "trigger" = 'legacy', "params" = '{}', "exclusive" = false, "created_at" = coalesce("started_at", "ended_at", now()), "started_at" = coalesce("started_at", "ended_at", now()), "duration_ms" = CASE WHEN "started_at" IS NOT NULL AND "ended_at" IS NOT NULL THEN round(extract(epoch FROM "ended_at" - "started_at") * 1000)::bigint END, "attempt_count" = 0, "item_count" = 0, "items_deduplicated" = 0, "items_succeeded" = 0, "items_failed" = 0, "items_skipped" = 0, "items_cancelled" = 0, "records_read" = 0, "records_written" = 0, "page_count" = 0, "metrics" = '{}', "updated_at" = now();
-- One disabled job row per legacy job_id, so the foreign key below can hold.
INSERT INTO "public"."dw_etl_jobs" ("job_id", "kind", "description", "enabled") SELECT DISTINCT "job_id", 'legacy', 'imported from the legacy dw_etl_runs', false FROM "public"."dw_etl_runs" ON CONFLICT ("job_id") DO NOTHING;
-- Defaults and NOT NULL only after population.
ALTER TABLE "public"."dw_etl_runs" ALTER COLUMN "job_id" SET NOT NULL, ALTER COLUMN "status" SET NOT NULL, ALTER COLUMN "status" SET DEFAULT 'PENDING', ALTER COLUMN "started_at" SET DEFAULT now(), ALTER COLUMN "started_at" SET NOT NULL, ALTER COLUMN "error_category" SET DEFAULT 'NONE', ALTER COLUMN "error_category" SET NOT NULL, ALTER COLUMN "dry_run" SET DEFAULT false, ALTER COLUMN "dry_run" SET NOT NULL, ALTER COLUMN "trigger" SET DEFAULT 'manual', ALTER COLUMN "trigger" SET NOT NULL, ALTER COLUMN "params" SET DEFAULT '{}', ALTER COLUMN "params" SET NOT NULL, ALTER COLUMN "exclusive" SET DEFAULT true, ALTER COLUMN "exclusive" SET NOT NULL, ALTER COLUMN "created_at" SET DEFAULT now(), ALTER COLUMN "created_at" SET NOT NULL, ALTER COLUMN "attempt_count" SET DEFAULT 0, ALTER COLUMN "attempt_count" SET NOT NULL, ALTER COLUMN "item_count" SET DEFAULT 0, ALTER COLUMN "item_count" SET NOT NULL, ALTER COLUMN "items_deduplicated" SET DEFAULT 0, ALTER COLUMN "items_deduplicated" SET NOT NULL, ALTER COLUMN "items_succeeded" SET DEFAULT 0, ALTER COLUMN "items_succeeded" SET NOT NULL, ALTER COLUMN "items_failed" SET DEFAULT 0, ALTER COLUMN "items_failed" SET NOT NULL, ALTER COLUMN "items_skipped" SET DEFAULT 0, ALTER COLUMN "items_skipped" SET NOT NULL, ALTER COLUMN "items_cancelled" SET DEFAULT 0, ALTER COLUMN "items_cancelled" SET NOT NULL, ALTER COLUMN "records_read" SET DEFAULT 0, ALTER COLUMN "records_read" SET NOT NULL, ALTER COLUMN "records_written" SET DEFAULT 0, ALTER COLUMN "records_written" SET NOT NULL, ALTER COLUMN "page_count" SET DEFAULT 0, ALTER COLUMN "page_count" SET NOT NULL, ALTER COLUMN "metrics" SET DEFAULT '{}', ALTER COLUMN "metrics" SET NOT NULL, ALTER COLUMN "updated_at" SET DEFAULT now(), ALTER COLUMN "updated_at" SET NOT NULL;
-- Checks and the foreign key last, validated against the populated rows.
ALTER TABLE "public"."dw_etl_runs" ADD CONSTRAINT "dw_etl_runs_error_category_check" CHECK (error_category = ANY (ARRAY['API'::text, 'DB'::text, 'DATA'::text, 'SYSTEM'::text, 'NONE'::text])), ADD CONSTRAINT "dw_etl_runs_status_check" CHECK (status = ANY (ARRAY['PENDING'::text, 'RUNNING'::text, 'SUCCESS'::text, 'PARTIAL_SUCCESS'::text, 'FAILED'::text, 'SKIPPED'::text, 'CANCELLED'::text])), ADD CONSTRAINT "dw_etl_runs_trigger_check" CHECK (trigger = ANY (ARRAY['manual'::text, 'schedule'::text, 'rerun'::text, 'legacy'::text])), ADD CONSTRAINT "dw_etl_runs_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "public"."dw_etl_jobs" ("job_id") ON UPDATE NO ACTION ON DELETE RESTRICT;
-- Create index "dw_etl_runs_failed_started_idx" to table: "dw_etl_runs"
CREATE INDEX "dw_etl_runs_failed_started_idx" ON "public"."dw_etl_runs" ("started_at" DESC) WHERE (status = 'FAILED'::text);
-- Create index "dw_etl_runs_job_started_idx" to table: "dw_etl_runs"
CREATE INDEX "dw_etl_runs_job_started_idx" ON "public"."dw_etl_runs" ("job_id", "started_at" DESC);
-- Create index "dw_etl_runs_one_active_idx" to table: "dw_etl_runs"
CREATE UNIQUE INDEX "dw_etl_runs_one_active_idx" ON "public"."dw_etl_runs" ("job_id") WHERE (exclusive AND (status = ANY (ARRAY['PENDING'::text, 'RUNNING'::text])));
-- Create index "dw_etl_runs_schedule_tick_idx" to table: "dw_etl_runs"
CREATE UNIQUE INDEX "dw_etl_runs_schedule_tick_idx" ON "public"."dw_etl_runs" ("job_id", "scheduled_for") WHERE (scheduled_for IS NOT NULL);
-- Create index "dw_etl_runs_status_started_idx" to table: "dw_etl_runs"
CREATE INDEX "dw_etl_runs_status_started_idx" ON "public"."dw_etl_runs" ("status", "started_at" DESC);
-- Set comment to table: "dw_etl_runs"
COMMENT ON TABLE "public"."dw_etl_runs" IS 'One row per run of a job: lifecycle, totals and dry-run intent.';
-- Set comment to column: "logical_start" on table: "dw_etl_runs"
COMMENT ON COLUMN "public"."dw_etl_runs"."logical_start" IS 'The window end of a last_run job: the run''s logical start.';
-- Set comment to column: "scheduled_for" on table: "dw_etl_runs"
COMMENT ON COLUMN "public"."dw_etl_runs"."scheduled_for" IS 'The cron tick a scheduled run belongs to; unique per job.';
-- Set comment to column: "exclusive" on table: "dw_etl_runs"
COMMENT ON COLUMN "public"."dw_etl_runs"."exclusive" IS 'Holds the job''s single active slot (overlap policies skip and queue).';
-- Set comment to column: "enqueued_at" on table: "dw_etl_runs"
COMMENT ON COLUMN "public"."dw_etl_runs"."enqueued_at" IS 'Set once every item''s task was handed to Redis.';
-- Create "dw_etl_run_items" table
CREATE TABLE "public"."dw_etl_run_items" (
  "run_id" uuid NOT NULL,
  "item_no" integer NOT NULL,
  "params" jsonb NOT NULL,
  "param_hash" text NOT NULL,
  "status" text NOT NULL DEFAULT 'PENDING',
  "error_category" text NOT NULL DEFAULT 'NONE',
  "error_message" text NULL,
  "attempts" integer NOT NULL DEFAULT 0,
  "generation" integer NOT NULL DEFAULT 0,
  "task_id" text NOT NULL,
  "current_attempt_id" uuid NULL,
  "heartbeat_at" timestamptz NULL,
  "started_at" timestamptz NULL,
  "ended_at" timestamptz NULL,
  "duration_ms" bigint NULL,
  "records_read" bigint NOT NULL DEFAULT 0,
  "records_written" bigint NOT NULL DEFAULT 0,
  "page_count" bigint NOT NULL DEFAULT 0,
  "cursor_start" timestamptz NULL,
  "cursor_end" timestamptz NULL,
  "cursor_note" text NULL,
  PRIMARY KEY ("run_id", "item_no"),
  CONSTRAINT "dw_etl_run_items_run_id_fkey" FOREIGN KEY ("run_id") REFERENCES "public"."dw_etl_runs" ("run_id") ON UPDATE NO ACTION ON DELETE CASCADE,
  CONSTRAINT "dw_etl_run_items_error_category_check" CHECK (error_category = ANY (ARRAY['API'::text, 'DB'::text, 'DATA'::text, 'SYSTEM'::text, 'NONE'::text])),
  CONSTRAINT "dw_etl_run_items_item_no_check" CHECK (item_no >= 1),
  CONSTRAINT "dw_etl_run_items_status_check" CHECK (status = ANY (ARRAY['PENDING'::text, 'RUNNING'::text, 'SUCCESS'::text, 'PARTIAL_SUCCESS'::text, 'FAILED'::text, 'SKIPPED'::text, 'CANCELLED'::text]))
);
-- Create index "dw_etl_run_items_run_ended_idx" to table: "dw_etl_run_items"
CREATE INDEX "dw_etl_run_items_run_ended_idx" ON "public"."dw_etl_run_items" ("run_id", "ended_at" DESC);
-- Create index "dw_etl_run_items_run_param_hash_key" to table: "dw_etl_run_items"
CREATE UNIQUE INDEX "dw_etl_run_items_run_param_hash_key" ON "public"."dw_etl_run_items" ("run_id", "param_hash");
-- Create index "dw_etl_run_items_status_idx" to table: "dw_etl_run_items"
CREATE INDEX "dw_etl_run_items_status_idx" ON "public"."dw_etl_run_items" ("status");
-- Set comment to table: "dw_etl_run_items"
COMMENT ON TABLE "public"."dw_etl_run_items" IS 'One row per deduplicated parameter set of a run.';
-- Set comment to column: "param_hash" on table: "dw_etl_run_items"
COMMENT ON COLUMN "public"."dw_etl_run_items"."param_hash" IS 'Hex SHA-256 of the canonical JSON of params.';
-- Set comment to column: "generation" on table: "dw_etl_run_items"
COMMENT ON COLUMN "public"."dw_etl_run_items"."generation" IS 'Bumped by every rerun so the item''s task id is new.';
-- Set comment to column: "current_attempt_id" on table: "dw_etl_run_items"
COMMENT ON COLUMN "public"."dw_etl_run_items"."current_attempt_id" IS 'The attempt holding the claim; a finish from any other attempt is rejected.';
-- Create "dw_etl_run_attempts" table
CREATE TABLE "public"."dw_etl_run_attempts" (
  "attempt_id" uuid NOT NULL,
  "run_id" uuid NOT NULL,
  "attempt_no" bigint NOT NULL GENERATED ALWAYS AS IDENTITY,
  "item_no" integer NOT NULL,
  "item_attempt" integer NOT NULL,
  "status" text NOT NULL DEFAULT 'RUNNING',
  "error_category" text NOT NULL DEFAULT 'NONE',
  "error_message" text NULL,
  "error_detail" jsonb NULL,
  "backoff_ms" bigint NULL,
  "next_retry_at" timestamptz NULL,
  "scheduled_at" timestamptz NULL,
  "started_at" timestamptz NOT NULL DEFAULT now(),
  "heartbeat_at" timestamptz NOT NULL DEFAULT now(),
  "ended_at" timestamptz NULL,
  "duration_ms" bigint NULL,
  "records_read" bigint NOT NULL DEFAULT 0,
  "records_written" bigint NOT NULL DEFAULT 0,
  "page_count" bigint NOT NULL DEFAULT 0,
  "worker_id" text NULL,
  PRIMARY KEY ("attempt_id"),
  CONSTRAINT "dw_etl_run_attempts_item_fkey" FOREIGN KEY ("run_id", "item_no") REFERENCES "public"."dw_etl_run_items" ("run_id", "item_no") ON UPDATE NO ACTION ON DELETE CASCADE,
  CONSTRAINT "dw_etl_run_attempts_run_id_fkey" FOREIGN KEY ("run_id") REFERENCES "public"."dw_etl_runs" ("run_id") ON UPDATE NO ACTION ON DELETE CASCADE,
  CONSTRAINT "dw_etl_run_attempts_error_category_check" CHECK (error_category = ANY (ARRAY['API'::text, 'DB'::text, 'DATA'::text, 'SYSTEM'::text, 'NONE'::text])),
  CONSTRAINT "dw_etl_run_attempts_item_attempt_check" CHECK (item_attempt >= 1),
  CONSTRAINT "dw_etl_run_attempts_status_check" CHECK (status = ANY (ARRAY['PENDING'::text, 'RUNNING'::text, 'SUCCESS'::text, 'PARTIAL_SUCCESS'::text, 'FAILED'::text, 'SKIPPED'::text, 'CANCELLED'::text]))
);
-- Create index "dw_etl_run_attempts_item_attempt_key" to table: "dw_etl_run_attempts"
CREATE UNIQUE INDEX "dw_etl_run_attempts_item_attempt_key" ON "public"."dw_etl_run_attempts" ("run_id", "item_no", "item_attempt");
-- Create index "dw_etl_run_attempts_open_idx" to table: "dw_etl_run_attempts"
CREATE INDEX "dw_etl_run_attempts_open_idx" ON "public"."dw_etl_run_attempts" ("heartbeat_at") WHERE (status = 'RUNNING'::text);
-- Create index "dw_etl_run_attempts_run_attempt_no_key" to table: "dw_etl_run_attempts"
CREATE UNIQUE INDEX "dw_etl_run_attempts_run_attempt_no_key" ON "public"."dw_etl_run_attempts" ("run_id", "attempt_no");
-- Create index "dw_etl_run_attempts_run_ended_idx" to table: "dw_etl_run_attempts"
CREATE INDEX "dw_etl_run_attempts_run_ended_idx" ON "public"."dw_etl_run_attempts" ("run_id", "ended_at" DESC);
-- Set comment to table: "dw_etl_run_attempts"
COMMENT ON TABLE "public"."dw_etl_run_attempts" IS 'One row per execution of an item: retries are visible in attempt_no order.';
-- Set comment to column: "attempt_no" on table: "dw_etl_run_attempts"
COMMENT ON COLUMN "public"."dw_etl_run_attempts"."attempt_no" IS 'Drawn from a sequence: increases within a run in the order attempts start, with gaps.';
-- Create "dw_etl_run_logs" table
CREATE TABLE "public"."dw_etl_run_logs" (
  "log_id" bigint NOT NULL GENERATED ALWAYS AS IDENTITY,
  "ts" timestamptz NOT NULL DEFAULT now(),
  "run_id" uuid NOT NULL,
  "attempt_id" uuid NULL,
  "job_id" text NOT NULL,
  "item_no" integer NULL,
  "level" text NOT NULL,
  "message" text NOT NULL,
  "fields" jsonb NOT NULL DEFAULT '{}',
  PRIMARY KEY ("log_id", "ts"),
  CONSTRAINT "dw_etl_run_logs_attempt_id_fkey" FOREIGN KEY ("attempt_id") REFERENCES "public"."dw_etl_run_attempts" ("attempt_id") ON UPDATE NO ACTION ON DELETE CASCADE,
  CONSTRAINT "dw_etl_run_logs_run_id_fkey" FOREIGN KEY ("run_id") REFERENCES "public"."dw_etl_runs" ("run_id") ON UPDATE NO ACTION ON DELETE CASCADE,
  CONSTRAINT "dw_etl_run_logs_level_check" CHECK (level = ANY (ARRAY['trace'::text, 'debug'::text, 'info'::text, 'warn'::text, 'error'::text, 'fatal'::text, 'panic'::text]))
) PARTITION BY RANGE ("ts");
-- Create index "dw_etl_run_logs_fields_idx" to table: "dw_etl_run_logs"
CREATE INDEX "dw_etl_run_logs_fields_idx" ON "public"."dw_etl_run_logs" USING gin ("fields" jsonb_path_ops);
-- Create index "dw_etl_run_logs_level_ts_idx" to table: "dw_etl_run_logs"
CREATE INDEX "dw_etl_run_logs_level_ts_idx" ON "public"."dw_etl_run_logs" ("level", "ts");
-- Create index "dw_etl_run_logs_run_ts_idx" to table: "dw_etl_run_logs"
CREATE INDEX "dw_etl_run_logs_run_ts_idx" ON "public"."dw_etl_run_logs" ("run_id", "ts");
-- Set comment to table: "dw_etl_run_logs"
COMMENT ON TABLE "public"."dw_etl_run_logs" IS 'Structured log lines of runs, range-partitioned by month on ts for retention by DROP.';
-- Create "dw_etl_run_progress" table
CREATE TABLE "public"."dw_etl_run_progress" (
  "run_id" uuid NOT NULL,
  "shard" smallint NOT NULL,
  "items" integer NOT NULL,
  "terminal" integer NOT NULL DEFAULT 0,
  PRIMARY KEY ("run_id", "shard"),
  CONSTRAINT "dw_etl_run_progress_run_id_fkey" FOREIGN KEY ("run_id") REFERENCES "public"."dw_etl_runs" ("run_id") ON UPDATE NO ACTION ON DELETE CASCADE,
  CONSTRAINT "dw_etl_run_progress_terminal_check" CHECK ((terminal >= 0) AND (terminal <= items))
);
-- Set comment to table: "dw_etl_run_progress"
COMMENT ON TABLE "public"."dw_etl_run_progress" IS 'Sharded terminal-item counters: a run learns its last item finished without a hot row or a scan.';
-- Set comment to column: "items" on table: "dw_etl_run_progress"
COMMENT ON COLUMN "public"."dw_etl_run_progress"."items" IS 'Items of the run that hash to this shard.';
