package sqlincremental_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/kinds/kindtest"
	"github.com/etlexec/etlexec/internal/kinds/sqlincremental"
)

// sqlSource is a source database the exactness test writes to like a busy application: rows
// change with the database's clock, some in transactions that stay open across a run and
// commit while it reads.
type sqlSource interface {
	// exec runs one autocommitted statement ($n placeholders are rewritten for MySQL).
	exec(ctx context.Context, q string, args ...any) error
	// begin opens a transaction on a connection of its own.
	begin(ctx context.Context) (sqlTx, error)
	// rows returns every row: id → (ver, deleted, modified_at).
	rows(ctx context.Context) (map[int]srcRow, error)
	// now is the source's clock.
	now(ctx context.Context) (time.Time, error)
	ph(i int) string
}

type sqlTx interface {
	exec(ctx context.Context, q string, args ...any) error
	commit(ctx context.Context) error
}

type srcRow struct {
	ver      int
	deleted  bool
	modified time.Time
}

// pgSrc and mySrc are the two dialects' sources.
type pgSrc struct{ pool *pgxpool.Pool }

func (s pgSrc) ph(i int) string { return "$" + strconv.Itoa(i) }
func (s pgSrc) exec(ctx context.Context, q string, args ...any) error {
	_, err := s.pool.Exec(ctx, q, args...)
	return err
}
func (s pgSrc) begin(ctx context.Context) (sqlTx, error) {
	tx, err := s.pool.Begin(ctx)
	return pgTx{tx}, err
}
func (s pgSrc) rows(ctx context.Context) (map[int]srcRow, error) { return pgItems(ctx, s.pool) }

// pgItems reads the items table of a Postgres database, source or target.
func pgItems(ctx context.Context, pool *pgxpool.Pool) (map[int]srcRow, error) {
	rows, err := pool.Query(ctx, `SELECT id, ver, deleted, modified_at FROM items`)
	if err != nil {
		return nil, err
	}
	out := map[int]srcRow{}
	var (
		id int
		r  srcRow
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &r.ver, &r.deleted, &r.modified}, func() error {
		r.modified = r.modified.UTC()
		out[id] = r
		return nil
	})
	return out, err
}
func (s pgSrc) now(ctx context.Context) (time.Time, error) {
	var t time.Time
	err := s.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&t)
	return t, err
}

type pgTx struct{ tx pgx.Tx }

func (t pgTx) exec(ctx context.Context, q string, args ...any) error {
	_, err := t.tx.Exec(ctx, q, args...)
	return err
}
func (t pgTx) commit(ctx context.Context) error { return t.tx.Commit(ctx) }

type mySrc struct{ db *sql.DB }

var placeholder = regexp.MustCompile(`\$\d+`)

func (s mySrc) ph(int) string { return "?" }
func (s mySrc) exec(ctx context.Context, q string, args ...any) error {
	_, err := s.db.ExecContext(ctx, mysqlize(q), args...)
	return err
}
func (s mySrc) begin(ctx context.Context) (sqlTx, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.ExecContext(ctx, "START TRANSACTION"); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return myTx{conn}, nil
}
func (s mySrc) rows(ctx context.Context) (map[int]srcRow, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, ver, deleted, modified_at FROM items`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]srcRow{}
	for rows.Next() {
		var (
			id int
			r  srcRow
		)
		if err := rows.Scan(&id, &r.ver, &r.deleted, &r.modified); err != nil {
			return nil, err
		}
		r.modified = r.modified.UTC()
		out[id] = r
	}
	return out, rows.Err()
}
func (s mySrc) now(ctx context.Context) (time.Time, error) {
	var t time.Time
	err := s.db.QueryRowContext(ctx, `SELECT NOW(6)`).Scan(&t)
	return t, err
}

type myTx struct{ conn *sql.Conn }

func (t myTx) exec(ctx context.Context, q string, args ...any) error {
	_, err := t.conn.ExecContext(ctx, mysqlize(q), args...)
	return err
}
func (t myTx) commit(ctx context.Context) error {
	_, err := t.conn.ExecContext(ctx, "COMMIT")
	_ = t.conn.Close()
	return err
}

// mysqlize turns the test's Postgres statements into MySQL's.
func mysqlize(q string) string {
	q = placeholder.ReplaceAllString(q, "?")
	return strings.NewReplacer("now()", "NOW(6)", "ON CONFLICT (id) DO NOTHING", "").Replace(q)
}

// exactness drives one source through many rounds of concurrent change and runs, and after every
// round checks what the issue asks: nothing modified before upper is missing or stale in the
// target, nothing at or past upper is in it, the cursor stays below upper, and a run re-reads
// no more rows than its window (cursor − lookback) covers. A quiet final run must make the
// target equal the source.
type exactness struct {
	t        *testing.T
	rng      *rand.Rand
	src      sqlSource
	target   *pgxpool.Pool
	job      kindtest.Job
	lookback time.Duration
	cur      kindtest.Cursor

	// exact: upper is an exact horizon, so every row modified before it is in the target after
	// the run; otherwise rows committed after the snapshot with an earlier time are the
	// lookback's, read by the next run.
	exact bool

	mu     sync.Mutex // the hooks run inside the handler
	nextID int
	open   []*openTx    // transactions left open, committed later
	locked map[int]bool // rows an open transaction holds
	late   map[int]bool // rows committed after this run's snapshot
}

type openTx struct {
	tx  sqlTx
	ids []int
}

func (e *exactness) newID() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nextID++
	return e.nextID
}

// free picks up to n existing ids no open transaction holds.
func (e *exactness) free(n int) []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []int
	for range 4 * n {
		id := 1 + e.rng.IntN(e.nextID)
		if !e.locked[id] && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
		if len(ids) == n {
			break
		}
	}
	return ids
}

// mutate applies n random writes, each its own transaction: updates that move rows forward,
// inserts, soft deletes.
func (e *exactness) mutate(ctx context.Context, n int) {
	t := e.t
	for range n {
		switch e.rng.IntN(3) {
		case 0:
			for _, id := range e.free(1) {
				require.NoError(t, e.src.exec(ctx, `UPDATE items SET ver = ver + 1, modified_at = now() WHERE id = `+e.src.ph(1), id))
			}
		case 1:
			id := e.newID()
			require.NoError(t, e.src.exec(ctx, `INSERT INTO items (id, ver, deleted, modified_at) VALUES (`+e.src.ph(1)+`, 1, false, now())`, id))
		case 2:
			for _, id := range e.free(1) {
				require.NoError(t, e.src.exec(ctx, `UPDATE items SET ver = ver + 1, deleted = true, modified_at = now() WHERE id = `+e.src.ph(1), id))
			}
		}
	}
}

// openLong starts a transaction that writes a few rows now and commits later.
func (e *exactness) openLong(ctx context.Context) {
	t := e.t
	tx, err := e.src.begin(ctx)
	require.NoError(t, err)
	o := &openTx{tx: tx}
	for _, id := range e.free(1 + e.rng.IntN(3)) {
		require.NoError(t, tx.exec(ctx, `UPDATE items SET ver = ver + 1, modified_at = now() WHERE id = `+e.src.ph(1), id))
		o.ids = append(o.ids, id)
	}
	for range e.rng.IntN(3) {
		id := e.newID()
		require.NoError(t, tx.exec(ctx, `INSERT INTO items (id, ver, deleted, modified_at) VALUES (`+e.src.ph(1)+`, 1, false, now())`, id))
		o.ids = append(o.ids, id)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range o.ids {
		e.locked[id] = true
	}
	e.open = append(e.open, o)
}

// commitSome commits each open transaction with probability p; with late, its rows are marked
// as committed after the running item's snapshot.
func (e *exactness) commitSome(ctx context.Context, p float64, late ...bool) {
	e.mu.Lock()
	var keep, done []*openTx
	for _, o := range e.open {
		if e.rng.Float64() < p {
			done = append(done, o)
		} else {
			keep = append(keep, o)
		}
	}
	e.open = keep
	e.mu.Unlock()
	for _, o := range done {
		require.NoError(e.t, o.tx.commit(ctx))
		e.mu.Lock()
		for _, id := range o.ids {
			delete(e.locked, id)
			if len(late) > 0 && late[0] {
				e.late[id] = true
			}
		}
		e.mu.Unlock()
	}
}

// hook is what the busy application does while an item runs: at each hook point, it commits
// some of the open transactions and writes more rows.
func (e *exactness) hook(ctx context.Context) func(string) {
	return func(point string) {
		e.commitSome(ctx, 0.5, point == sqlincremental.HookSnapshot)
		e.mutate(ctx, e.rng.IntN(4))
	}
}

var upperInNote = regexp.MustCompile(`; upper (\S+) \(`)

func (e *exactness) round(ctx context.Context, r int) {
	t := e.t
	// Between runs: ordinary writes, transactions that will commit late, and rows written
	// afterwards with exactly the cursor's time.
	e.mutate(ctx, e.rng.IntN(8))
	if e.rng.IntN(2) == 0 {
		e.openLong(ctx)
	}
	if e.cur.Value != nil && e.rng.IntN(3) == 0 {
		for range 1 + e.rng.IntN(3) {
			id := e.newID()
			require.NoError(t, e.src.exec(ctx, `INSERT INTO items (id, ver, deleted, modified_at) VALUES (`+e.src.ph(1)+`, 1, false, `+e.src.ph(2)+`)`, id, *e.cur.Value))
		}
	}
	before := e.targetRows(ctx)
	var start *time.Time
	if e.cur.Value != nil {
		s := e.cur.Value.Add(-e.lookback)
		start = &s
	}
	covered := 0
	for _, row := range before {
		if start == nil || !row.modified.Before(*start) {
			covered++
		}
	}

	e.late = map[int]bool{}
	res := kindtest.Run(sqlincremental.WithTestHook(ctx, e.hook(ctx)), e.job, &e.cur, kindtest.Options{})
	require.NoError(t, res.Err, "round %d", r)
	m := res.Metrics
	match := upperInNote.FindStringSubmatch(m.Note)
	require.NotNil(t, match, "round %d: no upper in the note %q", r, m.Note)
	upper, err := time.Parse(time.RFC3339Nano, match[1])
	require.NoError(t, err)

	if e.cur.Value != nil {
		require.True(t, e.cur.Value.Before(upper), "round %d: cursor %s not below upper %s", r, e.cur.Value, upper)
	}
	require.LessOrEqual(t, int(m.RecordsRead-m.RecordsWritten), covered,
		"round %d: re-read %d unchanged rows, but the window [cursor − %s, upper) covered %d loaded rows", r, m.RecordsRead-m.RecordsWritten, e.lookback, covered)
	src, err := e.src.rows(ctx)
	require.NoError(t, err)
	got := e.targetRows(ctx)
	for id, row := range got {
		s, ok := src[id]
		require.True(t, ok, "round %d: target row %d has no source row", r, id)
		require.True(t, row.modified.Before(upper), "round %d: row %d modified at %s, not below upper %s", r, id, row.modified, upper)
		require.LessOrEqual(t, row.ver, s.ver, "round %d: row %d", r, id)
	}
	for id, s := range src {
		if s.modified.Before(upper) && (e.exact || !e.late[id]) {
			require.Equal(t, s, got[id], "round %d: row %d, modified %s before upper %s, is missing or stale", r, id, s.modified, upper)
		}
	}
}

func (e *exactness) targetRows(ctx context.Context) map[int]srcRow {
	out, err := pgItems(ctx, e.target)
	require.NoError(e.t, err)
	return out
}

// finish commits everything, waits until the source's clock has passed the last write by more
// than wait, runs once more and requires the target to equal the source.
func (e *exactness) finish(ctx context.Context, wait time.Duration) {
	t := e.t
	e.commitSome(ctx, 1)
	require.Eventually(t, func() bool {
		src, err := e.src.rows(ctx)
		require.NoError(t, err)
		now, err := e.src.now(ctx)
		require.NoError(t, err)
		for _, s := range src {
			if !s.modified.Before(now.Add(-wait)) {
				return false
			}
		}
		return true
	}, 20*time.Second, 50*time.Millisecond)
	res := kindtest.Run(ctx, e.job, &e.cur, kindtest.Options{})
	require.NoError(t, res.Err)
	src, err := e.src.rows(ctx)
	require.NoError(t, err)
	require.Equal(t, src, e.targetRows(ctx), "after a quiet run the target equals the source")
}

func TestExactness(t *testing.T) {
	t.Parallel()
	rounds := kindtest.ExactnessRounds(t)
	for _, tc := range []struct {
		name     string
		open     func(t *testing.T) (sqlSource, map[string]any)
		lookback time.Duration
		exact    bool
		wait     time.Duration // how far past the last write a quiet run must be
	}{
		{name: "PostgresHorizon", open: openPostgresSource, exact: true, wait: 1100 * time.Millisecond},
		{name: "PostgresClockLookback", lookback: time.Minute, wait: 0, open: func(t *testing.T) (sqlSource, map[string]any) {
			src, cfg := openPostgresSource(t)
			cfg["horizon"], cfg["lookback"] = "clock", "1m"
			return src, cfg
		}},
		{name: "MariaDB", lookback: sqlincremental.LookbackClockDefault, open: openMySQLSource},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			seed := kindtest.ExactnessSeed(t)
			t.Logf("seed %d (ETL_EXACTNESS_SEED replays it), %d rounds", seed, rounds)
			ctx := t.Context()
			src, cfg := tc.open(t)
			target := dbtest.Pool(t)
			_, err := target.Exec(ctx, `CREATE TABLE items (id int PRIMARY KEY, ver int, deleted boolean, modified_at timestamptz)`)
			require.NoError(t, err)
			raw, err := json.Marshal(cfg)
			require.NoError(t, err)
			e := &exactness{t: t, rng: rand.New(rand.NewPCG(seed, 1)), src: src, target: target, lookback: tc.lookback,
				exact: tc.exact, locked: map[int]bool{}, late: map[int]bool{},
				job: kindtest.Job{Kind: sqlincremental.Kind, Handler: sqlincremental.Handler, Strategy: etl.StrategyModifiedDate,
					Config: raw, Target: target}}
			t.Cleanup(func() { e.commitSome(context.Background(), 1) })
			for range 50 {
				id := e.newID()
				require.NoError(t, src.exec(ctx, fmt.Sprintf(`INSERT INTO items (id, ver, deleted, modified_at) VALUES (%s, 1, false, now())`, src.ph(1)), id))
			}
			for r := 1; r <= rounds; r++ {
				e.round(ctx, r)
			}
			e.finish(ctx, tc.wait)
			t.Logf("%d rounds, %d rows, cursor %s", rounds, e.nextID, e.cur.Value)
		})
	}
}

func openPostgresSource(t *testing.T) (sqlSource, map[string]any) {
	t.Helper()
	pc, err := pgxpool.ParseConfig(dbtest.EmptyDatabase(t))
	require.NoError(t, err)
	pc.MaxConns = 8 // open transactions each hold one
	pool, err := pgxpool.NewWithConfig(t.Context(), pc)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(t.Context(), `CREATE TABLE items (id int PRIMARY KEY, ver int NOT NULL, deleted boolean NOT NULL,
		modified_at timestamptz NOT NULL)`)
	require.NoError(t, err)
	return pgSrc{pool}, map[string]any{
		"source_url_env": setEnv(t, pool.Config().ConnString()), "query": `SELECT id, ver, deleted, modified_at FROM items`,
		"modified_column": "modified_at", "target_table": "items", "key_columns": []string{"id"},
	}
}

func openMySQLSource(t *testing.T) (sqlSource, map[string]any) {
	t.Helper()
	db, dsn := mysqlDatabase(t)
	db.SetMaxOpenConns(8)
	_, err := db.ExecContext(t.Context(), `CREATE TABLE items (id INT PRIMARY KEY, ver INT NOT NULL, deleted BOOLEAN NOT NULL,
		modified_at DATETIME(6) NOT NULL)`)
	require.NoError(t, err)
	return mySrc{db}, map[string]any{
		"dialect": "mysql", "source_url_env": setEnv(t, dsn), "query": `SELECT id, ver, deleted, modified_at FROM items`,
		"modified_column": "modified_at", "target_table": "items", "key_columns": []string{"id"},
	}
}
