package store_test

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/store"
)

const logRun = "0193a0b0-0000-7000-8000-0000000000aa"

// logPartitionsSetup returns a store on a migrated database whose log partitions (made by the
// template for the current month) are removed, plus a job and a run to attach log lines to.
func logPartitionsSetup(t *testing.T) *store.Store {
	t.Helper()
	ctx := context.Background()
	st := dbtest.Store(t)
	for _, name := range listLogPartitions(t, st) {
		_, err := st.Pool().Exec(ctx, "DROP TABLE "+pgx.Identifier{"public", name}.Sanitize())
		require.NoError(t, err)
	}
	_, err := st.Pool().Exec(ctx, `INSERT INTO dw_etl_jobs (job_id, kind) VALUES ('logjob', 'synthetic')`)
	require.NoError(t, err)
	_, err = st.Pool().Exec(ctx, `INSERT INTO dw_etl_runs (run_id, job_id, status) VALUES ($1, 'logjob', 'SUCCESS')`, logRun)
	require.NoError(t, err)
	return st
}

func listLogPartitions(t *testing.T, st *store.Store) []string {
	t.Helper()
	rows, err := st.Pool().Query(context.Background(), `SELECT c.relname::text FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'public.dw_etl_run_logs'::regclass ORDER BY 1`)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

func insertLogAt(st *store.Store, ts time.Time) error {
	_, err := st.Pool().Exec(context.Background(), `INSERT INTO dw_etl_run_logs (ts, run_id, job_id, level, message)
		VALUES ($1, $2, 'logjob', 'info', 'hello')`, ts, logRun)
	return err
}

func sortedNames(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func TestMaintainLogPartitions(t *testing.T) {
	t.Parallel()
	const retention = 90 * 24 * time.Hour
	// Now-Retention is 2030-04-16 12:00, so April 2030 is the oldest month kept.
	now := time.Date(2030, 7, 15, 12, 0, 0, 0, time.UTC)

	t.Run("CreatesWindowAndMonthsAhead", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		st := logPartitionsSetup(t)
		rep, err := st.MaintainLogPartitions(ctx, store.LogMaintenance{Now: now, Retention: retention, MonthsAhead: 3})
		require.NoError(t, err)
		want := []string{
			"dw_etl_run_logs_2030_04", "dw_etl_run_logs_2030_05", "dw_etl_run_logs_2030_06",
			"dw_etl_run_logs_2030_07", "dw_etl_run_logs_2030_08", "dw_etl_run_logs_2030_09",
			"dw_etl_run_logs_2030_10",
		}
		require.Equal(t, want, sortedNames(rep.Created))
		require.Empty(t, rep.Dropped)
		require.Equal(t, want, listLogPartitions(t, st))

		again, err := st.MaintainLogPartitions(ctx, store.LogMaintenance{Now: now, Retention: retention, MonthsAhead: 3})
		require.NoError(t, err)
		require.Empty(t, again.Created, "second call must be idempotent")
		require.Empty(t, again.Dropped, "second call must be idempotent")
		require.Equal(t, want, listLogPartitions(t, st))

		// Each month's bounds are [first of month, first of next month) in UTC.
		for _, ts := range []time.Time{
			time.Date(2030, 4, 1, 0, 0, 0, 0, time.UTC), // first instant of the window
			now.Add(-retention),                         // the cutoff itself
			now,                                         // today
			time.Date(2030, 10, 31, 23, 59, 59, 999999000, time.UTC), // last instant of the last month ahead
		} {
			require.NoError(t, insertLogAt(st, ts), ts)
		}
		var placed string
		require.NoError(t, st.Pool().QueryRow(ctx, `SELECT tableoid::regclass::text FROM dw_etl_run_logs
			WHERE ts = $1`, now).Scan(&placed))
		require.Equal(t, "dw_etl_run_logs_2030_07", placed)

		for _, ts := range []time.Time{
			time.Date(2030, 3, 31, 23, 59, 59, 0, time.UTC), // before the window
			time.Date(2030, 11, 1, 0, 0, 0, 0, time.UTC),    // beyond the months ahead
		} {
			err := insertLogAt(st, ts)
			require.ErrorContains(t, err, "no partition of relation \"dw_etl_run_logs\" found for row", ts)
		}
	})

	t.Run("LaterRunDropsExpiredAndCreatesNew", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		st := logPartitionsSetup(t)
		_, err := st.MaintainLogPartitions(ctx, store.LogMaintenance{Now: now, Retention: retention, MonthsAhead: 3})
		require.NoError(t, err)
		require.NoError(t, insertLogAt(st, time.Date(2030, 5, 20, 0, 0, 0, 0, time.UTC)))
		require.NoError(t, insertLogAt(st, time.Date(2030, 10, 20, 0, 0, 0, 0, time.UTC)))

		// Six months on, Now-Retention is 2030-10-17 12:00: every month that ended before it goes.
		later := now.AddDate(0, 6, 0)
		rep, err := st.MaintainLogPartitions(ctx, store.LogMaintenance{Now: later, Retention: retention, MonthsAhead: 3})
		require.NoError(t, err)
		require.Equal(t, []string{
			"dw_etl_run_logs_2030_04", "dw_etl_run_logs_2030_05", "dw_etl_run_logs_2030_06",
			"dw_etl_run_logs_2030_07", "dw_etl_run_logs_2030_08", "dw_etl_run_logs_2030_09",
		}, rep.Dropped)
		require.Equal(t, []string{
			"dw_etl_run_logs_2030_11", "dw_etl_run_logs_2030_12", "dw_etl_run_logs_2031_01",
			"dw_etl_run_logs_2031_02", "dw_etl_run_logs_2031_03", "dw_etl_run_logs_2031_04",
		}, sortedNames(rep.Created))
		require.Equal(t, []string{
			"dw_etl_run_logs_2030_10", "dw_etl_run_logs_2030_11", "dw_etl_run_logs_2030_12",
			"dw_etl_run_logs_2031_01", "dw_etl_run_logs_2031_02", "dw_etl_run_logs_2031_03",
			"dw_etl_run_logs_2031_04",
		}, listLogPartitions(t, st))

		var kept, gone int
		require.NoError(t, st.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE ts >= '2030-10-01'),
			count(*) FILTER (WHERE ts < '2030-10-01') FROM dw_etl_run_logs`).Scan(&kept, &gone))
		require.Equal(t, 1, kept, "the month holding the cutoff is kept with its rows")
		require.Zero(t, gone, "expired months are dropped with their rows")

		require.NoError(t, insertLogAt(st, later.Add(-retention)))
		require.NoError(t, insertLogAt(st, time.Date(2031, 4, 30, 0, 0, 0, 0, time.UTC)))
		require.ErrorContains(t, insertLogAt(st, time.Date(2030, 9, 30, 0, 0, 0, 0, time.UTC)),
			"no partition of relation \"dw_etl_run_logs\" found for row")

		again, err := st.MaintainLogPartitions(ctx, store.LogMaintenance{Now: later, Retention: retention, MonthsAhead: 3})
		require.NoError(t, err)
		require.Empty(t, again.Created)
		require.Empty(t, again.Dropped)
	})

	t.Run("ConcurrentCallsCreateEachPartitionOnce", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		st := logPartitionsSetup(t)
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			reps  [4]*store.LogMaintenanceReport
			errs  [4]error
		)
		for i := range reps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				reps[i], errs[i] = st.MaintainLogPartitions(ctx, store.LogMaintenance{Now: now, Retention: retention, MonthsAhead: 3})
			}()
		}
		close(start)
		wg.Wait()
		var created []string
		for i := range reps {
			require.NoError(t, errs[i])
			created = append(created, reps[i].Created...)
		}
		require.Len(t, created, 7)
		require.Equal(t, listLogPartitions(t, st), sortedNames(created))
	})

	t.Run("ForeignPartitionsAreLeftAlone", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		st := logPartitionsSetup(t)
		_, err := st.Pool().Exec(ctx, `CREATE TABLE public.dw_etl_run_logs_archive PARTITION OF public.dw_etl_run_logs
			FOR VALUES FROM ('2000-01-01') TO ('2001-01-01')`)
		require.NoError(t, err)
		rep, err := st.MaintainLogPartitions(ctx, store.LogMaintenance{Now: now, Retention: retention, MonthsAhead: 3})
		require.NoError(t, err)
		require.NotContains(t, rep.Dropped, "dw_etl_run_logs_archive")
		require.Contains(t, listLogPartitions(t, st), "dw_etl_run_logs_archive")
	})
}
