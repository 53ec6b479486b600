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
	"github.com/etlexec/etlexec/internal/kinds/sqlincremental"
)

var base = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// at is the modified_at of the i-th minute after base.
func at(i int) time.Time { return base.Add(time.Duration(i) * time.Minute) }

const (
	sourceDDL = `CREATE TABLE src (
		id int PRIMARY KEY,
		region text NOT NULL,
		name text,
		amount numeric(12,2),
		tags jsonb,
		modified_at timestamptz NOT NULL
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
	defaultQuery = `SELECT id, region, name, amount, tags, modified_at FROM src
		WHERE region = :region AND modified_at > :cursor_start AND modified_at <= :cursor_end`
)

type testBundle struct {
	source *pgxpool.Pool // the source database
	target *pgxpool.Pool // the target database
	env    string        // the variable holding the source's URL
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	ctx := t.Context()
	source, err := pgxpool.New(ctx, dbtest.EmptyDatabase(t))
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

// insert adds source rows id → modified_at, all in region eu.
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
		"query":           defaultQuery,
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

// begin starts a target transaction, rolled back when the test ends unless committed.
func (b *testBundle) begin(t *testing.T) pgx.Tx {
	t.Helper()
	tx, err := b.target.Begin(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

// run runs one item in its own target transaction, committed when the handler
// succeeds, like the executor outside a dry run.
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

func requireWatermark(t *testing.T, want time.Time, it *etl.Item) {
	t.Helper()
	got := it.Metrics().Watermark
	require.NotNil(t, got, "no watermark observed")
	require.True(t, want.Equal(*got), "watermark %s, want %s", got, want)
}

func requirePermanent(t *testing.T, err error, category etl.Category, contains string) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, category, etl.Classify(err), "%v", err)
	require.True(t, etl.IsPermanent(err), "%v", err)
	require.Contains(t, err.Error(), contains)
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
		requireWatermark(t, at(30), it)

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

	t.Run("ChangedRows", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1), 2: at(2), 3: at(3), 4: at(4)})
		first, err := b.run(t, etl.ItemSpec{Config: b.config(t, nil)})
		require.NoError(t, err)
		cursor := *first.Metrics().Watermark

		changed := at(60)
		b.insert(t, map[int]time.Time{2: changed, 4: at(59), 5: at(58)})
		second, err := b.run(t, etl.ItemSpec{Config: b.config(t, nil), WindowStart: &cursor})
		require.NoError(t, err)
		m := second.Metrics()
		require.Equal(t, int64(3), m.RecordsRead, "only the changed and new rows")
		require.Equal(t, int64(3), m.RecordsWritten)
		require.Equal(t, int64(1), m.Pages)
		requireWatermark(t, changed, second)
		require.Equal(t, 5, b.count(t, `SELECT count(*) FROM dw_orders`))
		require.Equal(t, "order 2 @"+changed.Format(time.TimeOnly), b.targetName(t, 2))
		require.Equal(t, "order 1 @"+at(1).Format(time.TimeOnly), b.targetName(t, 1))

		// Nothing changed since: nothing read, no watermark.
		third, err := b.run(t, etl.ItemSpec{Config: b.config(t, nil), WindowStart: &changed})
		require.NoError(t, err)
		require.Equal(t, etl.Metrics{}, third.Metrics())
	})

	t.Run("LateRowsWithinLookback", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1), 2: at(10)})
		first, err := b.run(t, etl.ItemSpec{Config: b.config(t, nil)})
		require.NoError(t, err)
		cursor := *first.Metrics().Watermark
		require.True(t, at(10).Equal(cursor))

		// Row 3 commits after the first run with a modification time 30s before the
		// cursor (a long transaction on the source, say).
		b.insert(t, map[int]time.Time{3: at(10).Add(-30 * time.Second)})

		missed, err := b.run(t, etl.ItemSpec{Config: b.config(t, nil), WindowStart: &cursor})
		require.NoError(t, err)
		require.Zero(t, missed.Metrics().RecordsRead)
		require.Zero(t, b.count(t, `SELECT count(*) FROM dw_orders WHERE id = 3`), "missed without lookback")

		caught, err := b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{"lookback": "1m"}), WindowStart: &cursor})
		require.NoError(t, err)
		m := caught.Metrics()
		require.Equal(t, int64(2), m.RecordsRead, "the late row and the row at the cursor, re-read")
		require.Equal(t, int64(2), m.RecordsWritten)
		requireWatermark(t, at(10), caught)
		require.Equal(t, 1, b.count(t, `SELECT count(*) FROM dw_orders WHERE id = 3`))
		require.Equal(t, 3, b.count(t, `SELECT count(*) FROM dw_orders`))
	})

	t.Run("EqualWatermarksAcrossPages", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rows := map[int]time.Time{}
		for i := 1; i <= 25; i++ {
			rows[i] = at(5)
		}
		b.insert(t, rows)
		it, err := b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{"page_size": 10})})
		require.NoError(t, err)
		m := it.Metrics()
		require.Equal(t, int64(25), m.RecordsRead)
		require.Equal(t, int64(25), m.RecordsWritten)
		require.Equal(t, int64(3), m.Pages)
		requireWatermark(t, at(5), it)
		require.Equal(t, 25, b.count(t, `SELECT count(*) FROM dw_orders`))
	})

	t.Run("ExactlyFullLastPage", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1), 2: at(2), 3: at(3), 4: at(4)})
		it, err := b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{"page_size": 2})})
		require.NoError(t, err)
		require.Equal(t, etl.Metrics{RecordsRead: 4, RecordsWritten: 4, Pages: 2, Watermark: new(at(4))}, it.Metrics())
	})

	t.Run("LastRunWindow", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1), 2: at(2), 3: at(3), 4: at(4)})
		start, end := at(1), at(3)
		it, err := b.run(t, etl.ItemSpec{
			Config:      b.config(t, map[string]any{"modified_column": nil}),
			Strategy:    etl.StrategyLastRun,
			WindowStart: &start,
			WindowEnd:   &end,
		})
		require.NoError(t, err)
		require.Equal(t, etl.Metrics{RecordsRead: 2, RecordsWritten: 2, Pages: 1}, it.Metrics(),
			"rows 2 and 3; last_run observes no watermark")
	})

	t.Run("ExplicitColumnMapping", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1), 2: at(2)})
		_, err := b.target.Exec(t.Context(), `CREATE SCHEMA dw; CREATE TABLE dw."Orders" (order_id int PRIMARY KEY, label text, changed timestamptz)`)
		require.NoError(t, err)
		it, err := b.run(t, etl.ItemSpec{Config: b.config(t, map[string]any{
			"query":        `SELECT id AS src_id, name, modified_at FROM src WHERE modified_at > :cursor_start`,
			"target_table": `dw.Orders`,
			"key_columns":  []string{"order_id"},
			"columns":      map[string]string{"order_id": "src_id", "label": "name", "changed": "modified_at"},
			"page_size":    1,
		})})
		require.NoError(t, err)
		require.Equal(t, int64(2), it.Metrics().RecordsWritten)
		require.Equal(t, 1, b.count(t, `SELECT count(*) FROM dw."Orders" WHERE order_id = 2 AND label LIKE 'order 2 %'`))
	})

	t.Run("DryRunRollsBack", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insert(t, map[int]time.Time{1: at(1), 2: at(2), 3: at(3)})
		tx := b.begin(t)
		it := newItem(tx, etl.ItemSpec{Config: b.config(t, nil), DryRun: true})
		require.NoError(t, sqlincremental.Handler(t.Context(), it))
		require.NoError(t, tx.Rollback(t.Context())) // what the executor does in a dry run
		m := it.Metrics()
		require.Equal(t, int64(3), m.RecordsRead)
		require.Equal(t, int64(3), m.RecordsWritten, "the rows that would have been written")
		requireWatermark(t, at(3), it)
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
			"query": `SELECT * FROM src WHERE region = :regoin AND modified_at > :cursor_start`,
		})})
		requirePermanent(t, err, etl.CategoryData, ":regoin")
	})

	t.Run("QueryErrorsAreData", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for query, want := range map[string]string{
			`SELECT * FROM nowhere WHERE modified_at > :cursor_start`: `relation "nowhere" does not exist`,
			`SELECT id, region FROM src`:                              `modified_at`,
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
			"source_url_env":              {"source_url_env": nil},
			"query: required":             {"query": " "},
			"modified_column":             {"modified_column": nil},
			"target_table":                {"target_table": "a.b.c"},
			"key_columns":                 {"key_columns": []string{}},
			"page_size":                   {"page_size": -1},
			"lookback":                    {"lookback": "yesterday"},
			`unknown field "source_url"`:  {"source_url": "postgres://x"},
			"positional":                  {"query": "SELECT * FROM src WHERE id = $1"},
			`"id" is not a target column`: {"columns": map[string]string{"region": "region"}},
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
	require.Panics(t, func() { sqlincremental.Register(r) }, "registering twice is a start-up bug")
}
