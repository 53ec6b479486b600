package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/kinds/httpjson"
	"github.com/etlexec/etlexec/internal/kinds/kindtest"
	"github.com/etlexec/etlexec/internal/kinds/sqlincremental"
)

func init() {
	commands["kinds"] = command{
		summary: "load the same rows with sql_incremental and http_json and through a bare COPY | COPY pipe; print rows/s and ratios",
		run:     benchKinds,
	}
}

// The two databases this command creates (dropped first, and at the end) and nothing else uses.
const (
	kindsSourceDB = "etlexec_bench_kinds_src"
	kindsTargetDB = "etlexec_bench_kinds_dst"
	// kindsSourceEnv holds the source's URL for the jobs' source_url_env.
	kindsSourceEnv = "ETL_BENCH_KINDS_SOURCE_URL"
)

// benchOrderColumns is the shape of the source table, the target and the pipe's target.
const benchOrderColumns = `(id bigint PRIMARY KEY, tenant int NOT NULL, name text NOT NULL, amount numeric(12,2),
	tags jsonb, modified_at timestamptz NOT NULL)`

func benchKinds(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench kinds", flag.ContinueOnError)
	rows := fs.Int("rows", 200_000, "source rows")
	tenants := fs.Int("tenants", 10, "tenants: one item each")
	runs := fs.Int("runs", 3, "measured runs of each load")
	keep := fs.Bool("keep", false, "keep the two databases afterwards")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the first http_json load to this file")
	interleaved := fs.Bool("interleaved", false, "store the tenants' rows interleaved (every page holds every tenant) instead of clustered by tenant")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rows < *tenants || *tenants < 1 || *runs < 1 {
		return errors.New("-rows must be at least -tenants, both and -runs at least 1")
	}
	b, err := newKindsBench(ctx, *rows, *tenants, *interleaved)
	if err != nil {
		return err
	}
	defer b.close(*keep)
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		b.profile = f
	}

	layout := "clustered by tenant"
	if *interleaved {
		layout = "interleaved"
	}
	fmt.Printf("%d rows, %d tenants (one item each, run one after another; rows %s), %d runs;\nsource and target are two databases on %s\n\n",
		*rows, *tenants, layout, *runs, redactURL(serverURL()))
	fmt.Printf("%-58s %8s %12s %8s\n", "load", "seconds", "rows/s", "ratio")
	type measure struct {
		name  string
		setup func() error // not timed
		run   func() (int64, error)
		base  bool
	}
	measures := []measure{
		{name: "baseline: COPY TO STDOUT | COPY FROM STDIN (binary)", run: b.pipe, base: true},
		{name: "sql_incremental first load (COPY straight in)", run: b.sqlFirstLoad},
		{name: "sql_incremental reload, every row changed (upsert)", setup: b.changeAll, run: b.sqlReload},
		{name: "same database: INSERT … SELECT (for reference)", run: b.insertSelect},
		{name: "http_json first load, keyset pages of 1000 (local API)", run: b.httpFirstLoad},
	}
	secs := make([][]float64, len(measures)) // secs[m][run]
	ratios := make([][]float64, len(measures))
	for r := 1; r <= *runs; r++ {
		var base float64
		for i, m := range measures {
			if m.setup != nil {
				if err := m.setup(); err != nil {
					return fmt.Errorf("%s: %w", m.name, err)
				}
			}
			start := time.Now()
			n, err := m.run()
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			d := time.Since(start).Seconds()
			if n != int64(*rows) {
				return fmt.Errorf("%s: loaded %d rows, want %d", m.name, n, *rows)
			}
			secs[i] = append(secs[i], d)
			ratio := "-"
			if m.base {
				base = d
			} else {
				ratios[i] = append(ratios[i], base/d)
				ratio = strconv.FormatFloat(base/d, 'f', 2, 64)
			}
			fmt.Printf("%-58s %8.2f %12.0f %8s\n", fmt.Sprintf("run %d: %s", r, m.name), d, float64(n)/d, ratio)
		}
		fmt.Println()
	}
	// The machine is shared: the best run of each load is the least disturbed one, and the
	// median of the per-run ratios compares loads measured side by side.
	fmt.Printf("%-58s %8s %12s %8s %8s\n", "summary over "+strconv.Itoa(*runs)+" runs", "best s", "best rows/s", "ratio", "median")
	bestBase := slices.Min(secs[0])
	for i, m := range measures {
		best := slices.Min(secs[i])
		ratio, median := "-", "-"
		if !m.base {
			ratio = strconv.FormatFloat(bestBase/best, 'f', 2, 64)
			median = strconv.FormatFloat(medianOf(ratios[i]), 'f', 2, 64)
		}
		fmt.Printf("%-58s %8.2f %12.0f %8s %8s\n", m.name, best, float64(*rows)/best, ratio, median)
	}
	fmt.Println("\nratio: the baseline's time over the load's (1.00 = as fast as the bare pipe); best: of the best runs;")
	fmt.Println("median: of the ratios measured side by side in each run")
	return nil
}

func medianOf(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

type kindsBench struct {
	ctx             context.Context
	rows, tenants   int
	admin           *pgx.Conn
	source, target  *pgxpool.Pool
	sourceURL       string
	targetURL       string
	sqlJobs         []kindtest.Job
	sqlCursors      []kindtest.Cursor
	pipeSrc, pipeTo *pgx.Conn
	profile         *os.File
	httpJobs        []kindtest.Job
	api             *http.Server
}

func newKindsBench(ctx context.Context, rows, tenants int, interleaved bool) (*kindsBench, error) {
	b := &kindsBench{ctx: ctx, rows: rows, tenants: tenants}
	var err error
	if b.admin, err = pgx.Connect(ctx, serverURL()); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redactURL(serverURL()), err)
	}
	for _, db := range []string{kindsSourceDB, kindsTargetDB} {
		ident := pgx.Identifier{db}.Sanitize()
		if _, err := b.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			return nil, err
		}
		if _, err := b.admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
			return nil, err
		}
	}
	if b.sourceURL, err = withDatabase(serverURL(), kindsSourceDB); err != nil {
		return nil, err
	}
	if b.targetURL, err = withDatabase(serverURL(), kindsTargetDB); err != nil {
		return nil, err
	}
	if b.source, err = smallPool(ctx, b.sourceURL); err != nil {
		return nil, err
	}
	if b.target, err = smallPool(ctx, b.targetURL); err != nil {
		return nil, err
	}
	order := "i % " + strconv.Itoa(tenants) + ", i"
	if interleaved {
		order = "i"
	}
	err = phase("seed source rows", func() error {
		_, err := b.source.Exec(ctx, `CREATE TABLE orders `+benchOrderColumns+`;
			INSERT INTO orders SELECT i, i % `+strconv.Itoa(tenants)+`, 'order ' || i, (i % 1000) * 1.25,
				jsonb_build_object('i', i, 'labels', jsonb_build_array('a', 'b')),
				now() - interval '30 days' + i * interval '1 ms'
			FROM generate_series(1, `+strconv.Itoa(rows)+`) i ORDER BY `+order+`;
			CREATE INDEX ON orders (tenant, modified_at)`)
		if err == nil {
			_, err = b.source.Exec(ctx, `VACUUM ANALYZE orders`)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if _, err := b.target.Exec(ctx, `CREATE TABLE dw_orders `+benchOrderColumns+`; CREATE TABLE pipe_orders `+benchOrderColumns+`;
		CREATE TABLE api_orders `+benchOrderColumns+`;
		CREATE TABLE local_orders `+benchOrderColumns); err != nil {
		return nil, err
	}
	if _, err := b.source.Exec(ctx, `CREATE TABLE local_orders `+benchOrderColumns); err != nil {
		return nil, err
	}
	if err := os.Setenv(kindsSourceEnv, b.sourceURL); err != nil {
		return nil, err
	}
	cfg, err := json.Marshal(map[string]any{
		"source_url_env":  kindsSourceEnv,
		"query":           "SELECT id, tenant, name, amount, tags, modified_at FROM orders WHERE tenant = :tenant",
		"modified_column": "modified_at",
		"target_table":    "dw_orders",
		"key_columns":     []string{"id"},
	})
	if err != nil {
		return nil, err
	}
	for t := range tenants {
		b.sqlJobs = append(b.sqlJobs, kindtest.Job{Kind: sqlincremental.Kind, Handler: sqlincremental.Handler,
			Strategy: etl.StrategyModifiedDate, Config: cfg, Params: json.RawMessage(`{"tenant":` + strconv.Itoa(t) + `}`),
			Target: b.target})
	}
	if err := b.startAPI(ctx); err != nil {
		return nil, err
	}
	if b.pipeSrc, err = pgx.Connect(ctx, b.sourceURL); err != nil {
		return nil, err
	}
	if b.pipeTo, err = pgx.Connect(ctx, b.targetURL); err != nil {
		return nil, err
	}
	return b, nil
}

// smallPool keeps to a few connections: the server's are shared.
func smallPool(ctx context.Context, u string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = 4
	return pgxpool.NewWithConfig(ctx, cfg)
}

func (b *kindsBench) close(keep bool) {
	ctx := context.WithoutCancel(b.ctx)
	if b.api != nil {
		_ = b.api.Close()
	}
	for _, c := range []*pgx.Conn{b.pipeSrc, b.pipeTo} {
		if c != nil {
			_ = c.Close(ctx)
		}
	}
	for _, p := range []*pgxpool.Pool{b.source, b.target} {
		if p != nil {
			p.Close()
		}
	}
	if !keep {
		for _, db := range []string{kindsSourceDB, kindsTargetDB} {
			_, _ = b.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)")
		}
	}
	_ = b.admin.Close(ctx)
	_ = os.Unsetenv(kindsSourceEnv)
}

// pipe is the baseline: the source's COPY TO STDOUT piped into the target's COPY FROM STDIN,
// through a 64 KiB buffer like a shell pipe's, into an empty table with the same primary key.
func (b *kindsBench) pipe() (int64, error) {
	if _, err := b.pipeTo.Exec(b.ctx, "TRUNCATE pipe_orders"); err != nil {
		return 0, err
	}
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 64<<10)
		_, err := b.pipeSrc.PgConn().CopyTo(b.ctx, bw, "COPY (SELECT id, tenant, name, amount, tags, modified_at FROM orders) TO STDOUT (FORMAT binary)")
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
	}()
	tag, err := b.pipeTo.PgConn().CopyFrom(b.ctx, pr, "COPY pipe_orders FROM STDIN (FORMAT binary)")
	pr.Close()
	return tag.RowsAffected(), err
}

// sqlFirstLoad runs every tenant's item from no cursor into an empty target.
func (b *kindsBench) sqlFirstLoad() (int64, error) {
	if _, err := b.target.Exec(b.ctx, "TRUNCATE dw_orders"); err != nil {
		return 0, err
	}
	b.sqlCursors = make([]kindtest.Cursor, len(b.sqlJobs))
	return b.runAll(b.sqlJobs, b.sqlCursors)
}

// changeAll changes every source row (untimed), so a reload rewrites every target row.
func (b *kindsBench) changeAll() error {
	if _, err := b.source.Exec(b.ctx, "UPDATE orders SET amount = amount + 1"); err != nil {
		return err
	}
	_, err := b.source.Exec(b.ctx, "VACUUM ANALYZE orders")
	return err
}

// sqlReload runs every tenant's item from no cursor again: every row exists, so every row
// goes through the staging table and the upsert.
func (b *kindsBench) sqlReload() (int64, error) {
	return b.runAll(b.sqlJobs, make([]kindtest.Cursor, len(b.sqlJobs)))
}

func (b *kindsBench) runAll(jobs []kindtest.Job, cursors []kindtest.Cursor) (int64, error) {
	var n int64
	for i, job := range jobs {
		r := kindtest.Run(b.ctx, job, &cursors[i], kindtest.Options{})
		if r.Err != nil {
			return n, fmt.Errorf("item %d: %w", i, r.Err)
		}
		n += r.Metrics.RecordsRead
	}
	return n, nil
}

// startAPI serves the source's rows as a JSON API on loopback, from memory (records encoded
// once, untimed): /orders?tenant=T&since=S&until=U&limit=N, ascending by (modified_at, id).
func (b *kindsBench) startAPI(ctx context.Context) error {
	type rec struct {
		at   time.Time
		json []byte
	}
	byTenant := make([][]rec, b.tenants)
	rows, err := b.source.Query(ctx, `SELECT tenant, modified_at, json_build_object('id', id, 'tenant', tenant, 'name', name,
		'amount', amount, 'tags', tags, 'modified_at', to_char(modified_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text
		FROM orders ORDER BY modified_at, id`)
	if err != nil {
		return err
	}
	var (
		tenant int
		at     time.Time
		doc    string
	)
	if _, err := pgx.ForEachRow(rows, []any{&tenant, &at, &doc}, func() error {
		byTenant[tenant] = append(byTenant[tenant], rec{at: at, json: []byte(doc)})
		return nil
	}); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/orders", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		t, _ := strconv.Atoi(q.Get("tenant"))
		if t < 0 || t >= len(byTenant) {
			http.NotFound(w, r)
			return
		}
		recs := byTenant[t]
		limit, _ := strconv.Atoi(q.Get("limit"))
		from, to := 0, len(recs)
		if s, err := time.Parse(time.RFC3339Nano, q.Get("since")); err == nil {
			from, _ = slices.BinarySearchFunc(recs, s, func(r rec, s time.Time) int { return r.at.Compare(s) })
		}
		if u, err := time.Parse(time.RFC3339Nano, q.Get("until")); err == nil {
			to, _ = slices.BinarySearchFunc(recs, u, func(r rec, u time.Time) int { return r.at.Compare(u) })
		}
		to = min(to, from+limit)
		w.Header().Set("Content-Type", "application/json")
		bw := bufio.NewWriterSize(w, 64<<10)
		bw.WriteString(`{"data":[`)
		for i, r := range recs[from:max(from, to)] {
			if i > 0 {
				bw.WriteByte(',')
			}
			bw.Write(r.json)
		}
		bw.WriteString(`]}`)
		_ = bw.Flush()
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	b.api = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = b.api.Serve(l) }()
	cfg, err := json.Marshal(map[string]any{
		"base_url":       "http://" + l.Addr().String() + "/orders",
		"query":          map[string]string{"tenant": "{{.params.tenant}}"},
		"records_path":   "data",
		"modified_field": "modified_at",
		"time_format":    "rfc3339nano",
		"pagination":     map[string]any{"type": "keyset", "limit": 1000, "since_param": "since", "until_param": "until"},
		"target_table":   "api_orders",
		"key_columns":    []string{"id"},
		"columns": map[string]string{"id": "id", "tenant": "tenant", "name": "name", "amount": "amount",
			"tags": "tags", "modified_at": "modified_at"},
	})
	if err != nil {
		return err
	}
	for t := range b.tenants {
		b.httpJobs = append(b.httpJobs, kindtest.Job{Kind: httpjson.Kind, Handler: httpjson.Handler,
			Strategy: etl.StrategyModifiedDate, Config: cfg, Params: json.RawMessage(`{"tenant":` + strconv.Itoa(t) + `}`),
			Target: b.target})
	}
	return nil
}

// httpFirstLoad runs every tenant's http_json item from no cursor into an empty table.
func (b *kindsBench) httpFirstLoad() (int64, error) {
	if b.profile != nil {
		if err := pprof.StartCPUProfile(b.profile); err == nil {
			defer pprof.StopCPUProfile()
			b.profile = nil
		}
	}
	if _, err := b.target.Exec(b.ctx, "TRUNCATE api_orders"); err != nil {
		return 0, err
	}
	return b.runAll(b.httpJobs, make([]kindtest.Cursor, len(b.httpJobs)))
}

// insertSelect copies the rows within the source database, as the issue measured.
func (b *kindsBench) insertSelect() (int64, error) {
	tag, err := b.source.Exec(b.ctx, "TRUNCATE local_orders; INSERT INTO local_orders SELECT * FROM orders")
	return tag.RowsAffected(), err
}

// redactURL drops the password from a URL for printing.
func redactURL(u string) string {
	if i := strings.Index(u, "@"); i > 0 {
		if j := strings.Index(u[:i], "://"); j >= 0 && strings.Contains(u[j+3:i], ":") {
			return u[:j+3] + u[j+3:j+3+strings.Index(u[j+3:i], ":")] + ":***" + u[i:]
		}
	}
	return u
}
