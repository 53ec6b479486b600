-- Modify "dw_etl_run_items" table
ALTER TABLE "public"."dw_etl_run_items" ADD COLUMN "attempt_limit" integer NULL;
-- Set comment to column: "attempt_limit" on table: "dw_etl_run_items"
COMMENT ON COLUMN "public"."dw_etl_run_items"."attempt_limit" IS 'Attempts allowed in total; NULL means the job''s max_attempts. A rerun grants max_attempts more.';
