package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/servertest"
)

// pgCosts are one etlexec phase's Postgres costs per item.
type pgCosts struct {
	statements     float64 // pg_stat_statements calls of top-level statements (utility included), etlexec's sessions only
	nested         float64 // calls of statements run inside others (foreign key checks, functions)
	walBytes       float64
	indexEntries   float64 // upper bound: partial indexes counted as if every row matched
	partialEntries float64 // the part of indexEntries in partial indexes (0 .. that)
	cpuMicros      float64
	tables         []tableCost
	top            []statementCost
}

type tableCost struct {
	name                      string
	insRows, updRows, hotRows int64 // pg_stat_user_tables counters
	indexes, partial          int
	ins, upd, hot             float64 // per item
	entries                   float64 // per item, partial indexes included
}

type statementCost struct {
	query    string
	toplevel bool
	perItem  float64
	// planMicros and execMicros are the statement's planning and execution time per item
	// (pg_stat_statements total_plan_time, total_exec_time): where the Postgres CPU goes.
	planMicros, execMicros float64
}

// observer reads a phase's figures on sessions of harnessRole, whose own statements
// pg_stat_statements then leaves out of etlexec's.
type observer struct {
	pg    *servertest.PostgresServer
	db    string
	conn  *pgx.Conn // on the phase's database
	dbOID uint32
	role  uint32
}

func newObserver(ctx context.Context, pg *servertest.PostgresServer, db string) (*observer, error) {
	u := strings.Replace(pg.URL(db), "postgres@", harnessRole+"@", 1)
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		return nil, err
	}
	o := &observer{pg: pg, db: db, conn: c}
	if err := c.QueryRow(ctx, `SELECT (SELECT oid FROM pg_database WHERE datname = current_database()),
		(SELECT oid FROM pg_roles WHERE rolname = current_user)`).Scan(&o.dbOID, &o.role); err != nil {
		c.Close(ctx)
		return nil, err
	}
	return o, nil
}

func (o *observer) close() { _ = o.conn.Close(context.Background()) }

// stmtKey names one pg_stat_statements entry (its users summed).
type stmtKey struct {
	queryID  string
	toplevel bool
}

// pgSnapshot is what a phase's costs are differences of.
type pgSnapshot struct {
	calls  map[stmtKey]int64      // etlexec's sessions in the phase's database
	times  map[stmtKey][2]float64 // total plan and exec time, ms
	texts  map[stmtKey]string
	walLSN string
	cpu    time.Duration
	tables map[string]tableCost
}

func (o *observer) snapshot(ctx context.Context) (pgSnapshot, error) {
	s := pgSnapshot{calls: map[stmtKey]int64{}, times: map[stmtKey][2]float64{}, texts: map[stmtKey]string{}}
	rows, err := o.conn.Query(ctx, `SELECT queryid::text, toplevel, sum(calls)::bigint, min(query),
		sum(total_plan_time)::float8, sum(total_exec_time)::float8 FROM pg_stat_statements
		WHERE dbid = $1 AND userid <> $2 GROUP BY queryid, toplevel`, o.dbOID, o.role)
	if err != nil {
		return s, fmt.Errorf("read pg_stat_statements: %w", err)
	}
	for rows.Next() {
		var k stmtKey
		var text string
		var calls int64
		var plan, exec float64
		if err := rows.Scan(&k.queryID, &k.toplevel, &calls, &text, &plan, &exec); err != nil {
			rows.Close()
			return s, err
		}
		s.calls[k], s.texts[k], s.times[k] = calls, text, [2]float64{plan, exec}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return s, err
	}
	if err := o.conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&s.walLSN); err != nil {
		return s, err
	}
	if s.cpu, err = o.pg.CPUTime(); err != nil {
		return s, err
	}
	s.tables, err = o.tables(ctx)
	return s, err
}

// tables reads the tables' row counters; they include a session's changes once it has ended
// (or idled a second).
func (o *observer) tables(ctx context.Context) (map[string]tableCost, error) {
	rows, err := o.conn.Query(ctx, `SELECT t.schemaname || '.' || t.relname, t.n_tup_ins, t.n_tup_upd, t.n_tup_hot_upd,
		(SELECT count(*) FROM pg_index i WHERE i.indrelid = t.relid)::int,
		(SELECT count(*) FROM pg_index i WHERE i.indrelid = t.relid AND i.indpred IS NOT NULL)::int
		FROM pg_stat_user_tables t`)
	if err != nil {
		return nil, fmt.Errorf("read pg_stat_user_tables: %w", err)
	}
	defer rows.Close()
	out := map[string]tableCost{}
	for rows.Next() {
		var t tableCost
		if err := rows.Scan(&t.name, &t.insRows, &t.updRows, &t.hotRows, &t.indexes, &t.partial); err != nil {
			return nil, err
		}
		out[t.name] = t
	}
	return out, rows.Err()
}

// waitNoSessions waits until no session but the observer's is connected to the database:
// a backend flushes its table statistics as it exits.
func (o *observer) waitNoSessions(ctx context.Context) error {
	return servertest.Poll(readyTimeout, pollInterval, func() (bool, error) {
		var n int
		err := o.conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND pid <> pg_backend_pid()`).Scan(&n)
		return err == nil && n == 0, err
	})
}

// runStatus is the run's status and whether it is terminal.
func (o *observer) runStatus(ctx context.Context, runID string) (string, bool, error) {
	var status string
	if err := o.conn.QueryRow(ctx, `SELECT status FROM dw_etl_runs WHERE run_id = $1`, runID).Scan(&status); err != nil {
		return "", false, err
	}
	return status, runstate.Status(status).Terminal(), nil
}

// costs turns two snapshots (and the tables read after the workers ended) into per-item costs.
func costs(before, after pgSnapshot, tablesAfter map[string]tableCost, n int) *pgCosts {
	per := func(v float64) float64 { return v / float64(n) }
	c := &pgCosts{}
	for id, calls := range after.calls {
		d := calls - before.calls[id]
		if d <= 0 {
			continue
		}
		if id.toplevel {
			c.statements += per(float64(d))
		} else {
			c.nested += per(float64(d))
		}
		t0, t1 := before.times[id], after.times[id]
		c.top = append(c.top, statementCost{query: oneLine(after.texts[id], 90), toplevel: id.toplevel, perItem: per(float64(d)),
			planMicros: per(1000 * (t1[0] - t0[0])), execMicros: per(1000 * (t1[1] - t0[1]))})
	}
	slices.SortFunc(c.top, func(a, b statementCost) int {
		switch {
		case a.perItem > b.perItem:
			return -1
		case a.perItem < b.perItem:
			return 1
		}
		return strings.Compare(a.query, b.query)
	})
	c.top = c.top[:min(len(c.top), 12)]
	c.walBytes = per(float64(lsnDiff(after.walLSN, before.walLSN)))
	c.cpuMicros = per(float64((after.cpu - before.cpu).Microseconds()))
	for name, t := range tablesAfter {
		b := before.tables[name]
		ins, upd, hot := t.insRows-b.insRows, t.updRows-b.updRows, t.hotRows-b.hotRows
		if ins+upd == 0 {
			continue
		}
		// Every insert and every non-HOT update adds one entry to each index (to a partial
		// one only when the new row matches its predicate; counted as if it always did).
		written := float64(ins + upd - hot)
		t.ins, t.upd, t.hot = per(float64(ins)), per(float64(upd)), per(float64(hot))
		t.entries = per(written * float64(t.indexes))
		c.indexEntries += t.entries
		c.partialEntries += per(written * float64(t.partial))
		c.tables = append(c.tables, t)
	}
	slices.SortFunc(c.tables, func(a, b tableCost) int { return strings.Compare(a.name, b.name) })
	return c
}

// lsnDiff is a - b in bytes for two pg_lsn texts (X/Y hexadecimal).
func lsnDiff(a, b string) int64 { return lsnBytes(a) - lsnBytes(b) }

func lsnBytes(s string) int64 {
	hi, lo, _ := strings.Cut(s, "/")
	var h, l int64
	_, _ = fmt.Sscanf(hi, "%x", &h)
	_, _ = fmt.Sscanf(lo, "%x", &l)
	return h<<32 | l
}

// execSQL runs statements one by one on a fresh connection to url.
func execSQL(ctx context.Context, url string, stmts ...string) error {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	for _, s := range stmts {
		if _, err := c.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", oneLine(s, 60), err)
		}
	}
	return nil
}
