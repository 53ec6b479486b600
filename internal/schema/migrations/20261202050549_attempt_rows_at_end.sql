-- Drop index "dw_etl_run_attempts_open_idx" from table: "dw_etl_run_attempts"
DROP INDEX "public"."dw_etl_run_attempts_open_idx";
-- Modify "dw_etl_run_attempts" table
ALTER TABLE "public"."dw_etl_run_attempts" DROP CONSTRAINT "dw_etl_run_attempts_item_fkey";
-- Set comment to table: "dw_etl_run_attempts"
COMMENT ON TABLE "public"."dw_etl_run_attempts" IS 'One row per execution of an item, inserted once when it ends (the running attempt lives on its item, current_*): retries are visible in attempt_no order.';
-- Set comment to column: "attempt_no" on table: "dw_etl_run_attempts"
COMMENT ON COLUMN "public"."dw_etl_run_attempts"."attempt_no" IS 'Drawn from this identity''s sequence when the attempt is claimed: increases within a run in the order attempts start, with gaps.';
-- Set comment to column: "progress" on table: "dw_etl_run_attempts"
COMMENT ON COLUMN "public"."dw_etl_run_attempts"."progress" IS 'The handler''s last progress message before the attempt ended.';
-- Set comment to column: "worker" on table: "dw_etl_run_attempts"
COMMENT ON COLUMN "public"."dw_etl_run_attempts"."worker" IS 'The worker process (dw_etl_workers) whose liveness lease covered this attempt.';
-- Drop index "dw_etl_run_items_run_ended_idx" from table: "dw_etl_run_items"
DROP INDEX "public"."dw_etl_run_items_run_ended_idx";
-- Modify "dw_etl_run_items" table
ALTER TABLE "public"."dw_etl_run_items" ADD COLUMN "current_attempt_no" bigint NULL, ADD COLUMN "current_started_at" timestamptz NULL, ADD COLUMN "current_progress" text NULL, ADD COLUMN "current_progress_at" timestamptz NULL;
-- Create index "dw_etl_run_items_run_ended_idx" to table: "dw_etl_run_items"
CREATE INDEX "dw_etl_run_items_run_ended_idx" ON "public"."dw_etl_run_items" ("run_id", "ended_at" DESC) WHERE (ended_at IS NOT NULL);
-- Set comment to table: "dw_etl_run_items"
COMMENT ON TABLE "public"."dw_etl_run_items" IS 'One row per deduplicated parameter set of a run; it also holds the running attempt (current_*), whose dw_etl_run_attempts row is written when it ends. The claim changes no indexed column, so it is a HOT update (fillfactor set in migrations/).';
-- Set comment to column: "current_attempt_no" on table: "dw_etl_run_items"
COMMENT ON COLUMN "public"."dw_etl_run_items"."current_attempt_no" IS 'The running attempt''s attempt_no, drawn from the attempts'' sequence at its claim.';
-- Set comment to column: "current_started_at" on table: "dw_etl_run_items"
COMMENT ON COLUMN "public"."dw_etl_run_items"."current_started_at" IS 'When the running attempt was claimed.';
-- Set comment to column: "current_progress" on table: "dw_etl_run_items"
COMMENT ON COLUMN "public"."dw_etl_run_items"."current_progress" IS 'The running attempt''s last progress message (heartbeat); kept on its attempt row when it ends.';
-- Set comment to index: "dw_etl_run_items_run_ended_idx" on table: "dw_etl_run_items"
COMMENT ON INDEX "public"."dw_etl_run_items_run_ended_idx" IS 'Ended items only: a new item costs this index nothing.';
-- Modify "dw_etl_run_logs" table
ALTER TABLE "public"."dw_etl_run_logs" DROP CONSTRAINT "dw_etl_run_logs_attempt_id_fkey";
-- Set comment to column: "attempt_id" on table: "dw_etl_run_logs"
COMMENT ON COLUMN "public"."dw_etl_run_logs"."attempt_id" IS 'The attempt (dw_etl_run_attempts) that logged the line; not a foreign key, since a running attempt''s lines land before its row, written when it ends.';
-- Running attempts move onto their items: the attempt row is now written when the attempt ends.
UPDATE "public"."dw_etl_run_items" i
SET current_attempt_no = a.attempt_no, current_started_at = a.started_at,
    current_progress = a.progress, current_progress_at = a.progress_at
FROM "public"."dw_etl_run_attempts" a
WHERE a.attempt_id = i.current_attempt_id AND a.status = 'RUNNING';
DELETE FROM "public"."dw_etl_run_attempts" a
USING "public"."dw_etl_run_items" i
WHERE a.attempt_id = i.current_attempt_id AND a.status = 'RUNNING';
-- A RUNNING attempt no item holds has no worker left to end it.
UPDATE "public"."dw_etl_run_attempts"
SET status = 'FAILED', error_category = 'SYSTEM', error_message = 'worker lost', ended_by = 'reconciler',
    ended_at = now(), duration_ms = (extract(epoch FROM now() - started_at) * 1000)::bigint
WHERE status = 'RUNNING';
-- Room on each page for a claim's HOT update and an end's new row version (new pages only).
ALTER TABLE "public"."dw_etl_run_items" SET (fillfactor = 50);
