#!/usr/bin/env bash
# make demo: the main job end to end on local services.
#  1. services up (scripts/services.sh), a fresh etlexec_demo database, migrate
#  2. apply examples/jobs.yaml, start two worker processes
#  3. trigger demo_orders over 50 param sets (one duplicate) and wait: summary
#  4. trigger it again: cursors resume, far fewer records read
#  5. dry run over 10 new param sets: would-be counts shown, target rows and cursors unchanged
#  6. stop the workers (SIGTERM, graceful)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
eval "$(scripts/services.sh up)"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
sql() { psql "$DEMO_URL" -XAtq -c "$1"; }

say "building binaries"
mkdir -p bin .dev/demo
go build -o bin/ ./cmd/enqueuer ./cmd/worker

# A database of its own, so the demo can be run again from a clean slate.
server=${DATABASE_URL%%\?*}; server=${server%/*}
query=""; [[ "$DATABASE_URL" == *\?* ]] && query="?${DATABASE_URL#*\?}"
DEMO_URL="$server/etlexec_demo$query"
psql "$DATABASE_URL" -XAtq -c "DROP DATABASE IF EXISTS etlexec_demo WITH (FORCE)" -c "CREATE DATABASE etlexec_demo" >/dev/null
export DATABASE_URL=$DEMO_URL
# The CLI logs only warnings here so the summaries stay readable; workers log at info to files.
export ETL_LOG_LEVEL=${ETL_LOG_LEVEL:-warn}

say "migrate"
bin/enqueuer migrate | grep -v "log partition" || true
bin/enqueuer migrate status

say "apply job definitions (examples/jobs.yaml)"
bin/enqueuer jobs apply -f examples/jobs.yaml
bin/enqueuer jobs list

say "start two workers (logs in .dev/demo/worker-*.log)"
pids=()
for i in 1 2; do
  ETL_LOG_LEVEL=info ETL_WORKER_ID=demo-worker-$i ETL_HTTP_ADDR= ETL_CONCURRENCY=10 ETL_SHUTDOWN_TIMEOUT=10s \
    bin/worker >".dev/demo/worker-$i.log" 2>&1 &
  pids+=($!)
done
stop_workers() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop_workers EXIT

status=0
say "run 1: demo_orders over examples/params-50.jsonl (50 regions + 1 duplicate; every 10th source fails once)"
bin/enqueuer trigger demo_orders --params-file examples/params-50.jsonl --wait || status=$?
echo "target rows in demo_orders: $(sql 'SELECT count(*) FROM demo_orders')"
echo "cursors stored: $(sql "SELECT count(*) FROM dw_etl_incremental_cursors WHERE job_id = 'demo_orders'")"
echo "attempts that were retried: $(sql "SELECT count(*) FROM dw_etl_run_attempts WHERE backoff_ms IS NOT NULL")"

say "run 2: the same param sets again; each item starts from its stored cursor"
bin/enqueuer trigger demo_orders --params-file examples/params-50.jsonl --wait || status=$?
sql "SELECT 'records read per run: ' || string_agg(records_read::text, ' -> ' ORDER BY started_at) FROM dw_etl_runs WHERE job_id = 'demo_orders' AND NOT dry_run"

say "dry run: 10 new regions (no cursor yet); nothing may be kept"
before_rows=$(sql 'SELECT count(*) FROM demo_orders')
before_cursors=$(sql "SELECT md5(coalesce(string_agg(param_hash || cursor_value::text, ',' ORDER BY param_hash), '')) FROM dw_etl_incremental_cursors")
bin/enqueuer trigger demo_orders --params-file examples/params-new-regions.json --dry-run --wait || status=$?
after_rows=$(sql 'SELECT count(*) FROM demo_orders')
after_cursors=$(sql "SELECT md5(coalesce(string_agg(param_hash || cursor_value::text, ',' ORDER BY param_hash), '')) FROM dw_etl_incremental_cursors")
echo "target rows before/after: $before_rows / $after_rows"
echo "cursor checksum before/after: $before_cursors / $after_cursors"
echo "dry-run log lines stored: $(sql "SELECT count(*) FROM dw_etl_run_logs l JOIN dw_etl_runs r USING (run_id) WHERE r.dry_run")"
if [[ "$before_rows" != "$after_rows" || "$before_cursors" != "$after_cursors" ]]; then
  echo "demo: the dry run changed the target or the cursors" >&2
  status=1
fi

say "stop workers"
stop_workers
trap - EXIT
echo "workers stopped. Explore: DATABASE_URL=$DEMO_URL bin/enqueuer jobs list"
exit $status
