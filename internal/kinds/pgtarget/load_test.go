package pgtarget_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/kinds/pgtarget"
)

func TestLoadPage(t *testing.T) {
	t.Parallel()

	type loadBundle struct {
		pool *pgxpool.Pool
		tx   pgx.Tx
	}
	setup := func(t *testing.T) *loadBundle {
		t.Helper()
		pool := dbtest.Pool(t)
		_, err := pool.Exec(t.Context(), `CREATE TABLE items (
			id bigint PRIMARY KEY,
			name text NOT NULL,
			qty int,
			price numeric,
			at timestamptz,
			doc jsonb,
			note text,
			loaded_at timestamptz NOT NULL DEFAULT now()
		)`)
		require.NoError(t, err)
		tx, err := pool.Begin(t.Context())
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback(t.Context()) })
		return &loadBundle{pool: pool, tx: tx}
	}
	target := pgtarget.Target{
		Table:      "items",
		KeyColumns: []string{"id"},
		Columns: map[string]string{
			"id": "id", "name": "title", "qty": "qty", "price": "price", "at": "updated", "doc": "doc", "note": "note",
		},
	}

	t.Run("RecordsFromJSON", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var recs []map[string]any
		dec := json.NewDecoder(strings.NewReader(`[
			{"id": 9007199254740993, "title": "big", "qty": 3, "price": 1.25, "updated": "2026-03-01T10:00:00.5+02:00",
			 "doc": {"a": [1, 2]}, "note": {"k": true}},
			{"id": 2, "title": "plain", "qty": null, "price": 7, "doc": "just a string", "note": 42.5},
			{"id": 2, "title": "plain, again", "note": false}
		]`))
		dec.UseNumber()
		require.NoError(t, dec.Decode(&recs))

		n, err := pgtarget.LoadPage(t.Context(), b.tx, target, pgtarget.Page{Records: recs})
		require.NoError(t, err)
		require.Equal(t, int64(2), n, "the last of the rows sharing key 2 wins")

		var (
			name, price, doc, note string
			at                     time.Time
		)
		require.NoError(t, b.tx.QueryRow(t.Context(),
			`SELECT name, price::text, at, doc::text, note FROM items WHERE id = 9007199254740993`).
			Scan(&name, &price, &at, &doc, &note))
		require.Equal(t, "big", name)
		require.Equal(t, "1.25", price)
		require.True(t, time.Date(2026, 3, 1, 8, 0, 0, 5e8, time.UTC).Equal(at), "%s", at)
		require.JSONEq(t, `{"a":[1,2]}`, doc)
		require.JSONEq(t, `{"k":true}`, note)

		var (
			qty  *int
			doc2 *string
		)
		require.NoError(t, b.tx.QueryRow(t.Context(), `SELECT name, qty, doc::text, note FROM items WHERE id = 2`).
			Scan(&name, &qty, &doc2, &note))
		require.Equal(t, "plain, again", name)
		require.Nil(t, qty)
		require.Nil(t, doc2, "missing fields load as NULL")
		require.Equal(t, "false", note)

		// Loading again leaves an unchanged row alone and updates a changed one in place; a
		// second page reuses the staging table.
		n, err = pgtarget.LoadPage(t.Context(), b.tx, target, pgtarget.Page{Records: recs[:1]})
		require.NoError(t, err)
		require.Zero(t, n, "unchanged")
		recs[0]["title"] = "bigger"
		n, err = pgtarget.LoadPage(t.Context(), b.tx, target, pgtarget.Page{Records: recs[:1]})
		require.NoError(t, err)
		require.Equal(t, int64(1), n)
		var rows int
		require.NoError(t, b.tx.QueryRow(t.Context(), `SELECT count(*) FROM items`).Scan(&rows))
		require.Equal(t, 2, rows)
	})

	t.Run("ChangedRowsOnlyEvenWithoutEquality", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.tx.Exec(t.Context(), `CREATE TABLE docs (id int PRIMARY KEY, j json, p point, tags text[])`)
		require.NoError(t, err)
		tgt := pgtarget.Target{Table: "docs", KeyColumns: []string{"id"}}
		page := func(j, p string, tags []string) pgtarget.Page {
			return pgtarget.Page{Fields: []string{"id", "j", "p", "tags"}, Rows: [][]any{{1, json.RawMessage(j), p, tags}}}
		}
		for _, tc := range []struct {
			page pgtarget.Page
			want int64
		}{
			{page(`{"a": 1}`, "(1,2)", []string{"x"}), 1},
			{page(`{"a": 1}`, "(1,2)", []string{"x"}), 0},
			{page(`{"a": 2}`, "(1,2)", []string{"x"}), 1},
			{page(`{"a": 2}`, "(1,3)", []string{"x"}), 1},
			{page(`{"a": 2}`, "(1,3)", []string{"x", "y"}), 1},
		} {
			n, err := pgtarget.LoadPage(t.Context(), b.tx, tgt, tc.page)
			require.NoError(t, err)
			require.Equal(t, tc.want, n, "%v", tc.page.Rows)
		}
	})

	t.Run("RowsWithIdentityMapping", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		page := pgtarget.Page{
			Fields: []string{"name", "id"},
			Rows:   [][]any{{"a", int64(1)}, {"b", int32(2)}},
		}
		n, err := pgtarget.LoadPage(t.Context(), b.tx, pgtarget.Target{Table: "public.items", KeyColumns: []string{"id"}}, page)
		require.NoError(t, err)
		require.Equal(t, int64(2), n)

		// Key columns only: existing rows are left alone.
		n, err = pgtarget.LoadPage(t.Context(), b.tx, pgtarget.Target{Table: "items", KeyColumns: []string{"id"}},
			pgtarget.Page{Fields: []string{"id"}, Rows: [][]any{{1}}})
		require.Error(t, err, "name is NOT NULL, so a new row without it fails")
		require.Equal(t, etl.CategoryData, etl.Classify(err))
		require.Zero(t, n)
	})

	t.Run("Errors", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		one := pgtarget.Page{Records: []map[string]any{{"id": 1, "title": "x"}}}
		for _, tc := range []struct {
			target pgtarget.Target
			page   pgtarget.Page
			want   string
		}{
			{pgtarget.Target{Table: "nowhere", KeyColumns: []string{"id"}, Columns: target.Columns}, one,
				`target table "nowhere" does not exist`},
			{pgtarget.Target{Table: "items", KeyColumns: []string{"id"}, Columns: map[string]string{"id": "id", "colour": "c"}}, one,
				`target table "items" has no column "colour"`},
			{pgtarget.Target{Table: "items", KeyColumns: []string{"name"}, Columns: target.Columns}, one,
				"no unique or exclusion constraint"},
			{pgtarget.Target{Table: "items", KeyColumns: []string{"id"}}, one, "columns: required"},
			{pgtarget.Target{Table: "items", Columns: target.Columns}, one, "key_columns"},
			{pgtarget.Target{Table: "items", KeyColumns: []string{"id"}, Columns: map[string]string{"id": "id"}},
				pgtarget.Page{Fields: []string{"key"}, Rows: [][]any{{1}}}, `source field "id"`},
			{target, pgtarget.Page{Records: []map[string]any{{"id": 1, "title": "x", "qty": json.Number("1.5")}}},
				"1.5"},
			{target, pgtarget.Page{Records: []map[string]any{{"id": 1, "title": "x", "qty": 1.5}}},
				"not an integer"},
			{target, pgtarget.Page{Records: []map[string]any{{"id": 1, "title": "x", "updated": "soon"}}},
				"soon"},
		} {
			// Each case in its own savepoint: a failed statement aborts the transaction.
			sp, err := b.tx.Begin(t.Context())
			require.NoError(t, err)
			_, err = pgtarget.LoadPage(t.Context(), sp, tc.target, tc.page)
			require.Error(t, err, tc.want)
			require.Equal(t, etl.CategoryData, etl.Classify(err), "%v", err)
			require.True(t, etl.IsPermanent(err))
			require.Contains(t, err.Error(), tc.want)
			require.NoError(t, sp.Rollback(t.Context()))
		}
		_, err := pgtarget.LoadPage(t.Context(), nil, target, one)
		require.ErrorContains(t, err, "no target database")
	})

	t.Run("ValidateNamesTheField", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			target pgtarget.Target
			want   string
		}{
			{pgtarget.Target{Table: "", KeyColumns: []string{"id"}}, "target_table"},
			{pgtarget.Target{Table: "a.b.c", KeyColumns: []string{"id"}}, "target_table"},
			{pgtarget.Target{Table: "a.", KeyColumns: []string{"id"}}, "target_table"},
			{pgtarget.Target{Table: strings.Repeat("t", 64), KeyColumns: []string{"id"}}, "target_table"},
			{pgtarget.Target{Table: "t\x00", KeyColumns: []string{"id"}}, "target_table"},
			{pgtarget.Target{Table: "t"}, "key_columns"},
			{pgtarget.Target{Table: "t", KeyColumns: []string{"id", "id"}}, "key_columns"},
			{pgtarget.Target{Table: "t", KeyColumns: []string{"id"}, Columns: map[string]string{"x": "x"}}, "key_columns"},
			{pgtarget.Target{Table: "t", KeyColumns: []string{"id"}, Columns: map[string]string{"id": ""}}, "columns"},
			{pgtarget.Target{Table: "t", KeyColumns: []string{"id"}, Columns: map[string]string{"id": "id", "": "x"}}, "columns"},
		} {
			err := tc.target.Validate()
			require.Error(t, err, "%+v", tc.target)
			require.Equal(t, etl.CategoryData, etl.Classify(err))
			require.True(t, strings.HasPrefix(err.Error(), tc.want), "%q does not start with %q", err, tc.want)
		}
		require.NoError(t, pgtarget.Target{Table: "dw.t", KeyColumns: []string{"id"}}.Validate())
	})
}
