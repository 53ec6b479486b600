package pgtarget_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/kinds/pgtarget"
)

func TestStream(t *testing.T) {
	t.Parallel()

	target := pgtarget.Target{Table: "items", KeyColumns: []string{"id"}}
	// setup returns a transaction on a fresh database holding items (id int key, v text) with
	// the given rows, and a stream of rows carrying id and v into it.
	setup := func(t *testing.T, existing string) (pgx.Tx, *pgtarget.Stream) {
		t.Helper()
		pool := dbtest.Pool(t)
		_, err := pool.Exec(t.Context(), `CREATE TABLE items (id int PRIMARY KEY, v text)`+existing)
		require.NoError(t, err)
		tx, err := pool.Begin(t.Context())
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback(t.Context()) })
		st, err := pgtarget.NewStream(t.Context(), tx, target, []string{"v", "id"})
		require.NoError(t, err)
		require.Equal(t, []string{"id", "v"}, st.Fields(), "the rows carry the fields in the target's column order")
		return tx, st
	}
	values := func(rows ...[]any) func(*pgtarget.CopyWriter) error {
		return func(out *pgtarget.CopyWriter) error {
			for _, r := range rows {
				if err := out.ValueRow(r); err != nil {
					return err
				}
			}
			return nil
		}
	}
	contents := func(t *testing.T, tx pgx.Tx) map[int]string {
		t.Helper()
		rows, err := tx.Query(t.Context(), `SELECT id, v FROM items`)
		require.NoError(t, err)
		got := map[int]string{}
		var (
			id int
			v  string
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &v}, func() error { got[id] = v; return nil })
		require.NoError(t, err)
		return got
	}

	t.Run("WholeIntoAnEmptyTableGoesStraightIn", func(t *testing.T) {
		t.Parallel()
		tx, st := setup(t, "")
		n, how, err := st.Copy(t.Context(), pgtarget.CopyOptions{Whole: true}, values([]any{1, "a"}, []any{2, "b"}))
		require.NoError(t, err)
		require.Equal(t, int64(2), n)
		require.Equal(t, "by COPY straight into the table", how)
		require.Equal(t, map[int]string{1: "a", 2: "b"}, contents(t, tx))
	})

	t.Run("FirstLoadOverAnExistingKeyFallsBackToTheUpsert", func(t *testing.T) {
		t.Parallel()
		tx, st := setup(t, `; INSERT INTO items VALUES (1, 'old'), (3, 'kept')`)
		passes := 0
		write := values([]any{1, "new"}, []any{2, "b"})
		n, how, err := st.Copy(t.Context(), pgtarget.CopyOptions{FirstLoad: true}, func(out *pgtarget.CopyWriter) error {
			passes++
			return write(out)
		})
		require.NoError(t, err)
		require.Equal(t, int64(2), n)
		require.Contains(t, how, "a key already existed")
		require.Equal(t, 2, passes, "the rows are written again into the staging table")
		require.Equal(t, map[int]string{1: "new", 2: "b", 3: "kept"}, contents(t, tx))
	})

	t.Run("BinaryOfAnotherTypeIsStagedAndCast", func(t *testing.T) {
		t.Parallel()
		tx, st := setup(t, "")
		id := binary.BigEndian.AppendUint64(nil, 7) // a bigint for the int column
		opts := pgtarget.CopyOptions{Binary: true, FirstLoad: true,
			SourceTypes: []pgtarget.SourceType{{OID: 20, Typmod: -1}, {OID: 25, Typmod: -1}}}
		n, how, err := st.Copy(t.Context(), opts, func(out *pgtarget.CopyWriter) error {
			return out.RawRow([][]byte{id, []byte("seven")})
		})
		require.NoError(t, err)
		require.Equal(t, int64(1), n)
		require.Equal(t, "through a staging table", how, "binary values load only into their own type")
		require.Equal(t, map[int]string{7: "seven"}, contents(t, tx))
	})

	t.Run("TheSourcesErrorIsReturnedAsItIs", func(t *testing.T) {
		t.Parallel()
		_, st := setup(t, "")
		errSource := errors.New("source went away")
		_, _, err := st.Copy(t.Context(), pgtarget.CopyOptions{Whole: true}, func(out *pgtarget.CopyWriter) error {
			if err := out.ValueRow([]any{1, "a"}); err != nil {
				return err
			}
			return errSource
		})
		require.Same(t, errSource, err)
	})
}
