package sqlincremental_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/kinds/incremental"
	"github.com/etlexec/etlexec/internal/kinds/kindtest"
	"github.com/etlexec/etlexec/internal/kinds/sqlincremental"
)

// base is two days ago on the hour: rows are modified in the past, below any upper.
var base = time.Now().UTC().Truncate(time.Hour).Add(-48 * time.Hour)

// at is the modified_at of the i-th minute after base.
func at(i int) time.Time { return base.Add(time.Duration(i) * time.Minute) }

const (
	sourceDDL = `CREATE TABLE src (
		id int PRIMARY KEY,
		region text NOT NULL,
		name text,
		amount numeric(12,2),
		tags jsonb,
		modified_at timestamptz NOT NULL DEFAULT now()
	)`
	// The target has columns the load does not fill: an identity and a default.
	targetDDL = `CREATE TABLE dw_orders (
		sk bigint GENERATED ALWAYS AS IDENTITY,
		id int PRIMARY KEY,
		region text,
		name text,
		amount numeric(12,2),
		tags jsonb,
		modified_at timestamptz,
		loaded_at timestamptz NOT NULL DEFAULT now()
	)`
	// docQuery is the query docs/kinds.md shows.
	docQuery = `SELECT id, region, name, amount, tags, modified_at FROM src
		WHERE region = :region AND modified_at >= :cursor_start AND modified_at < :cursor_end`
)

type testBundle struct {
	source *pgxpool.Pool // the source database
	target *pgxpool.Pool // the target database
	env    string        // the variable holding the source's URL
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	ctx := t.Context()
	pc, err := pgxpool.ParseConfig(dbtest.EmptyDatabase(t))
	require.NoError(t, err)
	pc.MaxConns = 4
	source, err := pgxpool.NewWithConfig(ctx, pc)
	require.NoError(t, err)
	t.Cleanup(source.Close)
	_, err = source.Exec(ctx, sourceDDL)
	require.NoError(t, err)
	target := dbtest.Pool(t)
	_, err = target.Exec(ctx, targetDDL)
	require.NoError(t, err)
	return &testBundle{source: source, target: target, env: setEnv(t, source.Config().ConnString())}
}

// setEnv sets a variable of a unique name (t.Setenv forbids parallel tests) and
// returns the name.
func setEnv(t *testing.T, value string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "ETL_TEST_SOURCE_" + strings.ToUpper(hex.EncodeToString(b[:]))
	require.NoError(t, os.Setenv(name, value))
	t.Cleanup(func() { _ = os.Unsetenv(name) })
	return name
}

// insert adds or updates source rows id → modified_at, all in region eu.
func (b *testBundle) insert(t *testing.T, rows map[int]time.Time) {
	t.Helper()
	for id, mod := range rows {
		_, err := b.source.Exec(t.Context(),
			`INSERT INTO src VALUES ($1, 'eu', $2, $3, $4, $5)
			 ON CONFLICT (id) DO UPDATE SET name = excluded.name, modified_at = excluded.modified_at`,
			id, fmt.Sprintf("order %d @%s", id, mod.Format(time.TimeOnly)), fmt.Sprintf("%d.50", id),
			map[string]any{"id": id, "labels": []string{"a", "b"}}, mod)
		require.NoError(t, err)
	}
}

// config is the job's config with overrides; a nil override removes the field.
func (b *testBundle) config(t *testing.T, overrides map[string]any) json.RawMessage {
	t.Helper()
	c := map[string]any{
		"source_url_env":  b.env,
		"query":           docQuery,
		"modified_column": "modified_at",
		"target_table":    "dw_orders",
		"key_columns":     []string{"id"},
		"page_size":       7,
	}
	for k, v := range overrides {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	raw, err := json.Marshal(c)
	require.NoError(t, err)
	return raw
}

func (b *testBundle) job(t *testing.T, overrides map[string]any) kindtest.Job {
	t.Helper()
	return kindtest.Job{Kind: sqlincremental.Kind, Handler: sqlincremental.Handler, Strategy: etl.StrategyModifiedDate,
		Config: b.config(t, overrides), Params: json.RawMessage(`{"region":"eu"}`), Target: b.target}
}

// begin starts a target transaction, rolled back when the test ends unless committed.
func (b *testBundle) begin(t *testing.T) pgx.Tx {
	t.Helper()
	tx, err := b.target.Begin(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

// run runs one item in its own target transaction, committed when the handler succeeds.
func (b *testBundle) run(t *testing.T, spec etl.ItemSpec) (*etl.Item, error) {
	t.Helper()
	tx := b.begin(t)
	it := newItem(tx, spec)
	err := sqlincremental.Handler(t.Context(), it)
	if err == nil {
		require.NoError(t, tx.Commit(t.Context()))
	} else {
		require.NoError(t, tx.Rollback(t.Context()))
	}
	return it, err
}

func newItem(tx pgx.Tx, spec etl.ItemSpec) *etl.Item {
	spec.JobID = "sql_incremental_test"
	spec.Kind = sqlincremental.Kind
	spec.ItemAttempt = 1
	spec.MaxAttempts = 3
	if spec.Strategy == "" {
		spec.Strategy = etl.StrategyModifiedDate
	}
	if spec.Params == nil {
		spec.Params = json.RawMessage(`{"region":"eu"}`)
	}
	if tx != nil {
		spec.Target = tx
	}
	return etl.NewItem(spec)
}

// waitPastHorizon waits until the source's clock is more than the horizon's one-second margin
// past every row's modification time, so the next run may read them all.
func (b *testBundle) waitPastHorizon(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		var past bool
		err := b.source.QueryRow(t.Context(),
			`SELECT coalesce(max(modified_at), '-infinity') < clock_timestamp() - interval '1.1 s' FROM src`).Scan(&past)
		return err == nil && past
	}, 10*time.Second, 20*time.Millisecond)
}

func (b *testBundle) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, b.target.QueryRow(t.Context(), q, args...).Scan(&n))
	return n
}

func (b *testBundle) targetName(t *testing.T, id int) string {
	t.Helper()
	var name string
	require.NoError(t, b.target.QueryRow(t.Context(), `SELECT name FROM dw_orders WHERE id = $1`, id).Scan(&name))
	return name
}

func requireWatermark(t *testing.T, want time.Time, m etl.Metrics) {
	t.Helper()
	require.NotNil(t, m.Watermark, "no watermark observed")
	require.True(t, want.Equal(*m.Watermark), "watermark %s, want %s", m.Watermark, want)
}

func requirePermanent(t *testing.T, err error, category etl.Category, contains string) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, category, etl.Classify(err), "%v", err)
	require.True(t, etl.IsPermanent(err), "%v", err)
	require.Contains(t, err.Error(), contains)
}

func meta(t *testing.T, m etl.Metrics) incremental.Meta {
	t.Helper()
	got, ok := incremental.ParseMeta(m.CursorMeta)
	require.True(t, ok, "cursor meta %s", m.CursorMeta)
	return got
}

func TestHandler(t *testing.T) {
	t.Parallel()

	t.Run("InitialLoad", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rows := map[int]time.Time{}
		for i := 1; i <= 30; i++ {
			rows[i] = at(i)
		}
		b.insert(t, rows)

		it, err := b.run(t, etl.ItemSpec{Config: b.config(t, nil)})
		require.NoError(t, err)
		m := it.Metrics()
		require.Equal(t, int64(30), m.RecordsRead)
		require.Equal(t, int64(30), m.RecordsWritten)
		require.Equal(t, int64(5), m.Pages, "30 rows in pages of 7")
		requireWatermark(t, at(30), m)
		mt := meta(t, m)
		require.Equal(t, map[string]any{"id": float64(30)}, mt.Key, "the composite cursor is (modified_at, id) of the last row")
		require.Equal(t, int64(1), mt.RowsAtModified)
		require.True(t, mt.Upper.After(at(30)))
		require.Contains(t, m.Note, "first load: read 30 rows, wrote 30 by COPY straight into the table")
		require.Contains(t, m.Note, "cursor → "+at(30).Format(time.RFC3339Nano))

		require.Equal(t, 30, b.count(t, `SELECT count(*) FROM dw_orders`))
		require.Equal(t, 30, b.count(t, `SELECT count(DISTINCT sk) FROM dw_orders WHERE loaded_at IS NOT NULL`),
			"columns not loaded take their defaults")
		var (
			amount string
			tags   map[string]any
			mod    time.Time
		)
		require.NoError(t, b.target.QueryRow(t.Context(),
			`SELECT amount::text, tags, modified_at FROM dw_orders WHERE id = 7`).Scan(&amount, &tags, &mod))
		require.Equal(t, "7.50", amount)
		require.Equal(t, map[string]any{"id": float64(7), "labels": []any{"a", "b"}}, tags)
		require.True(t, at(7).Equal(mod))
	})

	t.Run("ChangedRowsAndTheBoundary", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1), 2: at(2), 3: at(3), 4: at(4)})
		job := b.job(t, nil)
		var cur kindtest.Cursor
		first := kindtest.Run(t.Context(), job, &cur, kindtest.Options{})
		require.NoError(t, first.Err)
		requireWatermark(t, at(4), first.Metrics)

		changed := at(60)
		b.insert(t, map[int]time.Time{2: changed, 4: at(59), 5: at(58)})
		second := kindtest.Run(t.Context(), job, &cur, kindtest.Options{})
		require.NoError(t, second.Err)
		m := second.Metrics
		require.Equal(t, int64(3), m.RecordsRead, "the changed and new rows; row 4's old version is gone")
		require.Equal(t, int64(3), m.RecordsWritten)
		require.Equal(t, int64(1), m.Pages)
		requireWatermark(t, changed, m)
		require.Contains(t, m.Note, "through a staging table")
		require.Equal(t, 5, b.count(t, `SELECT count(*) FROM dw_orders`))
		require.Equal(t, "order 2 @"+changed.Format(time.TimeOnly), b.targetName(t, 2))
		require.Equal(t, "order 1 @"+at(1).Format(time.TimeOnly), b.targetName(t, 1))

		// Nothing changed since: the row at the cursor is re-read (a row could have been
		// written at that same time), left unchanged, and the cursor holds.
		third := kindtest.Run(t.Context(), job, &cur, kindtest.Options{})
		require.NoError(t, third.Err)
		require.Equal(t, int64(1), third.Metrics.RecordsRead)
		require.Zero(t, third.Metrics.RecordsWritten, "an unchanged row is not rewritten")
		require.False(t, third.Moved)
		require.Contains(t, third.Metrics.Note, "re-read 1 at the cursor's time (1 there last run)")
		require.Contains(t, third.Metrics.Note, "cursor held at "+changed.Format(time.RFC3339Nano))
		require.NotContains(t, third.Metrics.Note, "no new rows")
	})

	// Measured on main: with the query docs/kinds.md showed (modified_at > :cursor_start), 10
	// rows written afterwards with exactly the cursor's time were never loaded.
	t.Run("RowsAtTheCursorAreLoaded", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rows := map[int]time.Time{}
		for i := 1; i <= 20; i++ {
			rows[i] = at(i)
		}
		b.insert(t, rows)

		// The query main documented is refused: it skips exactly these rows.
		skipping := strings.Replace(docQuery, ">= :cursor_start", "> :cursor_start", 1)
		r := kindtest.Run(t.Context(), b.job(t, map[string]any{"query": skipping}), &kindtest.Cursor{}, kindtest.Options{})
		requirePermanent(t, r.Err, etl.CategoryData, `write ">= :cursor_start"`)

		job := b.job(t, nil)
		var cur kindtest.Cursor
		require.NoError(t, kindtest.Run(t.Context(), job, &cur, kindtest.Options{}).Err)
		require.True(t, at(20).Equal(*cur.Value))
		tied := map[int]time.Time{}
		for i := 101; i <= 110; i++ {
			tied[i] = at(20)
		}
		b.insert(t, tied)
		next := kindtest.Run(t.Context(), job, &cur, kindtest.Options{})
		require.NoError(t, next.Err)
		require.Equal(t, int64(11), next.Metrics.RecordsRead, "row 20 and the 10 rows at its time")
		require.Equal(t, int64(10), next.Metrics.RecordsWritten)
		require.Equal(t, 30, b.count(t, `SELECT count(*) FROM dw_orders`))
		require.Contains(t, next.Metrics.Note, "re-read 11 at the cursor's time (1 there last run)")
		require.Equal(t, int64(11), meta(t, next.Metrics).RowsAtModified)
	})

	// Measured on main: 100 rows of a transaction that committed after the run read past
	// their modified_at were never loaded. The horizon keeps upper below that transaction's
	// start, so no lookback is needed.
	t.Run("LateCommitHeldBackByTheHorizon", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		b.insert(t, map[int]time.Time{1: at(1)})
		late, err := b.source.Begin(ctx)
		require.NoError(t, err)
		defer late.Rollback(context.Background()) //nolint:errcheck
		_, err = late.Exec(ctx, `INSERT INTO src (id, region, name) SELECT i, 'eu', 'late ' || i FROM generate_series(1001, 1100) i`)
		require.NoError(t, err)
		// Later writers commit first, with later modification times.
		_, err = b.source.Exec(ctx, `INSERT INTO src (id, region, name) SELECT i, 'eu', 'early ' || i FROM generate_series(2001, 2010) i`)
		require.NoError(t, err)

		job := b.job(t, nil)
		var cur kindtest.Cursor
		first := kindtest.Run(ctx, job, &cur, kindtest.Options{})
		require.NoError(t, first.Err)
		require.Equal(t, int64(1), first.Metrics.RecordsRead, "upper stops before the open transaction began")
		require.Contains(t, first.Metrics.Note, "oldest open source transaction")
		require.NoError(t, late.Commit(ctx))
		b.waitPastHorizon(t)

		second := kindtest.Run(ctx, job, &cur, kindtest.Options{})
		require.NoError(t, second.Err)
		require.Equal(t, 111, b.count(t, `SELECT count(*) FROM dw_orders`), "the late rows and the later ones")
		require.Equal(t, int64(1), second.Metrics.RecordsRead-second.Metrics.RecordsWritten, "only the boundary row re-read")

		// With horizon clock and no lookback the same late commit is lost: what the lookback is for.
		b2 := setup(t)
		late2, err := b2.source.Begin(ctx)
		require.NoError(t, err)
		defer late2.Rollback(context.Background()) //nolint:errcheck
		_, err = late2.Exec(ctx, `INSERT INTO src (id, region, name) SELECT i, 'eu', 'late' FROM generate_series(1001, 1100) i`)
		require.NoError(t, err)
		_, err = b2.source.Exec(ctx, `INSERT INTO src (id, region, name) VALUES (2001, 'eu', 'early')`)
		require.NoError(t, err)
		for _, lookback := range []string{"0s", "1h"} {
			_, err := b2.target.Exec(ctx, `TRUNCATE dw_orders`)
			require.NoError(t, err)
			job := b2.job(t, map[string]any{"horizon": "clock", "lookback": lookback})
			var cur kindtest.Cursor
			require.NoError(t, kindtest.Run(ctx, job, &cur, kindtest.Options{}).Err)
			if lookback == "0s" {
				require.NoError(t, late2.Commit(ctx))
			}
			r := kindtest.Run(ctx, job, &cur, kindtest.Options{})
			require.NoError(t, r.Err)
			if lookback == "0s" {
				require.Equal(t, 1, b2.count(t, `SELECT count(*) FROM dw_orders`), "clock, no lookback: the late rows are missed")
			} else {
				require.Equal(t, 101, b2.count(t, `SELECT count(*) FROM dw_orders`), "the lookback re-reads them")
				require.Contains(t, r.Metrics.Note, "within the 1h0m0s lookback")
			}
		}
	})

	t.Run("LastRunWindow", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1), 2: at(2), 3: at(3), 4: at(4)})
		start, end := at(1), at(3)
		it, err := b.run(t, etl.ItemSpec{
			Config: b.config(t, map[string]any{"query": `SELECT id, region, name, modified_at FROM src
				WHERE modified_at > :cursor_start AND modified_at <= :cursor_end`}),
			Strategy:    etl.StrategyLastRun,
			WindowStart: &start,
			WindowEnd:   &end,
		})
		require.NoError(t, err)
		m := it.Metrics()
		require.Equal(t, int64(2), m.RecordsRead, "rows 2 and 3: last_run's window is (start, end]")
		require.Nil(t, m.Watermark, "last_run observes no watermark")
	})

	t.Run("ExplicitColumnMappingAndTypeCasts", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1), 2: at(2)})
		// bigint and varchar targets for int and text sources: the staging table keeps the
		// source's types and the upsert casts.
		_, err := b.target.Exec(t.Context(), `CREATE SCHEMA dw; CREATE TABLE dw."Orders" (order_id bigint PRIMARY KEY, label varchar(40), changed timestamptz)`)
		require.NoError(t, err)
		cfg := b.config(t, map[string]any{
			"query":        `SELECT id AS src_id, name, modified_at FROM src WHERE modified_at >= :cursor_start`,
			"target_table": `dw.Orders`,
			"key_columns":  []string{"order_id"},
			"columns":      map[string]string{"order_id": "src_id", "label": "name", "changed": "modified_at"},
			"page_size":    1,
		})
		it, err := b.run(t, etl.ItemSpec{Config: cfg})
		require.NoError(t, err)
		require.Equal(t, int64(2), it.Metrics().RecordsWritten)
		require.Equal(t, int64(2), it.Metrics().Pages)
		require.Contains(t, it.Metrics().Note, "through a staging table", "types differ, so no COPY straight in")
		require.Equal(t, 1, b.count(t, `SELECT count(*) FROM dw."Orders" WHERE order_id = 2 AND label LIKE 'order 2 %'`))
	})

	t.Run("TextCopyForTypesOfTheSource", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.source.Exec(t.Context(), `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
			CREATE TABLE feelings (id int PRIMARY KEY, m mood, note text, modified_at timestamp NOT NULL);
			INSERT INTO feelings VALUES (1, 'happy', E'tab\there\nnewline \\ back', '2026-01-02 03:04:05.123456'),
				(2, NULL, NULL, '2026-01-02 03:04:06')`)
		require.NoError(t, err)
		_, err = b.target.Exec(t.Context(), `CREATE TABLE feelings (id int PRIMARY KEY, m text, note text, modified_at timestamp)`)
		require.NoError(t, err)
		it, err := b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{
			"query": `SELECT * FROM feelings`, "target_table": "feelings"})})
		require.NoError(t, err)
		require.Equal(t, int64(2), it.Metrics().RecordsWritten)
		requireWatermark(t, time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC), it.Metrics())
		var m, note string
		require.NoError(t, b.target.QueryRow(t.Context(), `SELECT m, note FROM feelings WHERE id = 1`).Scan(&m, &note))
		require.Equal(t, "happy", m)
		require.Equal(t, "tab\there\nnewline \\ back", note)
	})

	t.Run("DuplicateKeysLastWins", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1), 2: at(2)})
		b.insert(t, map[int]time.Time{3: at(3)})
		dup := `SELECT id, name, modified_at FROM src UNION ALL SELECT 1, 'again', modified_at FROM src WHERE id = 3`
		job := b.job(t, map[string]any{"query": dup})
		var cur kindtest.Cursor
		r := kindtest.Run(t.Context(), job, &cur, kindtest.Options{})
		require.NoError(t, r.Err)
		require.Contains(t, r.Metrics.Note, "a key already existed", "the duplicate fails the COPY straight in")
		require.Equal(t, 3, b.count(t, `SELECT count(*) FROM dw_orders`))
	})

	t.Run("FirstLoadIntoRowsThatExist", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1), 2: at(2), 3: at(3)})
		_, err := b.target.Exec(t.Context(), `INSERT INTO dw_orders (id, name) VALUES (2, 'stale')`)
		require.NoError(t, err)
		r := kindtest.Run(t.Context(), b.job(t, nil), &kindtest.Cursor{}, kindtest.Options{})
		require.NoError(t, r.Err)
		require.Equal(t, int64(3), r.Metrics.RecordsRead, "the fallback re-reads the same snapshot, counting once")
		require.Equal(t, int64(3), r.Metrics.RecordsWritten)
		require.Equal(t, "order 2 @"+at(2).Format(time.TimeOnly), b.targetName(t, 2))
	})

	t.Run("DryRunRollsBack", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1), 2: at(2), 3: at(3)})
		var cur kindtest.Cursor
		r := kindtest.Run(t.Context(), b.job(t, nil), &cur, kindtest.Options{DryRun: true})
		require.NoError(t, r.Err)
		require.Equal(t, int64(3), r.Metrics.RecordsRead)
		require.Equal(t, int64(3), r.Metrics.RecordsWritten, "the rows that would have been written")
		requireWatermark(t, at(3), r.Metrics)
		require.Nil(t, cur.Value, "a dry run moves no cursor")
		require.Zero(t, b.count(t, `SELECT count(*) FROM dw_orders`))
	})

	t.Run("ParamValuesAreBound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1)})
		for _, region := range []string{`'; DROP TABLE src; --`, `eu' OR '1'='1`} {
			params, err := json.Marshal(map[string]string{"region": region})
			require.NoError(t, err)
			it, err := b.run(t, etl.ItemSpec{Config: b.config(t, nil), Params: params})
			require.NoError(t, err)
			require.Zero(t, it.Metrics().RecordsRead, "%s matched rows", region)
		}
		var rows int
		require.NoError(t, b.source.QueryRow(t.Context(), `SELECT count(*) FROM src`).Scan(&rows))
		require.Equal(t, 1, rows, "src survives")
	})

	t.Run("TargetTableIsQuoted", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1)})
		_, err := b.target.Exec(t.Context(), `CREATE TABLE y (id int)`)
		require.NoError(t, err)
		_, err = b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{"target_table": "x; drop table y"})})
		requirePermanent(t, err, etl.CategoryData, `target table "x; drop table y" does not exist`)
		require.Equal(t, 1, b.count(t, `SELECT count(*) FROM pg_tables WHERE tablename = 'y'`), "y survives")
	})

	t.Run("MissingTargetTable", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1)})
		_, err := b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{"target_table": "dw.nowhere"})})
		requirePermanent(t, err, etl.CategoryData, `target table "dw"."nowhere" does not exist`)
	})

	t.Run("MissingEnvVar", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{"source_url_env": "ETL_TEST_NO_SUCH_VARIABLE"})})
		requirePermanent(t, err, etl.CategorySystem, "ETL_TEST_NO_SUCH_VARIABLE")

		empty := setEnv(t, "")
		_, err = b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{"source_url_env": empty})})
		requirePermanent(t, err, etl.CategorySystem, empty)

		bad := setEnv(t, "postgres://etl:s3cr3t-pw@127.0.0.1:notaport/x")
		_, err = b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{"source_url_env": bad})})
		requirePermanent(t, err, etl.CategorySystem, bad)
		require.NotContains(t, err.Error(), "s3cr3t-pw")
	})

	t.Run("UnknownBindName", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{
			"query": `SELECT * FROM src WHERE region = :regoin AND modified_at >= :cursor_start`,
		})})
		requirePermanent(t, err, etl.CategoryData, ":regoin")
	})

	t.Run("QueryErrorsAreData", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for query, want := range map[string]string{
			`SELECT * FROM nowhere WHERE modified_at >= :cursor_start`: `relation "nowhere" does not exist`,
			`SELECT id, region FROM src`:                               `modified_at`,
			`SELECT id, region, 'x'::text AS modified_at FROM src`:     `not a timestamp or date column`,
		} {
			_, err := b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{"query": query})})
			requirePermanent(t, err, etl.CategoryData, want)
		}
	})

	t.Run("NullKeysetValue", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1)})
		_, err := b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{
			"query": `SELECT id, name, NULL::timestamptz AS modified_at FROM src`,
		})})
		requirePermanent(t, err, etl.CategoryData, "modified_at is NULL")
		_, err = b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{
			"query": `SELECT NULL::int AS id, name, modified_at FROM src`,
		})})
		requirePermanent(t, err, etl.CategoryData, "key column id is NULL")
	})

	t.Run("SourceDown", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		down := setEnv(t, "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=5")
		_, err := b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{"source_url_env": down})})
		require.Error(t, err)
		require.Equal(t, etl.CategoryDB, etl.Classify(err), "%v", err)
		require.False(t, etl.IsPermanent(err))
	})

	t.Run("CancelledContext", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1)})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		err := sqlincremental.Handler(ctx, newItem(b.begin(t), etl.ItemSpec{Config: b.config(t, nil)}))
		require.ErrorIs(t, err, context.Canceled)
		require.Equal(t, etl.CategorySystem, etl.Classify(err))
	})

	t.Run("BadConfig", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for field, override := range map[string]map[string]any{
			"source_url_env":                          {"source_url_env": nil},
			"query: required":                         {"query": " "},
			"modified_column":                         {"modified_column": nil},
			"target_table":                            {"target_table": "a.b.c"},
			"key_columns":                             {"key_columns": []string{}},
			"page_size":                               {"page_size": -1},
			"lookback":                                {"lookback": "yesterday"},
			"safety_lag":                              {"safety_lag": "-1s"},
			`horizon "xmin"`:                          {"horizon": "xmin"},
			`dialect "oracle"`:                        {"dialect": "oracle"},
			`horizon "transactions": postgres`:        {"dialect": "mysql", "horizon": "transactions"},
			`unknown key "source_url"`:                {"source_url": "postgres://x"},
			`did you mean "query"`:                    {"querry": "SELECT 1"},
			"positional":                              {"query": "SELECT * FROM src WHERE id = $1"},
			`"id" is not a target column`:             {"columns": map[string]string{"region": "region"}},
			`write ">= :cursor_start"`:                {"query": "SELECT * FROM src WHERE modified_at > :cursor_start"},
			`unknown key "pagination"`:                {"pagination": map[string]any{}},
			`field "page_size"`:                       {"page_size": "ten"},
			`modified_column "a\x00b": name contains`: {"modified_column": "a\x00b"},
		} {
			_, err := b.run(t, etl.ItemSpec{Config: b.config(t, override)})
			requirePermanent(t, err, etl.CategoryData, field)
		}
		_, err := b.run(t, etl.ItemSpec{Config: b.config(t, nil), Params: json.RawMessage(`{"cursor_start":"x"}`)})
		requirePermanent(t, err, etl.CategoryData, "reserved")

		err = sqlincremental.Handler(t.Context(), newItem(nil, etl.ItemSpec{Config: b.config(t, nil)}))
		requirePermanent(t, err, etl.CategoryData, "no target database")
	})
}

func TestRegister(t *testing.T) {
	t.Parallel()
	r := etl.NewRegistry()
	sqlincremental.Register(r)
	h, ok := r.Lookup(sqlincremental.Kind)
	require.True(t, ok)
	require.NotNil(t, h)
	require.Error(t, r.ValidateConfig(sqlincremental.Kind, json.RawMessage(`{"querry":"x"}`), etl.StrategyNone),
		"the config is declared")
	require.Panics(t, func() { sqlincremental.Register(r) }, "registering twice is a start-up bug")
}
