package synthetic_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/kinds/synthetic"
)

const testParamHash = "5f1c0e2a9b7d4c3e8a6f1b2d3c4e5f60718293a4b5c6d7e8f9012345678abcde"

var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// minute is the modified_at of source row i under the default base and step.
func minute(i int) *time.Time {
	t := base.Add(time.Duration(i) * time.Minute)
	return &t
}

// newItem fills what the tests do not care about and builds the item.
func newItem(spec etl.ItemSpec) *etl.Item {
	spec.JobID = "synthetic_test"
	spec.Kind = synthetic.Kind
	if spec.ItemAttempt == 0 {
		spec.ItemAttempt = 1
	}
	spec.MaxAttempts = 5
	if spec.ParamHash == "" {
		spec.ParamHash = testParamHash
	}
	if spec.Strategy == "" {
		spec.Strategy = etl.StrategyNone
	}
	return etl.NewItem(spec)
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

// begin starts a target transaction, rolled back when the test ends unless committed.
func begin(t *testing.T, pool *pgxpool.Pool) pgx.Tx {
	t.Helper()
	tx, err := pool.Begin(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

func countRows(t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, table string) int {
	t.Helper()
	var n int
	require.NoError(t, q.QueryRow(t.Context(), `SELECT count(*) FROM `+table).Scan(&n))
	return n
}

func TestHandler(t *testing.T) {
	t.Parallel()

	type testBundle struct{ pool *pgxpool.Pool }
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		return &testBundle{pool: dbtest.Pool(t)}
	}

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		it := newItem(etl.ItemSpec{})
		require.NoError(t, synthetic.Handler(t.Context(), it))
		m := it.Metrics()
		require.Equal(t, etl.Metrics{RecordsRead: 100, Pages: 1}, m)
	})

	t.Run("WritesPagesToTarget", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		tx := begin(t, bundle.pool)
		it := newItem(etl.ItemSpec{Params: raw(`{"records":250,"page_size":100}`), Target: tx})
		require.NoError(t, synthetic.Handler(t.Context(), it))
		require.Equal(t, etl.Metrics{RecordsRead: 250, RecordsWritten: 250, Pages: 3}, it.Metrics())
		require.Equal(t, 250, countRows(t, tx, synthetic.DefaultTargetTable))

		var (
			key      string
			seq      int
			modified time.Time
			payload  string
		)
		require.NoError(t, tx.QueryRow(t.Context(),
			`SELECT key, seq, modified_at, payload FROM etl_synthetic_target ORDER BY seq DESC LIMIT 1`).
			Scan(&key, &seq, &modified, &payload))
		require.Equal(t, testParamHash[:16], key)
		require.Equal(t, 249, seq)
		require.True(t, minute(249).Equal(modified), "modified_at %s", modified)
		require.Equal(t, testParamHash[:16]+" #249", payload)

		// Running again upserts the same rows: nothing new, every row rewritten.
		again := newItem(etl.ItemSpec{Params: raw(`{"records":250,"page_size":100}`), Target: tx})
		require.NoError(t, synthetic.Handler(t.Context(), again))
		require.Equal(t, int64(250), again.Metrics().RecordsWritten)
		require.Equal(t, 250, countRows(t, tx, synthetic.DefaultTargetTable))
	})

	t.Run("PageCounts", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct{ records, pageSize, pages int }{
			{0, 10, 0}, {1, 10, 1}, {10, 10, 1}, {11, 10, 2}, {99, 7, 15},
		} {
			it := newItem(etl.ItemSpec{Params: raw(fmt.Sprintf(`{"records":%d,"page_size":%d}`, tc.records, tc.pageSize))})
			require.NoError(t, synthetic.Handler(t.Context(), it))
			m := it.Metrics()
			require.Equal(t, int64(tc.records), m.RecordsRead, "%+v", tc)
			require.Equal(t, int64(tc.pages), m.Pages, "%+v", tc)
		}
	})

	t.Run("SchemaQualifiedTargetAndKey", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		tx := begin(t, bundle.pool)
		_, err := tx.Exec(t.Context(), `CREATE SCHEMA dw`)
		require.NoError(t, err)
		it := newItem(etl.ItemSpec{
			Params: raw(`{"records":5,"key":"customer-7"}`),
			Config: raw(`{"target_table":"dw.Synthetic"}`),
			Target: tx,
		})
		require.NoError(t, synthetic.Handler(t.Context(), it))
		var keys []string
		rows, err := tx.Query(t.Context(), `SELECT DISTINCT key FROM dw."Synthetic"`)
		require.NoError(t, err)
		keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.Equal(t, []string{"customer-7"}, keys)
	})

	t.Run("ModifiedDate", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name      string
			records   int
			start     *time.Time
			read      int64
			watermark *time.Time
		}{
			{"FirstLoad", 10, nil, 10, minute(9)},
			{"StartOnARowExcludesIt", 10, minute(4), 5, minute(9)},
			{"StartBetweenRows", 10, ptr(minute(4).Add(30 * time.Second)), 5, minute(9)},
			{"StartBeforeBase", 10, ptr(base.Add(-time.Hour)), 10, minute(9)},
			{"CaughtUp", 10, minute(9), 0, nil},
			{"SourceGrew", 15, minute(9), 5, minute(14)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				it := newItem(etl.ItemSpec{
					Params:      raw(fmt.Sprintf(`{"records":%d,"page_size":3}`, tc.records)),
					Strategy:    etl.StrategyModifiedDate,
					WindowStart: tc.start,
				})
				require.NoError(t, synthetic.Handler(t.Context(), it))
				m := it.Metrics()
				require.Equal(t, tc.read, m.RecordsRead)
				require.Equal(t, (tc.read+2)/3, m.Pages)
				if tc.watermark == nil {
					require.Nil(t, m.Watermark)
				} else {
					require.NotNil(t, m.Watermark)
					require.True(t, tc.watermark.Equal(*m.Watermark), "watermark %s, want %s", m.Watermark, tc.watermark)
				}
			})
		}
	})

	t.Run("ModifiedDateWritesOnlyNewRows", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		tx := begin(t, bundle.pool)
		it := newItem(etl.ItemSpec{
			Params:      raw(`{"records":20,"step_seconds":3600,"base":"2026-02-01T00:00:00Z"}`),
			Strategy:    etl.StrategyModifiedDate,
			WindowStart: ptr(time.Date(2026, 2, 1, 14, 0, 0, 0, time.UTC)),
			Target:      tx,
		})
		require.NoError(t, synthetic.Handler(t.Context(), it))
		m := it.Metrics()
		require.Equal(t, int64(5), m.RecordsWritten) // hours 15..19
		require.Equal(t, time.Date(2026, 2, 1, 19, 0, 0, 0, time.UTC), m.Watermark.UTC())
		var minSeq int
		require.NoError(t, tx.QueryRow(t.Context(), `SELECT min(seq) FROM etl_synthetic_target`).Scan(&minSeq))
		require.Equal(t, 15, minSeq)
	})

	t.Run("LastRun", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name       string
			start, end *time.Time
			read       int64
		}{
			{"StartExclusiveEndInclusive", minute(2), minute(6), 4}, // rows 3..6
			{"BetweenRows", ptr(minute(2).Add(time.Second)), ptr(minute(6).Add(-time.Second)), 3},
			{"NoStart", nil, minute(6), 7},
			{"NoEnd", minute(6), nil, 3},
			{"EmptyWindow", minute(5), minute(5), 0},
			{"EndBeforeStart", minute(6), minute(2), 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				it := newItem(etl.ItemSpec{
					Params:      raw(`{"records":10}`),
					Strategy:    etl.StrategyLastRun,
					WindowStart: tc.start,
					WindowEnd:   tc.end,
				})
				require.NoError(t, synthetic.Handler(t.Context(), it))
				m := it.Metrics()
				require.Equal(t, tc.read, m.RecordsRead)
				require.Nil(t, m.Watermark, "last_run observes no watermark")
			})
		}
	})

	t.Run("StrategyNoneIgnoresWindow", func(t *testing.T) {
		t.Parallel()
		it := newItem(etl.ItemSpec{
			Params:      raw(`{"records":10}`),
			Strategy:    etl.StrategyNone,
			WindowStart: minute(5),
		})
		require.NoError(t, synthetic.Handler(t.Context(), it))
		require.Equal(t, etl.Metrics{RecordsRead: 10, Pages: 1}, it.Metrics())
	})

	t.Run("FailAttemptsThenSucceed", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		for attempt := 1; attempt <= 3; attempt++ {
			tx := begin(t, bundle.pool)
			it := newItem(etl.ItemSpec{
				Params:      raw(`{"records":30,"page_size":10,"fail_attempts":2}`),
				ItemAttempt: attempt,
				Target:      tx,
			})
			err := synthetic.Handler(t.Context(), it)
			if attempt <= 2 {
				require.ErrorIs(t, err, synthetic.ErrInjected, "attempt %d", attempt)
				require.Equal(t, etl.CategoryAPI, etl.Classify(err))
				require.False(t, etl.IsPermanent(err))
				// The fault fires after the first page, leaving partial work to roll back.
				require.Equal(t, etl.Metrics{RecordsRead: 10, RecordsWritten: 10, Pages: 1}, it.Metrics())
				require.NoError(t, tx.Rollback(t.Context()))
				continue
			}
			require.NoError(t, err, "attempt %d", attempt)
			require.Equal(t, etl.Metrics{RecordsRead: 30, RecordsWritten: 30, Pages: 3}, it.Metrics())
			require.NoError(t, tx.Commit(t.Context()))
		}
		require.Equal(t, 30, countRows(t, bundle.pool, synthetic.DefaultTargetTable))
	})

	t.Run("FailCategories", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			params    string
			category  etl.Category
			permanent bool
			wait      time.Duration
		}{
			{`{"fail_probability":1}`, etl.CategoryAPI, false, 0},
			{`{"fail_probability":1,"fail_category":"API","retry_after_ms":1500}`, etl.CategoryAPI, false, 1500 * time.Millisecond},
			{`{"fail_probability":1,"fail_category":"DB"}`, etl.CategoryDB, false, 0},
			{`{"fail_probability":1,"fail_category":"db"}`, etl.CategoryDB, false, 0},
			{`{"fail_probability":1,"fail_category":"DATA"}`, etl.CategoryData, true, 0},
			{`{"fail_probability":1,"fail_category":"SYSTEM"}`, etl.CategorySystem, false, 0},
			{`{"fail_attempts":1,"fail_category":"DB","retry_after_ms":1500}`, etl.CategoryDB, false, 0},
			{`{"records":0,"fail_attempts":1,"fail_category":"SYSTEM"}`, etl.CategorySystem, false, 0},
		} {
			err := synthetic.Handler(t.Context(), newItem(etl.ItemSpec{Params: raw(tc.params)}))
			require.ErrorIs(t, err, synthetic.ErrInjected, tc.params)
			require.Equal(t, tc.category, etl.Classify(err), tc.params)
			require.Equal(t, tc.permanent, etl.IsPermanent(err), tc.params)
			wait, _ := etl.RetryAfterOf(err)
			require.Equal(t, tc.wait, wait, tc.params)
		}
	})

	t.Run("FailProbabilityIsDeterministic", func(t *testing.T) {
		t.Parallel()
		outcomes := func(paramHash string, p float64) []bool {
			var failed []bool
			for attempt := 1; attempt <= 64; attempt++ {
				it := newItem(etl.ItemSpec{
					Params:      raw(fmt.Sprintf(`{"records":1,"fail_probability":%v}`, p)),
					ParamHash:   paramHash,
					ItemAttempt: attempt,
				})
				err := synthetic.Handler(t.Context(), it)
				if err != nil {
					require.ErrorIs(t, err, synthetic.ErrInjected)
				}
				failed = append(failed, err != nil)
			}
			return failed
		}
		half := outcomes(testParamHash, 0.5)
		require.Equal(t, half, outcomes(testParamHash, 0.5), "same item and attempt, same decision")
		require.NotEqual(t, half, outcomes(strings.Repeat("0", 64), 0.5), "another item decides differently")
		require.Contains(t, half, true)
		require.Contains(t, half, false)
		require.NotContains(t, outcomes(testParamHash, 0), true)
		require.NotContains(t, outcomes(testParamHash, 1), false)
	})

	t.Run("Panic", func(t *testing.T) {
		t.Parallel()
		it := newItem(etl.ItemSpec{Params: raw(`{"records":50,"page_size":10,"panic":true}`)})
		var recovered any
		func() {
			defer func() { recovered = recover() }()
			_ = synthetic.Handler(t.Context(), it)
		}()
		require.NotNil(t, recovered)
		require.Contains(t, fmt.Sprint(recovered), "synthetic: injected panic")
		require.Equal(t, int64(1), it.Metrics().Pages, "panics on the first page")
	})

	t.Run("HangReturnsOnCancel", func(t *testing.T) {
		t.Parallel()
		for _, params := range []string{`{"hang":true}`, `{"page_latency_ms":3600000}`} {
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- synthetic.Handler(ctx, newItem(etl.ItemSpec{Params: raw(params)})) }()
			cancel()
			select {
			case err := <-done:
				require.ErrorIs(t, err, context.Canceled, params)
				require.Equal(t, etl.CategorySystem, etl.Classify(err))
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: handler did not return after cancel", params)
			}
		}
	})

	t.Run("HangHonoursDeadline", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		err := synthetic.Handler(ctx, newItem(etl.ItemSpec{Params: raw(`{"hang":true}`)}))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, etl.CategorySystem, etl.Classify(err))
	})

	t.Run("CancelledBeforeStart", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		it := newItem(etl.ItemSpec{Params: raw(`{"records":1000,"page_size":1}`)})
		require.ErrorIs(t, synthetic.Handler(ctx, it), context.Canceled)
		require.Zero(t, it.Metrics().Pages)
	})

	t.Run("Noop", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		tx := begin(t, bundle.pool)
		it := newItem(etl.ItemSpec{
			Params:   raw(`{"noop":true,"records":1000,"fail_probability":1,"hang":true}`),
			Strategy: etl.StrategyModifiedDate,
			Target:   tx,
		})
		require.NoError(t, synthetic.Handler(t.Context(), it))
		require.Equal(t, etl.Metrics{}, it.Metrics())
		var exists bool
		require.NoError(t, tx.QueryRow(t.Context(), `SELECT to_regclass('etl_synthetic_target') IS NOT NULL`).Scan(&exists))
		require.False(t, exists, "noop touches no table")
	})

	t.Run("BadParamsAreData", func(t *testing.T) {
		t.Parallel()
		for _, spec := range []etl.ItemSpec{
			{Params: raw(`{"recordz":5}`)},
			{Params: raw(`{"records":"5"}`)},
			{Params: raw(`{"records":1.5}`)},
			{Params: raw(`{"records":-1}`)},
			{Params: raw(`{"page_size":0}`)},
			{Params: raw(`{"page_latency_ms":-1}`)},
			{Params: raw(`{"fail_probability":1.5}`)},
			{Params: raw(`{"fail_category":"NONE"}`)},
			{Params: raw(`{"fail_attempts":-1}`)},
			{Params: raw(`{"retry_after_ms":-1}`)},
			{Params: raw(`{"key":""}`)},
			{Params: raw(`{"base":"yesterday"}`)},
			{Params: raw(`{"step_seconds":0}`)},
			{Params: raw(`{"base":"9999-12-31T00:00:00Z","records":2,"step_seconds":86400}`)},
			{Config: raw(`{"target":"x"}`)},
			{Config: raw(`{"target_table":""}`)},
			{Config: raw(`{"target_table":"a.b.c"}`)},
			{Config: raw(`{"target_table":"public."}`)},
			{Config: raw(`{"target_table":"` + strings.Repeat("t", 64) + `"}`)},
			{Params: raw(`{}`), Strategy: "yearly"},
		} {
			err := synthetic.Handler(t.Context(), newItem(spec))
			require.Error(t, err, "%s %s", spec.Params, spec.Config)
			require.Equal(t, etl.CategoryData, etl.Classify(err), "%s %s: %v", spec.Params, spec.Config, err)
			require.True(t, etl.IsPermanent(err))
			require.NotErrorIs(t, err, synthetic.ErrInjected)
		}
	})

	t.Run("TargetTableIsQuoted", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		_, err := bundle.pool.Exec(t.Context(), `CREATE TABLE y (id int)`)
		require.NoError(t, err)
		const evil = `x"; drop table y; --`
		tx := begin(t, bundle.pool)
		it := newItem(etl.ItemSpec{
			Params: raw(`{"records":3}`),
			Config: raw(fmt.Sprintf(`{"target_table":%q}`, evil)),
			Target: tx,
		})
		require.NoError(t, synthetic.Handler(t.Context(), it))
		require.NoError(t, tx.Commit(t.Context()))
		var survives bool
		require.NoError(t, bundle.pool.QueryRow(t.Context(), `SELECT to_regclass('y') IS NOT NULL`).Scan(&survives))
		require.True(t, survives, "table y was dropped")
		require.Equal(t, 3, countRows(t, bundle.pool, pgx.Identifier{evil}.Sanitize()))
	})

	t.Run("ConcurrentCreateOfOneTable", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		params := raw(`{"records":5}`)

		first := begin(t, bundle.pool)
		require.NoError(t, synthetic.Handler(t.Context(), newItem(etl.ItemSpec{Params: params, Target: first})))

		// The second transaction cannot see the uncommitted table, so it waits for the
		// first creator's lock; without the lock it would fail on pg_type's unique index
		// once the first commits.
		second := begin(t, bundle.pool)
		done := make(chan error, 1)
		go func() {
			done <- synthetic.Handler(t.Context(), newItem(etl.ItemSpec{
				Params: params, ParamHash: strings.Repeat("1", 64), Target: second,
			}))
		}()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var waiting int
			require.NoError(t, bundle.pool.QueryRow(t.Context(),
				`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&waiting))
			if waiting == 1 {
				break
			}
			require.True(t, time.Now().Before(deadline), "second transaction never waited on the lock")
			select {
			case err := <-done:
				t.Fatalf("second handler returned before the first committed: %v", err)
			case <-time.After(5 * time.Millisecond):
			}
		}
		require.NoError(t, first.Commit(t.Context()))
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("second handler did not finish after the first committed")
		}
		require.NoError(t, second.Commit(t.Context()))
		require.Equal(t, 10, countRows(t, bundle.pool, synthetic.DefaultTargetTable))
	})
}

func TestRegister(t *testing.T) {
	t.Parallel()
	r := etl.NewRegistry()
	synthetic.Register(r)
	h, ok := r.Lookup(synthetic.Kind)
	require.True(t, ok)
	require.NoError(t, h(t.Context(), newItem(etl.ItemSpec{Params: raw(`{"noop":true}`)})))
	require.Panics(t, func() { synthetic.Register(r) }, "registering twice is a start-up bug")
}

func ptr[T any](v T) *T { return &v }
