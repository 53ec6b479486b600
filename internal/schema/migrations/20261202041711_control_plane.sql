-- Create "dw_etl_control_state" table
CREATE TABLE "public"."dw_etl_control_state" (
  "name" text NOT NULL,
  "value" jsonb NOT NULL DEFAULT '{}',
  "updated_at" timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY ("name")
);
-- Set comment to table: "dw_etl_control_state"
COMMENT ON TABLE "public"."dw_etl_control_state" IS 'Small named state of the control loop (e.g. when the last retention pass finished).';
-- Create "dw_etl_alert_deliveries" table
CREATE TABLE "public"."dw_etl_alert_deliveries" (
  "delivery_id" uuid NOT NULL,
  "run_id" uuid NOT NULL,
  "job_id" text NOT NULL,
  "event" text NOT NULL,
  "occurred_at" timestamptz NOT NULL,
  "destination" text NOT NULL,
  "status" text NOT NULL DEFAULT 'PENDING',
  "attempts" integer NOT NULL DEFAULT 0,
  "next_attempt_at" timestamptz NOT NULL DEFAULT now(),
  "last_status_code" integer NULL,
  "last_error" text NULL,
  "payload" jsonb NOT NULL,
  "created_at" timestamptz NOT NULL DEFAULT now(),
  "delivered_at" timestamptz NULL,
  PRIMARY KEY ("delivery_id"),
  CONSTRAINT "dw_etl_alert_deliveries_run_id_fkey" FOREIGN KEY ("run_id") REFERENCES "public"."dw_etl_runs" ("run_id") ON UPDATE NO ACTION ON DELETE CASCADE,
  CONSTRAINT "dw_etl_alert_deliveries_event_check" CHECK (event = ANY (ARRAY['run_ended'::text, 'run_overdue'::text])),
  CONSTRAINT "dw_etl_alert_deliveries_status_check" CHECK (status = ANY (ARRAY['PENDING'::text, 'DELIVERED'::text, 'FAILED'::text]))
);
-- Create index "dw_etl_alert_deliveries_due_idx" to table: "dw_etl_alert_deliveries"
CREATE INDEX "dw_etl_alert_deliveries_due_idx" ON "public"."dw_etl_alert_deliveries" ("next_attempt_at") WHERE (status = 'PENDING'::text);
-- Create index "dw_etl_alert_deliveries_event_key" to table: "dw_etl_alert_deliveries"
CREATE UNIQUE INDEX "dw_etl_alert_deliveries_event_key" ON "public"."dw_etl_alert_deliveries" ("run_id", "event", "occurred_at", "destination");
-- Set comment to table: "dw_etl_alert_deliveries"
COMMENT ON TABLE "public"."dw_etl_alert_deliveries" IS 'One notification of a run event to one destination, retried with backoff until delivered or given up.';
-- Set comment to column: "occurred_at" on table: "dw_etl_alert_deliveries"
COMMENT ON COLUMN "public"."dw_etl_alert_deliveries"."occurred_at" IS 'The run''s end (run_ended) or when it was found overdue (run_overdue).';
-- Create "dw_etl_alert_attempts" table
CREATE TABLE "public"."dw_etl_alert_attempts" (
  "delivery_id" uuid NOT NULL,
  "attempt" integer NOT NULL,
  "at" timestamptz NOT NULL DEFAULT now(),
  "status_code" integer NULL,
  "error" text NULL,
  "duration_ms" bigint NOT NULL,
  PRIMARY KEY ("delivery_id", "attempt"),
  CONSTRAINT "dw_etl_alert_attempts_delivery_id_fkey" FOREIGN KEY ("delivery_id") REFERENCES "public"."dw_etl_alert_deliveries" ("delivery_id") ON UPDATE NO ACTION ON DELETE CASCADE
);
-- Set comment to table: "dw_etl_alert_attempts"
COMMENT ON TABLE "public"."dw_etl_alert_attempts" IS 'Every HTTP attempt of an alert delivery, with its outcome.';
-- Modify "dw_etl_jobs" table
ALTER TABLE "public"."dw_etl_jobs" ADD CONSTRAINT "dw_etl_jobs_catchup_limit_check" CHECK (catchup_limit >= 1), ADD CONSTRAINT "dw_etl_jobs_catchup_policy_check" CHECK (catchup_policy = ANY (ARRAY['skip'::text, 'once'::text, 'each'::text])), ADD CONSTRAINT "dw_etl_jobs_expected_duration_ms_check" CHECK (expected_duration_ms > 0), ADD CONSTRAINT "dw_etl_jobs_history_retention_ms_check" CHECK (history_retention_ms > 0), ADD COLUMN "paused" boolean NOT NULL DEFAULT false, ADD COLUMN "paused_at" timestamptz NULL, ADD COLUMN "paused_by" text NULL, ADD COLUMN "pause_reason" text NULL, ADD COLUMN "resumed_at" timestamptz NULL, ADD COLUMN "history_retention_ms" bigint NULL, ADD COLUMN "alert_on" text[] NULL, ADD COLUMN "expected_duration_ms" bigint NULL, ADD COLUMN "catchup_policy" text NOT NULL DEFAULT 'once', ADD COLUMN "catchup_limit" integer NOT NULL DEFAULT 10;
-- Set comment to column: "paused" on table: "dw_etl_jobs"
COMMENT ON COLUMN "public"."dw_etl_jobs"."paused" IS 'A paused job starts no new run: its schedule, triggers, reruns and backfills are refused.';
-- Set comment to column: "resumed_at" on table: "dw_etl_jobs"
COMMENT ON COLUMN "public"."dw_etl_jobs"."resumed_at" IS 'When the job was last resumed: cron ticks before it are not fired (not caught up).';
-- Set comment to column: "history_retention_ms" on table: "dw_etl_jobs"
COMMENT ON COLUMN "public"."dw_etl_jobs"."history_retention_ms" IS 'How long finished runs (items, attempts) are kept; NULL means the global retention.';
-- Set comment to column: "alert_on" on table: "dw_etl_jobs"
COMMENT ON COLUMN "public"."dw_etl_jobs"."alert_on" IS 'Run end statuses that notify; NULL means the alerter''s default, empty means none.';
-- Set comment to column: "expected_duration_ms" on table: "dw_etl_jobs"
COMMENT ON COLUMN "public"."dw_etl_jobs"."expected_duration_ms" IS 'An open run older than this notifies once (run_overdue).';
-- Set comment to column: "catchup_policy" on table: "dw_etl_jobs"
COMMENT ON COLUMN "public"."dw_etl_jobs"."catchup_policy" IS 'Missed cron ticks: skip (none), once (only the latest), each (every one, at most catchup_limit).';
-- Create "dw_etl_backfills" table
CREATE TABLE "public"."dw_etl_backfills" (
  "backfill_id" uuid NOT NULL,
  "job_id" text NOT NULL,
  "spec_hash" text NOT NULL,
  "window_from" timestamptz NOT NULL,
  "window_to" timestamptz NOT NULL,
  "step_ms" bigint NOT NULL,
  "params" jsonb NOT NULL,
  "dry_run" boolean NOT NULL DEFAULT false,
  "concurrency" integer NOT NULL DEFAULT 1,
  "created_by" text NOT NULL,
  "created_at" timestamptz NOT NULL DEFAULT now(),
  "finished_at" timestamptz NULL,
  PRIMARY KEY ("backfill_id"),
  CONSTRAINT "dw_etl_backfills_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "public"."dw_etl_jobs" ("job_id") ON UPDATE NO ACTION ON DELETE CASCADE,
  CONSTRAINT "dw_etl_backfills_concurrency_check" CHECK (concurrency >= 1),
  CONSTRAINT "dw_etl_backfills_step_ms_check" CHECK (step_ms > 0),
  CONSTRAINT "dw_etl_backfills_window_check" CHECK (window_from < window_to)
);
-- Create index "dw_etl_backfills_spec_key" to table: "dw_etl_backfills"
CREATE UNIQUE INDEX "dw_etl_backfills_spec_key" ON "public"."dw_etl_backfills" ("job_id", "spec_hash");
-- Set comment to table: "dw_etl_backfills"
COMMENT ON TABLE "public"."dw_etl_backfills" IS 'A backfill of a last_run job: one run per window from window_from to window_to by step.';
-- Set comment to column: "spec_hash" on table: "dw_etl_backfills"
COMMENT ON COLUMN "public"."dw_etl_backfills"."spec_hash" IS 'SHA-256 of the job, bounds, step, params and dry run: the same command resumes the same backfill.';
-- Set comment to column: "params" on table: "dw_etl_backfills"
COMMENT ON COLUMN "public"."dw_etl_backfills"."params" IS 'The param sets every window''s run gets (a JSON array).';
-- Create "dw_etl_idempotency_keys" table
CREATE TABLE "public"."dw_etl_idempotency_keys" (
  "job_id" text NOT NULL,
  "key" text NOT NULL,
  "run_id" uuid NOT NULL,
  "request_hash" text NOT NULL,
  "created_at" timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY ("job_id", "key"),
  CONSTRAINT "dw_etl_idempotency_keys_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "public"."dw_etl_jobs" ("job_id") ON UPDATE NO ACTION ON DELETE CASCADE,
  CONSTRAINT "dw_etl_idempotency_keys_run_id_fkey" FOREIGN KEY ("run_id") REFERENCES "public"."dw_etl_runs" ("run_id") ON UPDATE NO ACTION ON DELETE CASCADE,
  CONSTRAINT "dw_etl_idempotency_keys_key_check" CHECK ((length(key) >= 1) AND (length(key) <= 255))
);
-- Create index "dw_etl_idempotency_keys_run_idx" to table: "dw_etl_idempotency_keys"
CREATE INDEX "dw_etl_idempotency_keys_run_idx" ON "public"."dw_etl_idempotency_keys" ("run_id");
-- Set comment to table: "dw_etl_idempotency_keys"
COMMENT ON TABLE "public"."dw_etl_idempotency_keys" IS 'Idempotency-Key of a trigger: a retried request returns the run the first one created.';
-- Set comment to column: "request_hash" on table: "dw_etl_idempotency_keys"
COMMENT ON COLUMN "public"."dw_etl_idempotency_keys"."request_hash" IS 'SHA-256 of what was asked (params, dry run): the same key with another request is refused.';
-- Create "dw_etl_run_watch" table
CREATE TABLE "public"."dw_etl_run_watch" (
  "run_id" uuid NOT NULL,
  "job_id" text NOT NULL,
  "started_at" timestamptz NOT NULL,
  "ended_at" timestamptz NULL,
  "status" text NULL,
  "overdue_at" timestamptz NULL,
  "seen_at" timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY ("run_id"),
  CONSTRAINT "dw_etl_run_watch_run_id_fkey" FOREIGN KEY ("run_id") REFERENCES "public"."dw_etl_runs" ("run_id") ON UPDATE NO ACTION ON DELETE CASCADE
);
-- Create index "dw_etl_run_watch_open_idx" to table: "dw_etl_run_watch"
CREATE INDEX "dw_etl_run_watch_open_idx" ON "public"."dw_etl_run_watch" ("started_at") WHERE (ended_at IS NULL);
-- Set comment to table: "dw_etl_run_watch"
COMMENT ON TABLE "public"."dw_etl_run_watch" IS 'The alerter''s view of runs: each run end (and overdue run) is noticed exactly once.';
-- Set comment to column: "ended_at" on table: "dw_etl_run_watch"
COMMENT ON COLUMN "public"."dw_etl_run_watch"."ended_at" IS 'The end the alerter handled; NULL while the run is open (a rerun clears it).';
-- Set comment to column: "overdue_at" on table: "dw_etl_run_watch"
COMMENT ON COLUMN "public"."dw_etl_run_watch"."overdue_at" IS 'When the run_overdue notice was recorded for this opening.';
