package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/testfactory"
)

// A large run's finalisation holds its run row for as long as it moves the run's cursors; the
// run's log lines (and anything else that references the run) must not queue behind it. The
// test stops finalisation inside its transaction, after it locked the run, by holding one of
// the rows its cursor upsert needs, and writes the run's logs meanwhile: no timing, only locks.
func TestFinaliseOfALargeRunDoesNotBlockItsLogWrites(t *testing.T) {
	t.Parallel()
	const items, batch = 20_000, 1000
	u := dbtest.URL(t)
	ctx := t.Context()
	// Finalisation waits without a lock timeout, so it holds the run for as long as the test
	// holds it; the log writer gives up on any lock it waits for longer than two seconds.
	st, err := store.Open(ctx, u, store.Options{MaxConns: 4, AppName: "etlexec finalise"})
	require.NoError(t, err)
	defer st.Close()
	lu, err := url.Parse(u)
	require.NoError(t, err)
	q := lu.Query()
	q.Set("lock_timeout", "2000")
	lu.RawQuery = q.Encode()
	logs, err := store.Open(ctx, lu.String(), store.Options{MaxConns: 1, AppName: "etlexec logs"})
	require.NoError(t, err)
	defer logs.Close()

	_, err = st.UpsertJobs(ctx, []store.JobSpec{{
		JobID: "big", Kind: "test", Strategy: "modified_date", CursorPolicy: "run", Config: json.RawMessage(`{}`),
		OverlapPolicy: "allow", Queue: "etl", MaxAttempts: 1, TimeoutMs: 1000, Enabled: true,
	}})
	require.NoError(t, err)
	runID := uuid.Must(uuid.NewV7())
	newItems := make([]store.NewItem, items)
	for i := range newItems {
		newItems[i] = store.NewItem{Params: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i+1)), ParamHash: fmt.Sprintf("h%06d", i+1)}
	}
	_, err = st.CreateRun(ctx, store.NewRun{RunID: runID, JobID: "big", Trigger: "manual", Strategy: "modified_date"}, newItems, 0)
	require.NoError(t, err)
	require.NoError(t, st.MarkRunEnqueued(ctx, runID))

	w := testfactory.Worker(ctx, t, st, &testfactory.WorkerOpts{Lease: new(time.Hour)})
	watermark := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for first := int32(1); first <= items; first += batch {
		reqs := make([]store.ClaimRequest, batch)
		ends := make([]store.AttemptEnd, batch)
		for i := range reqs {
			no, id := first+int32(i), uuid.Must(uuid.NewV7())
			reqs[i] = store.ClaimRequest{RunID: runID, ItemNo: no, AttemptID: id}
			ends[i] = end(runID, no, id, runstate.StatusSuccess)
			ends[i].CursorEnd = &watermark
		}
		cs, err := st.ClaimItems(ctx, w, false, reqs)
		require.NoError(t, err)
		for _, c := range cs {
			require.True(t, c.Claimed)
		}
		fs, err := st.FinishAttempts(ctx, w, ends)
		require.NoError(t, err)
		for i, f := range fs {
			require.True(t, f.Recorded, "end of item %d not recorded: %+v", ends[i].ItemNo, f)
		}
	}

	// Another session holds the job row: the first cursor finalisation writes takes a key-share
	// lock on it (the cursors' foreign key), so finalisation stops there, run row locked.
	direct, err := pgx.Connect(ctx, u)
	require.NoError(t, err)
	defer direct.Close(context.Background())
	holder, err := direct.Begin(ctx)
	require.NoError(t, err)
	_, err = holder.Exec(ctx, `SELECT 1 FROM dw_etl_jobs WHERE job_id = 'big' FOR UPDATE`)
	require.NoError(t, err)

	type result struct {
		f   store.Finalised
		err error
	}
	done := make(chan result, 1)
	go func() {
		f, err := st.FinaliseRun(ctx, runID)
		done <- result{f, err}
	}()

	// Finalisation is inside its transaction: it holds the run and waits for the job row.
	var early *result
	require.Eventually(t, func() bool {
		select {
		case r := <-done:
			early = &r
			return true
		default:
		}
		var waiting bool
		err := direct.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = 'etlexec finalise'
			  AND wait_event_type = 'Lock')`).Scan(&waiting)
		return err == nil && waiting
	}, 60*time.Second, 20*time.Millisecond, "finalisation never waited for the held job row")
	require.Nil(t, early, "finalisation ended before it reached the held job row")

	// The run's logs go in while finalisation holds the run. A log write that queued behind
	// it would wait for the holder, which waits for this test: the lock timeout turns that
	// into a failure instead of a hang.
	rows := make([]store.LogRow, 100)
	for i := range rows {
		no := int32(i + 1)
		rows[i] = store.LogRow{TS: time.Now(), RunID: runID, JobID: "big", ItemNo: &no, Level: "info", Message: "written during finalise"}
	}
	n, err := logs.CopyLogs(ctx, rows)
	require.NoError(t, err, "log lines of a run being finalised must not wait for it")
	require.EqualValues(t, len(rows), n)
	select {
	case r := <-done:
		t.Fatalf("finalisation ended while the job row was held: %+v", r)
	default:
	}

	require.NoError(t, holder.Rollback(ctx))
	r := <-done
	require.NoError(t, r.err)
	require.True(t, r.f.Done)
	require.Equal(t, runstate.StatusSuccess, r.f.Status)
	require.EqualValues(t, items, r.f.CursorsAdvanced)
}
