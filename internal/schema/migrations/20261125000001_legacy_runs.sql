-- The shape dw_etl_runs had before etlexec (run_id, job_id, status, started_at, ended_at,
-- error_message). On a database that already has it, this file changes nothing and the next
-- file upgrades the table in place; on an empty database it lays the same starting point, so
-- both paths run the same upgrade.
CREATE TABLE IF NOT EXISTS "public"."dw_etl_runs" (
  "run_id" uuid NOT NULL,
  "job_id" text NOT NULL,
  "status" text NOT NULL,
  "started_at" timestamptz NULL,
  "ended_at" timestamptz NULL,
  "error_message" text NULL,
  PRIMARY KEY ("run_id")
);
