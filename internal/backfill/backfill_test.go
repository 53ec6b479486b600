package backfill_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/backfill"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

var day = func(d int) time.Time { return time.Date(2026, 1, d, 0, 0, 0, 0, time.UTC) }

func setup(t *testing.T) (*store.Store, *enqueue.Enqueuer) {
	t.Helper()
	st := dbtest.Store(t)
	enq, err := enqueue.New(enqueue.Config{Store: st, Redis: redistest.ConnOpt(t), Logger: zerolog.Nop()})
	require.NoError(t, err)
	_, err = st.Pool().Exec(t.Context(), `INSERT INTO dw_etl_jobs (job_id, kind, supports_params, supports_incremental, strategy, overlap_policy, queue)
		VALUES ('daily', 'synthetic', true, true, 'last_run', 'skip', $1), ('plain', 'synthetic', false, false, 'none', 'skip', $1)`, redistest.Queue(t))
	require.NoError(t, err)
	return st, enq
}

type windowRun struct {
	LogicalStart time.Time
	Exclusive    bool
	Items        int
	CursorStart  time.Time
}

func windowRuns(t *testing.T, st *store.Store) []windowRun {
	t.Helper()
	rows, err := st.Pool().Query(t.Context(), `SELECT r.logical_start, r.exclusive, count(i.*)::int, min(i.cursor_start)
		FROM dw_etl_runs r JOIN dw_etl_run_items i USING (run_id) WHERE r.job_id = 'daily'
		GROUP BY r.run_id ORDER BY r.logical_start`)
	require.NoError(t, err)
	defer rows.Close()
	var out []windowRun
	for rows.Next() {
		var w windowRun
		require.NoError(t, rows.Scan(&w.LogicalStart, &w.Exclusive, &w.Items, &w.CursorStart))
		w.LogicalStart, w.CursorStart = w.LogicalStart.UTC(), w.CursorStart.UTC()
		out = append(out, w)
	}
	return out
}

func finishOpen(t *testing.T, st *store.Store) {
	t.Helper()
	_, err := st.Pool().Exec(context.Background(), `UPDATE dw_etl_runs SET status = 'SUCCESS', ended_at = now() WHERE job_id = 'daily' AND status IN ('PENDING', 'RUNNING')`)
	require.NoError(t, err)
}

// TestBackfillIsBoundedAndResumable: one run per window with the window as its range, at most
// Concurrency open, and a backfill stopped midway and started again makes only the rest.
func TestBackfillIsBoundedAndResumable(t *testing.T) {
	t.Parallel()
	st, enq := setup(t)
	spec := backfill.Spec{JobID: "daily", From: day(1), To: day(4), Step: 24 * time.Hour, Concurrency: 2, CreatedBy: "test",
		Params: []json.RawMessage{json.RawMessage(`{"region":"eu"}`), json.RawMessage(`{"region":"us"}`)}}

	// First invocation: stopped as soon as the first windows started (no worker finishes them).
	ctx, cancel := context.WithCancel(t.Context())
	r, err := backfill.New(backfill.Config{Store: st, Enqueuer: enq, Poll: 5 * time.Millisecond, Logger: zerolog.Nop(),
		Progress: func(backfill.Report) { cancel() }})
	require.NoError(t, err)
	rep, err := r.Run(ctx, spec)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 2, rep.Created, "at most Concurrency windows open")
	require.Equal(t, []windowRun{
		{LogicalStart: day(2), Exclusive: false, Items: 2, CursorStart: day(1)},
		{LogicalStart: day(3), Exclusive: false, Items: 2, CursorStart: day(2)},
	}, windowRuns(t, st), "each run loads its window; windows stay out of the job's active slot")

	pre, err := r.Preview(t.Context(), spec)
	require.NoError(t, err)
	require.True(t, pre.Resumed)
	require.Len(t, pre.Windows, 3)
	require.Equal(t, runstate.StatusRunning, pre.Windows[0].Status)
	require.Nil(t, pre.Windows[2].RunID)

	// Resumed, with workers that finish every run at once: only the third window is new.
	r, err = backfill.New(backfill.Config{Store: st, Enqueuer: enq, Poll: 5 * time.Millisecond, Logger: zerolog.Nop(),
		Progress: func(backfill.Report) { finishOpen(t, st) }})
	require.NoError(t, err)
	finishOpen(t, st)
	rep, err = r.Run(t.Context(), spec)
	require.NoError(t, err)
	require.True(t, rep.Resumed)
	require.Equal(t, 1, rep.Created)
	require.Equal(t, 3, rep.Succeeded)
	require.Len(t, windowRuns(t, st), 3)
	b, err := st.GetBackfill(t.Context(), rep.Backfill.BackfillID)
	require.NoError(t, err)
	require.NotNil(t, b.FinishedAt)

	// By id, a third time: nothing to do.
	rep, err = r.Run(t.Context(), backfill.SpecOf(b, 0))
	require.NoError(t, err)
	require.Zero(t, rep.Created)
	require.Len(t, windowRuns(t, st), 3)
}

func TestBackfillRefuses(t *testing.T) {
	t.Parallel()
	st, enq := setup(t)
	r, err := backfill.New(backfill.Config{Store: st, Enqueuer: enq, Logger: zerolog.Nop()})
	require.NoError(t, err)
	ok := backfill.Spec{JobID: "daily", From: day(1), To: day(3), Step: 24 * time.Hour}

	bad := ok
	bad.JobID = "plain"
	_, err = r.Run(t.Context(), bad)
	require.ErrorIs(t, err, backfill.ErrNotLastRun)
	bad = ok
	bad.Step = time.Second
	_, err = r.Preview(t.Context(), bad)
	require.ErrorContains(t, err, "more than 10000")
	bad = ok
	bad.From, bad.To = day(3), day(1)
	_, err = r.Preview(t.Context(), bad)
	require.ErrorContains(t, err, "must be before")
	bad = ok
	bad.Concurrency = 1000
	_, err = r.Preview(t.Context(), bad)
	require.ErrorContains(t, err, "--concurrency")

	_, err = st.PauseJob(t.Context(), "daily", "test", "")
	require.NoError(t, err)
	_, err = r.Run(t.Context(), ok)
	require.ErrorContains(t, err, "paused")

	ws, err := backfill.Windows(day(1), day(2).Add(12*time.Hour), 24*time.Hour)
	require.NoError(t, err)
	require.Equal(t, []backfill.Window{{Start: day(1), End: day(2)}, {Start: day(2), End: day(2).Add(12 * time.Hour)}}, ws,
		"the last window ends at --to")
}
