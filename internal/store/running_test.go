package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/testfactory"
)

// TestHistoryRunListsRunningItems seeds a run of 200k items of which a few run, on live workers
// and a dead one, and checks that HistoryRun lists the running ones with what their workers
// reported, counts those it does not list, and finds them without reading the run's items.
func TestHistoryRunListsRunningItems(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, pool, tracer := tracedStore(t)

	const bulk = 200_000
	runID := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: 40, Job: &testfactory.JobOpts{ID: new("big"), MaxAttempts: new(int32(3))}}).RunID
	other := testfactory.Run(t.Context(), t, st, &testfactory.RunOpts{Items: 5, Job: &testfactory.JobOpts{ID: new("other"), MaxAttempts: new(int32(3))}}).RunID
	for _, q := range []string{
		// Half settled, half pending: the run's items are what a scan would have to read.
		`INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash, status)
			SELECT $1, g, '{}', 'b' || g, CASE WHEN g % 2 = 0 THEN 'SUCCESS' ELSE 'PENDING' END
			FROM generate_series(41, $2::int) g`,
		`UPDATE dw_etl_runs SET item_count = $2 WHERE run_id = $1`,
		`ANALYZE dw_etl_run_items, dw_etl_workers`,
	} {
		args := []any{runID, bulk}
		if !strings.Contains(q, "$1") {
			args = nil
		}
		_, err := pool.Exec(ctx, q, args...)
		require.NoError(t, err, q)
	}

	w1 := testfactory.Worker(t.Context(), t, st, &testfactory.WorkerOpts{Lease: new(time.Minute)})
	w2 := testfactory.Worker(t.Context(), t, st, &testfactory.WorkerOpts{Lease: new(time.Minute)})
	w3 := testfactory.Worker(t.Context(), t, st, &testfactory.WorkerOpts{Lease: new(time.Minute)})
	heartbeat := func(w store.WorkerRef, held ...store.HeldItem) {
		t.Helper()
		_, err := st.Heartbeat(ctx, w.ID, held)
		require.NoError(t, err)
	}
	item := func(runID uuid.UUID, no int32) store.HeldItem { return store.HeldItem{RunID: runID, ItemNo: no} }

	_, ids1 := claim(t, st, w1, runID, 3, 4)
	claim(t, st, w2, runID, 7)
	claim(t, st, w1, other, 1)
	_, ids3 := claim(t, st, w3, runID, 10)
	heartbeat(w1, item(runID, 3), item(runID, 4), item(other, 1))
	heartbeat(w2, item(runID, 7))
	heartbeat(w3, item(runID, 10))
	claim(t, st, w2, runID, 8) // since w2's heartbeat: counted, not listed
	// Item 10 ends after w3's heartbeat: w3's held items are stale and must not list it.
	_, err := st.FinishAttempts(ctx, w3, []store.AttemptEnd{end(runID, 10, ids3[0], runstate.StatusSuccess)})
	require.NoError(t, err)
	n, err := st.ReportProgress(ctx, []store.AttemptProgress{{RunID: runID, ItemNo: 4, AttemptID: ids1[1],
		RecordsRead: 120, RecordsWritten: 100, Pages: 3, Message: "page 3 of 9"}})
	require.NoError(t, err)
	require.EqualValues(t, 1, n)

	itemNos := func(rs []store.RunningItem) []int32 {
		out := make([]int32, len(rs))
		for i, r := range rs {
			out[i] = r.ItemNo
		}
		return out
	}

	d, err := st.HistoryRun(ctx, runID)
	require.NoError(t, err)
	require.Equal(t, []int32{3, 4, 7}, itemNos(d.Running), "oldest attempt first")
	require.Equal(t, 1, d.RunningMore, "item 8, claimed since its worker's heartbeat")
	require.Equal(t, 4, d.Attempts.Running)
	got := d.Running[1]
	require.Equal(t, "h004", got.ParamHash)
	require.EqualValues(t, 1, got.ItemAttempt)
	require.Positive(t, got.AttemptNo)
	require.False(t, got.StartedAt.IsZero())
	require.True(t, strings.HasPrefix(got.Worker, "w-"), got.Worker)
	require.EqualValues(t, 120, got.RecordsRead)
	require.EqualValues(t, 100, got.RecordsWritten)
	require.EqualValues(t, 3, got.PageCount)
	require.NotNil(t, got.Progress)
	require.Equal(t, "page 3 of 9", *got.Progress)
	require.NotNil(t, got.ProgressAt)
	require.Nil(t, d.Running[0].Progress, "item 3 reported nothing yet")

	t.Run("FindsThemWithoutReadingTheRunsItems", func(t *testing.T) {
		stmts := tracer.capture(t, func(ctx context.Context) error {
			_, err := st.HistoryRun(ctx, runID)
			return err
		})
		var sql string
		var args []any
		for _, s := range stmts {
			if strings.Contains(s.sql, "held_item_nos") {
				sql, args = s.sql, s.args
			}
		}
		require.NotEmpty(t, sql, "HistoryRun sent no running-items query: %v", stmts)
		conn, err := pgx.Connect(ctx, pool.Config().ConnString())
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close(context.Background()) })
		_, err = conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`)
		require.NoError(t, err)
		var itemRows float64
		for _, n := range histGenericPlan(t, conn, sql, args) {
			rel, _ := n["Relation Name"].(string)
			rows, _ := n["Actual Rows"].(float64)
			loops, _ := n["Actual Loops"].(float64)
			removed, _ := n["Rows Removed by Filter"].(float64)
			if rel == "dw_etl_run_items" {
				require.NotEqual(t, "Seq Scan", n["Node Type"], "plan: %v", n)
				itemRows += rows*loops + removed
			}
		}
		t.Logf("rows of dw_etl_run_items read: %v", itemRows)
		// The held items (3, 4, 1 of the other run's numbers, 7, 10), not the run's 200k.
		require.LessOrEqual(t, itemRows, 20.0, "read %v rows of the run's items", itemRows)
	})

	t.Run("ListsAtMostRunningShownMax", func(t *testing.T) {
		nos := make([]int32, 0, 25)
		hs := []store.HeldItem{item(runID, 3), item(runID, 4), item(other, 1)}
		for no := int32(11); no < 36; no++ {
			nos = append(nos, no)
			hs = append(hs, item(runID, no))
		}
		claim(t, st, w1, runID, nos...)
		heartbeat(w1, hs...)
		d, err := st.HistoryRun(ctx, runID)
		require.NoError(t, err)
		require.Len(t, d.Running, store.RunningShownMax)
		require.Equal(t, []int32{3, 4, 7, 11, 12}, itemNos(d.Running[:5]))
		require.Equal(t, 4+25-store.RunningShownMax, d.RunningMore, "the unlisted 8 and the ones past the limit")
	})

	t.Run("AnEndedItemLeavesAtOnce", func(t *testing.T) {
		_, err := st.FinishAttempts(ctx, w1, []store.AttemptEnd{end(runID, 4, ids1[1], runstate.StatusSuccess)})
		require.NoError(t, err)
		d, err := st.HistoryRun(ctx, runID)
		require.NoError(t, err)
		require.NotContains(t, itemNos(d.Running), int32(4), "before w1's next heartbeat")
		require.Equal(t, []int32{3, 7, 11}, itemNos(d.Running[:3]))
	})
}
