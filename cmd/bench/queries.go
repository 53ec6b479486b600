package main

// bench queries: seed a 30-day run history (plus older history outside the window) into a
// database of its own, then time every history query through the very store functions the CLI
// and the JSON API call, and show the plan Postgres really uses for each — the plan of the
// prepared statement after it has run often enough for the plan cache to settle, because that
// (generic or custom) is what a long-lived pool executes.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

func init() {
	commands["queries"] = command{
		summary: "seed a 30-day history in etlexec_bench, time every history query, print p50/p95/p99 and plans",
		run:     queries,
	}
}

// benchDatabase is created (dropped first) by this command and by nothing else.
const benchDatabase = "etlexec_bench"

// goalP95 is what we aim for; the requirement is p95 < 100 ms for the recent 30 days.
const goalP95 = 10 * time.Millisecond

// queryScale sizes the seeded history. Runs are in the 30-day window; a tenth more is older.
// Items average ~10 a run (1% of runs have 500), attempts ~1 an item, log lines 3 an attempt.
type queryScale struct {
	jobs, runs, cursorsPerJob int
}

var queryScales = map[string]queryScale{
	"small":  {jobs: 50, runs: 10_000, cursorsPerJob: 10},
	"medium": {jobs: 500, runs: 100_000, cursorsPerJob: 10},
	"full":   {jobs: 5_000, runs: 1_000_000, cursorsPerJob: 10},
}

func queries(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench queries", flag.ContinueOnError)
	scaleName := fs.String("scale", "small", "small (10k runs, 100k items and attempts, 300k log lines over 50 jobs), medium (10×) or full (100×)")
	n := fs.Int("n", 1000, "timed executions per query (at least 1000 for the report)")
	reuse := fs.Bool("reuse", false, "keep an "+benchDatabase+" already seeded at this scale (for iterating on queries)")
	plans := fs.Bool("plans", true, "print EXPLAIN (ANALYZE, BUFFERS) of one execution of each query")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sc, ok := queryScales[*scaleName]
	if !ok {
		return fmt.Errorf("-scale %q: want small, medium or full", *scaleName)
	}
	if *n < 1 {
		return fmt.Errorf("-n %d: want at least 1", *n)
	}
	fmt.Printf("bench queries: scale %s (%d jobs, %d runs in 30 days + %d older) on %s\n",
		*scaleName, sc.jobs, sc.runs, sc.runs/10, benchDatabase)
	total := time.Now()

	u, seeded, err := openBenchDatabase(ctx, *scaleName, *reuse)
	if err != nil {
		return err
	}
	if !seeded {
		if err := seedHistory(ctx, u, *scaleName, sc); err != nil {
			return err
		}
	}

	tracer := &statementTracer{}
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		return err
	}
	cfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	st := store.New(pool)

	var (
		cases []*queryCase
		rep   int // the iteration whose plans are shown
	)
	if err := phase("sample recent jobs and runs", func() error {
		cases, rep, err = historyCases(ctx, st, *n)
		return err
	}); err != nil {
		return err
	}
	results := make([]caseResult, 0, len(cases))
	if err := phase(fmt.Sprintf("run %d queries × %d", len(cases), *n), func() error {
		for _, c := range cases {
			r, err := c.measure(ctx, *n)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			results = append(results, r)
		}
		return nil
	}); err != nil {
		return err
	}

	fmt.Printf("\ngoal: p95 < %d ms (requirement < 100 ms)\n", goalP95.Milliseconds())
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "query\tn\tp50 ms\tp95 ms\tp99 ms\tmax ms\trows/call\tgoal\t")
	for _, r := range results {
		mark := "PASS"
		if r.p95 >= goalP95 {
			mark = "MISS"
		}
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.1f\t%s\t\n", r.name, r.n, ms(r.p50), ms(r.p95), ms(r.p99), ms(r.max), r.rows, mark)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	if *plans {
		fmt.Println("\nplans: EXPLAIN (ANALYZE, BUFFERS) of one execution of each query, as the prepared statement runs after 5 executions")
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			return err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		for _, c := range cases {
			if err := c.explain(ctx, conn, tracer, rep); err != nil {
				return fmt.Errorf("explain %s: %w", c.name, err)
			}
		}
	}
	fmt.Printf("\ndone in %.1fs\n", time.Since(total).Seconds())
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// openBenchDatabase recreates and migrates the bench database, or, with reuse, keeps one that
// was fully seeded at this scale (the database comment records that).
func openBenchDatabase(ctx context.Context, scale string, reuse bool) (u string, seeded bool, err error) {
	marker := "etlexec bench queries scale=" + scale
	if reuse {
		if u, err := withDatabase(serverURL(), benchDatabase); err == nil {
			if c, err := pgx.Connect(ctx, u); err == nil {
				var comment *string
				_ = c.QueryRow(ctx, `SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()`).Scan(&comment)
				c.Close(ctx)
				if comment != nil && strings.HasPrefix(*comment, marker+" ") {
					fmt.Printf("reusing %s (%s)\n", benchDatabase, *comment)
					return u, true, nil
				}
			}
		}
	}
	err = phase("create and migrate "+benchDatabase, func() error {
		u, err = recreateDatabase(ctx, benchDatabase)
		return err
	})
	return u, false, err
}

// seedIndexes are the secondary indexes of the bulk tables; they are dropped during the load and
// rebuilt afterwards (one sort each instead of millions of inserts into them). Primary keys stay.
const seedIndexesSQL = `SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
WHERE t.relnamespace = 'public'::regnamespace
  AND t.relname IN ('dw_etl_runs', 'dw_etl_run_items', 'dw_etl_run_attempts', 'dw_etl_run_logs')
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
ORDER BY 1`

// uuid7SQL makes time-ordered ids like uuid.NewV7: 48 bits of Unix milliseconds, then random.
const uuid7SQL = `CREATE FUNCTION pg_temp.uuid7(ts timestamptz) RETURNS uuid LANGUAGE sql VOLATILE AS $$
  SELECT (lpad(to_hex(floor(extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '7'
    || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid
$$`

// The seed statements take the first nargs of: $1 jobs, $2 runs in the window, $3 the
// reference now.
var seedSteps = []struct {
	name  string
	nargs int
	sql   string
}{
	{"seed jobs", 1, `INSERT INTO dw_etl_jobs (job_id, kind, description, supports_params, supports_incremental, strategy, schedule)
SELECT 'job_' || lpad(j::text, 5, '0'), 'synthetic', 'bench job ' || j, true, j % 2 = 0,
  CASE WHEN j % 2 = 0 THEN 'modified_date' ELSE 'none' END, '*/15 * * * *'
FROM generate_series(1, $1::int) j`},
	// Run i (1 newest) of the window starts (i-0.5)/N of 30 days ago and belongs to job i % J,
	// so every job has N/J runs evenly spread; the N/10 older runs span 31..80 days ago.
	{"seed runs", 3, `INSERT INTO dw_etl_runs (run_id, job_id, status, error_category, error_message, dry_run, trigger,
  params, exclusive, created_at, started_at, enqueued_at, ended_at, duration_ms, attempt_count, item_count,
  items_succeeded, items_failed, items_skipped, items_cancelled, records_read, records_written, page_count, updated_at)
SELECT pg_temp.uuid7(g.ts), g.job_id, g.status,
  CASE WHEN g.status IN ('FAILED', 'PARTIAL_SUCCESS') THEN (ARRAY['API', 'DB', 'DATA', 'SYSTEM'])[1 + g.h % 4] ELSE 'NONE' END,
  CASE g.status WHEN 'FAILED' THEN 'all items failed' WHEN 'PARTIAL_SUCCESS' THEN 'some items failed'
    WHEN 'SKIPPED' THEN 'previous run still active' WHEN 'CANCELLED' THEN 'cancelled by operator' END,
  g.h % 10 = 0, CASE WHEN g.h % 5 = 0 THEN 'manual' ELSE 'schedule' END,
  jsonb_build_object('window', '1d'), false, g.ts, g.ts, g.ts + interval '1 second',
  CASE WHEN g.status <> 'RUNNING' THEN g.ts + g.dur END,
  CASE WHEN g.status <> 'RUNNING' THEN (extract(epoch FROM g.dur) * 1000)::bigint END,
  g.items, g.items,
  CASE g.status WHEN 'SUCCESS' THEN g.items WHEN 'PARTIAL_SUCCESS' THEN g.items - g.items / 3
    WHEN 'CANCELLED' THEN g.items - g.items / 2 ELSE 0 END,
  CASE g.status WHEN 'FAILED' THEN g.items WHEN 'PARTIAL_SUCCESS' THEN g.items / 3 ELSE 0 END,
  0, CASE g.status WHEN 'CANCELLED' THEN g.items / 2 ELSE 0 END,
  g.items * 1000, g.items * 990, g.items * 3, g.ts
FROM (
  SELECT a.*, CASE WHEN a.status = 'SKIPPED' THEN 0 WHEN a.i % 100 = 0 THEN 500 ELSE 1 + (a.h / 100) % 9 END AS items
  FROM (
    SELECT i, 'job_' || lpad((1 + i % $1::int)::text, 5, '0') AS job_id, x.ts, x.h,
      CASE WHEN i <= greatest($1::int / 10, 1) THEN 'RUNNING' WHEN x.h % 100 < 85 THEN 'SUCCESS'
        WHEN x.h % 100 < 90 THEN 'FAILED' WHEN x.h % 100 < 95 THEN 'PARTIAL_SUCCESS'
        WHEN x.h % 100 < 98 THEN 'SKIPPED' ELSE 'CANCELLED' END AS status,
      (x.h % 600 + 5) * interval '1 second' AS dur
    FROM generate_series(1, $2::int + $2::int / 10) i,
    LATERAL (SELECT abs(hashint8(i)::bigint) AS h,
      CASE WHEN i <= $2::int THEN $3::timestamptz - ((i - 0.5) / $2::int)::float8 * interval '30 days'
        ELSE $3::timestamptz - interval '31 days' - ((i - $2::int) / ($2::int / 10.0))::float8 * interval '49 days' END AS ts) x
  ) a
) g`},
	// Items follow their run's status: PARTIAL_SUCCESS fails every third item, CANCELLED every
	// second, RUNNING runs have items pending, running and done. Attempts: 1, or 2 for one
	// success in 20 (a retried failure), 3 for a failed item, 0 when it never ran.
	{"seed items", 0, `INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash, status, error_category,
  error_message, attempts, task_id, started_at, ended_at, duration_ms, records_read, records_written, page_count,
  cursor_start, cursor_end, cursor_note)
SELECT r.run_id, n, jsonb_build_object('shard', n, 'region', 'eu-' || n % 7),
  encode(sha256(convert_to(r.job_id || ':' || n, 'UTF8')), 'hex'), s.st,
  CASE WHEN s.st = 'FAILED' THEN (ARRAY['API', 'DB', 'DATA', 'SYSTEM'])[1 + n % 4] ELSE 'NONE' END,
  CASE WHEN s.st = 'FAILED' THEN 'upstream timeout after 30s' END,
  CASE s.st WHEN 'SUCCESS' THEN CASE WHEN n % 20 = 7 THEN 2 ELSE 1 END WHEN 'FAILED' THEN 3 WHEN 'RUNNING' THEN 1 ELSE 0 END,
  'etl:' || r.run_id || ':' || n || ':0',
  CASE WHEN s.st IN ('SUCCESS', 'FAILED', 'RUNNING') THEN r.started_at + (n % 60) * interval '1 second' END,
  CASE WHEN s.st IN ('SUCCESS', 'FAILED', 'CANCELLED') THEN r.started_at + (n % 60 + 5 + n % 50) * interval '1 second' END,
  CASE WHEN s.st IN ('SUCCESS', 'FAILED') THEN (5 + n % 50) * 1000 END,
  CASE WHEN s.st = 'SUCCESS' THEN 1000 ELSE 0 END, CASE WHEN s.st = 'SUCCESS' THEN 990 ELSE 0 END,
  CASE WHEN s.st = 'SUCCESS' THEN 3 ELSE 0 END,
  r.started_at - interval '1 day', r.started_at,
  CASE WHEN s.st = 'FAILED' THEN 'cursor held: item failed' WHEN s.st = 'SUCCESS' AND n % 4 = 0 THEN 'no new rows' END
FROM dw_etl_runs r, generate_series(1, r.item_count) n,
LATERAL (SELECT CASE r.status WHEN 'SUCCESS' THEN 'SUCCESS' WHEN 'FAILED' THEN 'FAILED'
    WHEN 'PARTIAL_SUCCESS' THEN CASE WHEN n % 3 = 0 THEN 'FAILED' ELSE 'SUCCESS' END
    WHEN 'CANCELLED' THEN CASE WHEN n % 2 = 0 THEN 'CANCELLED' ELSE 'SUCCESS' END
    ELSE CASE n % 3 WHEN 0 THEN 'RUNNING' WHEN 1 THEN 'PENDING' ELSE 'SUCCESS' END END AS st) s`},
	// Every attempt but an item's last failed and was retried after an exponential backoff.
	{"seed attempts", 0, `INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt, status,
  error_category, error_message, error_detail, backoff_ms, next_retry_at, scheduled_at, started_at, heartbeat_at,
  ended_at, duration_ms, records_read, records_written, page_count, worker_id)
SELECT pg_temp.uuid7(x.ts), i.run_id, i.item_no, a, x.status,
  CASE WHEN x.status = 'FAILED' THEN (ARRAY['API', 'DB', 'DATA', 'SYSTEM'])[1 + (i.item_no + a) % 4] ELSE 'NONE' END,
  CASE WHEN x.status = 'FAILED' THEN 'upstream timeout after 30s' END,
  CASE WHEN x.status = 'FAILED' THEN jsonb_build_object('http_status', 504, 'endpoint', '/v1/orders', 'attempt', a) END,
  CASE WHEN a < i.attempts THEN (1000 * 2 ^ a)::bigint END,
  CASE WHEN a < i.attempts THEN x.ts + interval '5 seconds' + (1000 * 2 ^ a) * interval '1 millisecond' END,
  x.ts - interval '1 second', x.ts,
  CASE WHEN x.status = 'RUNNING' THEN x.ts ELSE x.ts + interval '5 seconds' END,
  CASE WHEN x.status <> 'RUNNING' THEN x.ts + interval '5 seconds' END,
  CASE WHEN x.status <> 'RUNNING' THEN 5000 END,
  CASE WHEN x.status = 'SUCCESS' THEN 1000 ELSE 0 END, CASE WHEN x.status = 'SUCCESS' THEN 990 ELSE 0 END,
  CASE WHEN x.status = 'SUCCESS' THEN 3 ELSE 0 END, 'worker-' || i.item_no % 8
FROM dw_etl_run_items i, generate_series(1, i.attempts) a,
LATERAL (SELECT i.started_at + (a - 1) * interval '30 seconds' AS ts,
  CASE WHEN a < i.attempts THEN 'FAILED' ELSE i.status END AS status) x`},
	// Three lines an attempt; request_id is the rare key a fields search looks for.
	{"seed log lines", 0, `INSERT INTO dw_etl_run_logs (ts, run_id, attempt_id, job_id, item_no, level, message, fields)
SELECT a.started_at + k * interval '1 second', a.run_id, a.attempt_id, r.job_id, a.item_no,
  CASE WHEN k = 3 AND a.status = 'FAILED' THEN 'error' WHEN k = 2 AND a.item_no % 10 = 0 THEN 'warn' ELSE 'info' END,
  CASE k WHEN 1 THEN 'item claimed'
    WHEN 2 THEN CASE WHEN a.item_no % 10 = 0 THEN 'slow page: request took 12s' ELSE 'page loaded' END
    ELSE CASE a.status WHEN 'FAILED' THEN 'item failed: upstream timeout after 30s' WHEN 'RUNNING' THEN 'page loaded'
      ELSE 'item finished' END END,
  jsonb_build_object('page', k, 'rows', (a.item_no * 37 + k) % 1000, 'request_id', substr(md5(a.attempt_id::text || k), 1, 16))
FROM dw_etl_run_attempts a JOIN dw_etl_runs r ON r.run_id = a.run_id, generate_series(1, 3) k`},
}

// cursorsSQL runs after the indexes are back: it looks up each job's newest run. $1: now, $2:
// cursors per job.
const cursorsSQL = `INSERT INTO dw_etl_incremental_cursors (job_id, param_hash, params, strategy, cursor_value, last_run_id, updated_at)
SELECT j.job_id, encode(sha256(convert_to(j.job_id || ':' || n, 'UTF8')), 'hex'),
  jsonb_build_object('shard', n, 'region', 'eu-' || n % 7), 'modified_date', $1::timestamptz - n * interval '1 minute',
  lr.run_id, $1::timestamptz
FROM dw_etl_jobs j, generate_series(1, $2::int) n,
LATERAL (SELECT run_id FROM dw_etl_runs x WHERE x.job_id = j.job_id ORDER BY x.started_at DESC LIMIT 1) lr
WHERE j.supports_incremental`

func seedHistory(ctx context.Context, u, scaleName string, sc queryScale) error {
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var now time.Time
	if err := conn.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
		return err
	}
	for _, q := range []string{
		`SET synchronous_commit = off`,
		`SET maintenance_work_mem = '512MB'`,
		`SET work_mem = '64MB'`,
		uuid7SQL,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	// Seeded rows are consistent by construction; skipping the foreign-key triggers (superuser
	// only) saves a lookup per row. Without the privilege the load is just slower.
	if _, err := conn.Exec(ctx, `SET session_replication_role = replica`); err != nil {
		fmt.Println("note: cannot skip foreign-key checks during the load (not superuser); seeding is slower")
	}
	type index struct{ name, def string }
	var indexes []index
	if err := phase("drop secondary indexes", func() error {
		rows, err := conn.Query(ctx, seedIndexesSQL)
		if err != nil {
			return err
		}
		indexes, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (index, error) {
			var i index
			return i, r.Scan(&i.name, &i.def)
		})
		if err != nil {
			return err
		}
		for _, i := range indexes {
			if _, err := conn.Exec(ctx, "DROP INDEX "+i.name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	for _, s := range seedSteps {
		if err := phase(s.name, func() error {
			tag, err := conn.Exec(ctx, s.sql, []any{sc.jobs, sc.runs, now}[:s.nargs]...)
			if err == nil {
				fmt.Printf("%10d rows ", tag.RowsAffected())
			}
			return err
		}); err != nil {
			return err
		}
	}
	if err := phase(fmt.Sprintf("rebuild %d indexes", len(indexes)), func() error {
		for _, i := range indexes {
			// pg_get_indexdef says ON ONLY for a partitioned table's index, which would build an
			// invalid parent index and none on the partitions.
			def := strings.Replace(i.def, " ON ONLY ", " ON ", 1)
			if _, err := conn.Exec(ctx, def); err != nil {
				return fmt.Errorf("%s: %w", def, err)
			}
		}
		var invalid []string
		rows, err := conn.Query(ctx, `SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
			WHERE c.relnamespace = 'public'::regnamespace AND NOT i.indisvalid`)
		if err != nil {
			return err
		}
		if invalid, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		if len(invalid) > 0 {
			return fmt.Errorf("invalid indexes after the rebuild: %v", invalid)
		}
		return nil
	}); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `SET session_replication_role = DEFAULT`); err != nil {
		return err
	}
	if err := phase("seed cursors", func() error {
		tag, err := conn.Exec(ctx, cursorsSQL, now, sc.cursorsPerJob)
		if err == nil {
			fmt.Printf("%10d rows ", tag.RowsAffected())
		}
		return err
	}); err != nil {
		return err
	}
	// VACUUM sets hint bits and the visibility map as autovacuum would have long since done on
	// a live system, so the timings are not of a freshly loaded, never-vacuumed table.
	if err := phase("vacuum analyze", func() error {
		_, err := conn.Exec(ctx, `VACUUM (ANALYZE) dw_etl_jobs, dw_etl_runs, dw_etl_run_items, dw_etl_run_attempts,
			dw_etl_run_logs, dw_etl_incremental_cursors`)
		return err
	}); err != nil {
		return err
	}
	var sizes string
	if err := conn.QueryRow(ctx, `SELECT string_agg(format('%s %s', relname, pg_size_pretty(pg_total_relation_size(oid))), ', ' ORDER BY relname)
		FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND relname LIKE 'dw_etl_%'`).Scan(&sizes); err != nil {
		return err
	}
	fmt.Println("sizes:", sizes)
	_, err = conn.Exec(ctx, fmt.Sprintf("COMMENT ON DATABASE %s IS '%s'", pgx.Identifier{benchDatabase}.Sanitize(),
		fmt.Sprintf("etlexec bench queries scale=%s seeded=%s", scaleName, now.UTC().Format(time.RFC3339))))
	return err
}

// queryCase is one history query with its inputs for every iteration.
type queryCase struct {
	name string
	// call runs iteration i through the store and returns how many rows it produced and a
	// description of its input (for the plan header).
	call func(ctx context.Context, i int) (rows int, input string, err error)
}

type caseResult struct {
	name               string
	n                  int
	p50, p95, p99, max time.Duration
	rows               float64
}

// warmup executions are not timed: they prepare the statements on the pool's connections.
const warmup = 20

func (c *queryCase) measure(ctx context.Context, n int) (caseResult, error) {
	for i := range warmup {
		if _, _, err := c.call(ctx, n+i); err != nil {
			return caseResult{}, err
		}
	}
	d := make([]time.Duration, n)
	rows := 0
	for i := range n {
		start := time.Now()
		k, _, err := c.call(ctx, i)
		d[i] = time.Since(start)
		if err != nil {
			return caseResult{}, err
		}
		rows += k
	}
	slices.Sort(d)
	pct := func(p float64) time.Duration { return d[min(n-1, int(p*float64(n)))] }
	return caseResult{name: c.name, n: n, p50: pct(0.50), p95: pct(0.95), p99: pct(0.99), max: d[n-1],
		rows: float64(rows) / float64(n)}, nil
}

// explain runs the case once more, capturing the statements the store sent, and shows each one's
// plan the way a long-lived connection runs it: prepared, executed five times (after which the
// plan cache may switch to a generic plan), then EXPLAIN (ANALYZE, BUFFERS) EXECUTE.
func (c *queryCase) explain(ctx context.Context, conn *pgx.Conn, tracer *statementTracer, i int) error {
	stmts := tracer.capture(func(cctx context.Context) error {
		_, _, err := c.call(cctx, i)
		return err
	}, ctx)
	_, input, _ := c.call(ctx, i)
	fmt.Printf("\n=== %s  %s\n", c.name, input)
	for k, s := range stmts {
		name := fmt.Sprintf("bench_explain_%d", k)
		sd, err := conn.Prepare(ctx, name, s.sql)
		if err != nil {
			return err
		}
		for range 5 {
			if _, err := conn.Exec(ctx, name, s.args...); err != nil {
				return err
			}
		}
		lits := make([]string, len(s.args))
		for j, a := range s.args {
			if lits[j], err = sqlLiteral(conn, sd.ParamOIDs[j], a); err != nil {
				return fmt.Errorf("argument $%d: %w", j+1, err)
			}
		}
		var generic0, generic1 int64
		_ = conn.QueryRow(ctx, `SELECT generic_plans FROM pg_prepared_statements WHERE name = $1`, name).Scan(&generic0)
		execute := "EXECUTE " + name
		if len(lits) > 0 {
			execute += "(" + strings.Join(lits, ", ") + ")"
		}
		rows, err := conn.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+execute)
		if err != nil {
			return err
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		_ = conn.QueryRow(ctx, `SELECT generic_plans FROM pg_prepared_statements WHERE name = $1`, name).Scan(&generic1)
		kind := "custom plan"
		if generic1 > generic0 {
			kind = "generic plan"
		}
		fmt.Printf("--- statement %d/%d (%s): %s\n", k+1, len(stmts), kind, oneLine(s.sql, 110))
		for _, l := range lines {
			fmt.Println("    " + l)
		}
		if err := conn.Deallocate(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

func oneLine(sql string, n int) string {
	s := strings.Join(strings.Fields(sql), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// sqlLiteral renders a bind argument as a typed SQL literal, in Postgres' own text format.
func sqlLiteral(conn *pgx.Conn, oid uint32, v any) (string, error) {
	var typ string
	if err := conn.QueryRow(context.Background(), `SELECT $1::oid::regtype::text`, oid).Scan(&typ); err != nil {
		return "", err
	}
	buf, err := conn.TypeMap().Encode(oid, pgx.TextFormatCode, v, nil)
	if err != nil {
		return "", err
	}
	if buf == nil {
		return "NULL::" + typ, nil
	}
	return "'" + strings.ReplaceAll(string(buf), "'", "''") + "'::" + typ, nil
}

// statementTracer records the statements (SQL and arguments) sent under a capturing context.
type statementTracer struct {
	mu    sync.Mutex
	stmts []capturedStatement
}

type capturedStatement struct {
	sql  string
	args []any
}

type captureKey struct{}

func (t *statementTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if ctx.Value(captureKey{}) != nil {
		t.mu.Lock()
		t.stmts = append(t.stmts, capturedStatement{sql: d.SQL, args: d.Args})
		t.mu.Unlock()
	}
	return ctx
}

func (t *statementTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (t *statementTracer) capture(fn func(ctx context.Context) error, ctx context.Context) []capturedStatement {
	t.mu.Lock()
	t.stmts = nil
	t.mu.Unlock()
	_ = fn(context.WithValue(ctx, captureKey{}, true))
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.stmts)
}

// historyCases samples recent jobs and runs and builds one case per history query the CLI and
// the API serve. Inputs are drawn per iteration from the sample, so the timings cover many runs
// (1% of them with 500 items), not one hot row. rep is an iteration with a typical failed run
// (5..20 items) and an incremental job, whose plans are worth showing.
func historyCases(ctx context.Context, st *store.Store, n int) (cases []*queryCase, rep int, err error) {
	pool := st.Pool()
	var now time.Time
	if err := pool.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
		return nil, 0, err
	}
	rows, err := pool.Query(ctx, `SELECT run_id, r.job_id, r.status, r.item_count, j.supports_incremental
		FROM dw_etl_runs r JOIN dw_etl_jobs j ON j.job_id = r.job_id
		WHERE r.started_at >= now() - interval '30 days' ORDER BY random() LIMIT $1`, n)
	if err != nil {
		return nil, 0, err
	}
	type sampled struct {
		runID       uuid.UUID
		jobID       string
		status      string
		items       int32
		incremental bool
	}
	sample, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sampled, error) {
		var s sampled
		return s, r.Scan(&s.runID, &s.jobID, &s.status, &s.items, &s.incremental)
	})
	if err != nil {
		return nil, 0, err
	}
	if len(sample) == 0 {
		return nil, 0, errors.New("no runs in the last 30 days: seed first")
	}
	// Jobs are drawn independently of runs (a job's recent runs are what `runs --job` pages).
	rng := rand.New(rand.NewPCG(1, 2))
	jobs := make([]string, len(sample))
	for i := range jobs {
		jobs[i] = sample[rng.IntN(len(sample))].jobID
	}
	rep = max(0, slices.IndexFunc(sample, func(s sampled) bool {
		st := runstate.Status(s.status)
		return (st == runstate.StatusFailed || st == runstate.StatusPartialSuccess) && s.items >= 5 && s.items <= 20
	}))
	if k := slices.IndexFunc(sample, func(s sampled) bool { return s.incremental }); k >= 0 {
		jobs[rep] = sample[k].jobID
	}
	runAt := func(i int) sampled { return sample[i%len(sample)] }
	jobAt := func(i int) string { return jobs[i%len(jobs)] }
	week := now.Add(-7 * 24 * time.Hour)
	f := false

	// runs.job.page2 needs the Next token of a first page: fetch it for every job up front.
	page2 := make([]store.RunFilter, len(sample))
	for i := range sample {
		fl := store.RunFilter{JobID: jobAt(i), Limit: 20}
		p, err := st.HistoryRuns(ctx, fl)
		if err != nil {
			return nil, 0, err
		}
		fl.After = p.Next
		page2[i] = fl
	}
	recentPage2 := store.RunFilter{Limit: 50}
	p, err := st.HistoryRuns(ctx, recentPage2)
	if err != nil {
		return nil, 0, err
	}
	recentPage2.After = p.Next

	runs := func(name string, filter func(i int) store.RunFilter) *queryCase {
		return &queryCase{name: name, call: func(ctx context.Context, i int) (int, string, error) {
			fl := filter(i)
			p, err := st.HistoryRuns(ctx, fl)
			return len(p.Items), describe(fl), err
		}}
	}
	items := func(name string, filter func(i int) store.ItemFilter) *queryCase {
		return &queryCase{name: name, call: func(ctx context.Context, i int) (int, string, error) {
			fl := filter(i)
			p, err := st.HistoryItems(ctx, fl)
			return len(p.Items), describe(fl), err
		}}
	}
	attempts := func(name string, filter func(i int) store.AttemptFilter) *queryCase {
		return &queryCase{name: name, call: func(ctx context.Context, i int) (int, string, error) {
			fl := filter(i)
			p, err := st.HistoryAttempts(ctx, fl)
			return len(p.Items), describe(fl), err
		}}
	}
	logs := func(name string, filter func(i int) store.LogFilter) *queryCase {
		return &queryCase{name: name, call: func(ctx context.Context, i int) (int, string, error) {
			fl := filter(i)
			p, err := st.HistoryLogs(ctx, fl)
			return len(p.Items), describe(fl), err
		}}
	}
	one := int32(1)
	return []*queryCase{
		runs("runs.job", func(i int) store.RunFilter { return store.RunFilter{JobID: jobAt(i)} }),
		runs("runs.job.filtered", func(i int) store.RunFilter {
			return store.RunFilter{JobID: jobAt(i), Status: runstate.Strings(runstate.StatusFailed, runstate.StatusPartialSuccess), DryRun: &f, Since: &week}
		}),
		runs("runs.job.page2", func(i int) store.RunFilter { return page2[i%len(page2)] }),
		runs("runs.recent", func(int) store.RunFilter { return store.RunFilter{} }),
		runs("runs.recent.page2", func(int) store.RunFilter { return recentPage2 }),
		runs("runs.recent.failed", func(int) store.RunFilter { return store.RunFilter{Status: runstate.Strings(runstate.StatusFailed)} }),
		runs("runs.recent.filtered", func(int) store.RunFilter {
			return store.RunFilter{Status: runstate.Strings(runstate.StatusFailed, runstate.StatusCancelled), DryRun: &f, Since: &week}
		}),
		{name: "run.show", call: func(ctx context.Context, i int) (int, string, error) {
			d, err := st.HistoryRun(ctx, runAt(i).runID)
			return len(d.Items), "run " + runAt(i).runID.String(), err
		}},
		items("items", func(i int) store.ItemFilter { return store.ItemFilter{RunID: runAt(i).runID} }),
		items("items.failed", func(i int) store.ItemFilter {
			return store.ItemFilter{RunID: runAt(i).runID, Status: runstate.Strings(runstate.StatusFailed)}
		}),
		items("items.param_hash", func(i int) store.ItemFilter {
			h := sha256.Sum256([]byte(runAt(i).jobID + ":1"))
			return store.ItemFilter{RunID: runAt(i).runID, ParamHash: hex.EncodeToString(h[:])}
		}),
		attempts("attempts.run", func(i int) store.AttemptFilter { return store.AttemptFilter{RunID: runAt(i).runID} }),
		attempts("attempts.item", func(i int) store.AttemptFilter {
			return store.AttemptFilter{RunID: runAt(i).runID, ItemNo: &one}
		}),
		logs("logs", func(i int) store.LogFilter { return store.LogFilter{RunID: runAt(i).runID} }),
		logs("logs.level_grep", func(i int) store.LogFilter {
			return store.LogFilter{RunID: runAt(i).runID, Level: []string{"warn", "error"}, Text: "timeout"}
		}),
		logs("logs.fields", func(i int) store.LogFilter {
			return store.LogFilter{RunID: runAt(i).runID, Fields: json.RawMessage(`{"page":2}`)}
		}),
		{name: "cursors", call: func(ctx context.Context, i int) (int, string, error) {
			// Half the jobs are incremental; an unknown-cursor job costs the existence check.
			fl := store.CursorFilter{JobID: jobAt(i)}
			p, err := st.HistoryCursors(ctx, fl)
			return len(p.Items), describe(fl), err
		}},
		{name: "jobs", call: func(ctx context.Context, _ int) (int, string, error) {
			js, _, err := st.ListJobs(ctx, "", store.JobsPageDefault)
			return len(js), "first page of jobs with their last run", err
		}},
	}, rep, nil
}

// describe prints a filter's set fields.
func describe(v any) string {
	b, _ := json.Marshal(v)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		switch x := m[k].(type) {
		case nil, string, float64:
			if x == nil || x == "" || x == float64(0) {
				continue
			}
		}
		if k == "RunID" && m[k] == uuid.Nil.String() {
			continue
		}
		vb, _ := json.Marshal(m[k])
		parts = append(parts, k+"="+string(vb))
	}
	return strings.Join(parts, " ")
}
