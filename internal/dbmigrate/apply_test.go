package dbmigrate_test

import (
	"context"
	"hash/fnv"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"ariga.io/atlas/sql/migrate"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbmigrate"
	"github.com/etlexec/etlexec/internal/dbtest"
)

// lockKey is the advisory lock key the Atlas CLI derives from its lock name.
func lockKey() int64 {
	h := fnv.New32()
	h.Write([]byte(dbmigrate.LockName))
	return int64(h.Sum32())
}

func TestApply(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("URLWithPoolSettings", func(t *testing.T) {
		t.Parallel()
		// The form every other command accepts: pool settings database/sql does not know.
		u := dbtest.EmptyDatabase(t)
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		m := &dbmigrate.Migrator{DB: openDB(t, u+sep+"pool_max_conns=3&pool_min_conns=1")}
		rep, err := m.Apply(ctx)
		require.NoError(t, err)
		require.Equal(t, embeddedFiles(t), rep.Applied)
	})

	t.Run("SecondApplyIsNoOp", func(t *testing.T) {
		t.Parallel()
		u := dbtest.EmptyDatabase(t)
		db := openDB(t, u)
		m := &dbmigrate.Migrator{DB: db}

		st, err := m.Status(ctx)
		require.NoError(t, err)
		require.Empty(t, st.Applied)
		require.Equal(t, embeddedFiles(t), st.Pending)
		require.Nil(t, st.Legacy, "an empty database is not a legacy one")

		rep, err := m.Apply(ctx)
		require.NoError(t, err)
		require.Equal(t, embeddedFiles(t), rep.Applied)
		require.Nil(t, rep.Legacy)

		var executedAt time.Time
		require.NoError(t, connect(t, u).QueryRow(ctx,
			`SELECT max(executed_at) FROM atlas_schema_revisions.atlas_schema_revisions`).Scan(&executedAt))

		rep, err = m.Apply(ctx)
		require.NoError(t, err)
		require.Empty(t, rep.Applied, "second apply must be a no-op")

		st, err = m.Status(ctx)
		require.NoError(t, err)
		require.Empty(t, st.Pending)
		require.Len(t, st.Applied, len(embeddedFiles(t)))
		for _, r := range st.Applied {
			require.Equal(t, r.Total, r.Applied, r.Version)
			require.Empty(t, r.Error, r.Version)
		}
		var again time.Time
		require.NoError(t, connect(t, u).QueryRow(ctx,
			`SELECT max(executed_at) FROM atlas_schema_revisions.atlas_schema_revisions`).Scan(&again))
		require.True(t, executedAt.Equal(again), "the second apply must not rewrite revisions")
	})

	t.Run("RevisionsLikeTheCLI", func(t *testing.T) {
		t.Parallel()
		u := dbtest.EmptyDatabase(t)
		applyAll(t, openDB(t, u), nil)
		conn := connect(t, u)

		// The table the CLI creates through ent, column for column.
		rows, err := conn.Query(ctx, `SELECT column_name || ' ' || data_type || ' ' || is_nullable
			FROM information_schema.columns
			WHERE table_schema = 'atlas_schema_revisions' AND table_name = 'atlas_schema_revisions'
			ORDER BY ordinal_position`)
		require.NoError(t, err)
		var cols []string
		for rows.Next() {
			var c string
			require.NoError(t, rows.Scan(&c))
			cols = append(cols, c)
		}
		require.NoError(t, rows.Err())
		require.Equal(t, []string{
			"version character varying NO",
			"description character varying NO",
			"type bigint NO",
			"applied bigint NO",
			"total bigint NO",
			"executed_at timestamp with time zone NO",
			"execution_time bigint NO",
			"error text YES",
			"error_stmt text YES",
			"hash character varying NO",
			"partial_hashes jsonb YES",
			"operator_version character varying NO",
		}, cols)

		dir, err := dbmigrate.Dir()
		require.NoError(t, err)
		sum, err := dir.Checksum()
		require.NoError(t, err)
		files, err := dir.Files()
		require.NoError(t, err)

		type row struct {
			Version, Description, Hash, Operator string
			Type, Applied, Total, ExecNS         int64
			Error                                *string
		}
		rows, err = conn.Query(ctx, `SELECT version, description, hash, operator_version, type, applied, total,
			execution_time, error FROM atlas_schema_revisions.atlas_schema_revisions ORDER BY version`)
		require.NoError(t, err)
		var got []row
		for rows.Next() {
			var r row
			require.NoError(t, rows.Scan(&r.Version, &r.Description, &r.Hash, &r.Operator, &r.Type, &r.Applied,
				&r.Total, &r.ExecNS, &r.Error))
			got = append(got, r)
		}
		require.NoError(t, rows.Err())
		require.Len(t, got, len(files))
		for i, f := range files {
			r := got[i]
			require.Equal(t, f.Version(), r.Version)
			require.Equal(t, f.Desc(), r.Description)
			require.Equal(t, int64(migrate.RevisionTypeExecute), r.Type, "type 2 = executed")
			require.Positive(t, r.Total, f.Name())
			require.Equal(t, r.Total, r.Applied, f.Name())
			require.Positive(t, r.ExecNS, f.Name())
			require.Nil(t, r.Error, f.Name())
			require.Equal(t, dbmigrate.OperatorVersionDefault, r.Operator)
			want, err := sum.SumByName(f.Name())
			require.NoError(t, err)
			require.False(t, strings.HasPrefix(r.Hash, "h1:"), "the CLI stores the hash without its h1: prefix")
			require.Equal(t, want, r.Hash, f.Name())
		}
	})

	t.Run("ConcurrentAppliesRunFilesOnce", func(t *testing.T) {
		t.Parallel()
		u := dbtest.EmptyDatabase(t)
		dbs := [2]*dbmigrate.Migrator{{DB: openDB(t, u)}, {DB: openDB(t, u)}}
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			reps  [2]*dbmigrate.Report
			errs  [2]error
		)
		for i, m := range dbs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				reps[i], errs[i] = m.Apply(ctx)
			}()
		}
		close(start)
		wg.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		applied := append(append([]string{}, reps[0].Applied...), reps[1].Applied...)
		sort.Strings(applied)
		require.Equal(t, embeddedFiles(t), applied, "each file applied by exactly one of the two")

		var n, distinct int
		require.NoError(t, connect(t, u).QueryRow(ctx, `SELECT count(*), count(DISTINCT version)
			FROM atlas_schema_revisions.atlas_schema_revisions`).Scan(&n, &distinct))
		require.Equal(t, len(embeddedFiles(t)), n)
		require.Equal(t, n, distinct)
	})

	t.Run("WaitsForTheCLILock", func(t *testing.T) {
		t.Parallel()
		u := dbtest.EmptyDatabase(t)
		holder := connect(t, u)
		// Hold the lock as `atlas migrate apply` would: same name, same key.
		_, err := holder.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockKey())
		require.NoError(t, err)

		var (
			rep  *dbmigrate.Report
			aerr error
			done = make(chan struct{})
		)
		go func() {
			defer close(done)
			rep, aerr = (&dbmigrate.Migrator{DB: openDB(t, u), LockTimeout: time.Minute}).Apply(ctx)
		}()

		// Atlas polls pg_try_advisory_lock with a backoff starting at 25ms. One attempt can show two
		// close query_start values (parse, then execute), so only a spread of retries over 100ms
		// proves that Apply was refused and kept waiting.
		observer := connect(t, u)
		var first, last time.Time
		require.Eventually(t, func() bool {
			rows, err := observer.Query(ctx, `SELECT query_start FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid()
				AND query LIKE 'SELECT pg_try_advisory_lock(%'`)
			if err != nil {
				return false
			}
			starts, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
			if err != nil {
				return false
			}
			for _, ts := range starts {
				if first.IsZero() || ts.Before(first) {
					first = ts
				}
				if ts.After(last) {
					last = ts
				}
			}
			return last.Sub(first) >= 100*time.Millisecond
		}, 10*time.Second, 5*time.Millisecond, "Apply never retried the advisory lock")

		select {
		case <-done:
			t.Fatalf("Apply finished while the lock was held elsewhere: %v", aerr)
		default:
		}
		var revisions bool
		require.NoError(t, observer.QueryRow(ctx,
			`SELECT to_regclass('atlas_schema_revisions.atlas_schema_revisions') IS NOT NULL`).Scan(&revisions))
		require.False(t, revisions, "Apply changed the database before taking the lock")

		_, err = holder.Exec(ctx, `SELECT pg_advisory_unlock($1)`, lockKey())
		require.NoError(t, err)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("Apply did not finish after the lock was released")
		}
		require.NoError(t, aerr)
		require.Equal(t, embeddedFiles(t), rep.Applied)
	})

	t.Run("GivesUpAfterLockTimeout", func(t *testing.T) {
		t.Parallel()
		u := dbtest.EmptyDatabase(t)
		holder := connect(t, u)
		_, err := holder.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockKey())
		require.NoError(t, err)
		_, err = (&dbmigrate.Migrator{DB: openDB(t, u), LockTimeout: 100 * time.Millisecond}).Apply(ctx)
		require.ErrorContains(t, err, dbmigrate.LockName)
	})
}
