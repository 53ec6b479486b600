-- Modify "dw_etl_workers" table
ALTER TABLE "public"."dw_etl_workers" ADD COLUMN "held_run_ids" uuid[] NOT NULL DEFAULT '{}', ADD COLUMN "held_item_nos" integer[] NOT NULL DEFAULT '{}';
-- Set comment to column: "held_run_ids" on table: "dw_etl_workers"
COMMENT ON COLUMN "public"."dw_etl_workers"."held_run_ids" IS 'With held_item_nos, the items the worker''s attempts held at its last heartbeat: how history finds a run''s running items without an index on the items'' claim (which would make every claim a non-HOT update).';
