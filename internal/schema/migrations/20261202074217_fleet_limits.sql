-- Modify "dw_etl_jobs" table
ALTER TABLE "public"."dw_etl_jobs" ADD CONSTRAINT "dw_etl_jobs_max_running_items_check" CHECK (max_running_items >= 0), ADD COLUMN "max_running_items" integer NOT NULL DEFAULT 0;
-- Set comment to column: "max_running_items" on table: "dw_etl_jobs"
COMMENT ON COLUMN "public"."dw_etl_jobs"."max_running_items" IS 'The most items of the job running at once across the fleet (a Redis semaphore); 0 means no limit.';
-- Create "dw_etl_sources" table
CREATE TABLE "public"."dw_etl_sources" (
  "source" text NOT NULL,
  "rate" integer NOT NULL,
  "burst" integer NOT NULL,
  "period_ms" bigint NOT NULL DEFAULT 1000,
  "created_at" timestamptz NOT NULL DEFAULT now(),
  "updated_at" timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY ("source"),
  CONSTRAINT "dw_etl_sources_burst_check" CHECK (burst >= 1),
  CONSTRAINT "dw_etl_sources_period_ms_check" CHECK (period_ms >= 1),
  CONSTRAINT "dw_etl_sources_rate_check" CHECK (rate >= 1)
);
-- Set comment to table: "dw_etl_sources"
COMMENT ON TABLE "public"."dw_etl_sources" IS 'Named sources (jobs.yaml sources:): one request rate shared by every worker and job naming the source in its config.';
-- Set comment to column: "rate" on table: "dw_etl_sources"
COMMENT ON COLUMN "public"."dw_etl_sources"."rate" IS 'Requests allowed per period_ms, steadily (GCRA in Redis).';
-- Set comment to column: "burst" on table: "dw_etl_sources"
COMMENT ON COLUMN "public"."dw_etl_sources"."burst" IS 'Requests allowed at once (the bucket''s size); the steady rate refills it.';
