package store_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/store"
)

// logFixture is a job, a run, an item and an attempt, inserted with plain SQL because the log
// table's foreign keys need them.
type logFixture struct {
	st        *store.Store
	jobID     string
	runID     uuid.UUID
	attemptID uuid.UUID
}

func setupLogs(t *testing.T) *logFixture {
	t.Helper()
	ctx := t.Context()
	f := &logFixture{st: dbtest.Store(t), jobID: "logs_job", runID: uuid.Must(uuid.NewV7()), attemptID: uuid.Must(uuid.NewV7())}
	pool := f.st.Pool()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO dw_etl_jobs (job_id, kind) VALUES ($1, 'synthetic')`, []any{f.jobID}},
		{`INSERT INTO dw_etl_runs (run_id, job_id) VALUES ($1, $2)`, []any{f.runID, f.jobID}},
		{`INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash) VALUES ($1, 1, '{}', 'h1')`, []any{f.runID}},
		{`INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt) VALUES ($1, $2, 1, 1)`, []any{f.attemptID, f.runID}},
	} {
		_, err := pool.Exec(ctx, q.sql, q.args...)
		require.NoError(t, err, q.sql)
	}
	return f
}

func (f *logFixture) row(msg string) store.LogRow {
	item := int32(1)
	return store.LogRow{TS: time.Now().UTC().Truncate(time.Microsecond), RunID: f.runID, AttemptID: &f.attemptID,
		JobID: f.jobID, ItemNo: &item, Level: "info", Message: msg, Fields: json.RawMessage(`{"k":1}`)}
}

func countLogs(t *testing.T, st *store.Store, runID uuid.UUID) int {
	t.Helper()
	var n int
	require.NoError(t, st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM dw_etl_run_logs WHERE run_id = $1`, runID).Scan(&n))
	return n
}

func TestCopyLogs(t *testing.T) {
	t.Parallel()

	t.Run("StoresEveryColumn", func(t *testing.T) {
		t.Parallel()
		f := setupLogs(t)
		want := f.row("hello")
		noFields := f.row("bare")
		noFields.Fields, noFields.AttemptID, noFields.ItemNo = nil, nil, nil
		n, err := f.st.CopyLogs(t.Context(), []store.LogRow{want, noFields})
		require.NoError(t, err)
		require.EqualValues(t, 2, n)

		var got store.LogRow
		var fields []byte
		require.NoError(t, f.st.Pool().QueryRow(t.Context(), `SELECT ts, run_id, attempt_id, job_id, item_no, level, message, fields
			FROM dw_etl_run_logs WHERE message = 'hello'`).Scan(&got.TS, &got.RunID, &got.AttemptID, &got.JobID, &got.ItemNo, &got.Level, &got.Message, &fields))
		require.True(t, want.TS.Equal(got.TS), "ts %s != %s", got.TS, want.TS)
		require.Equal(t, want.RunID, got.RunID)
		require.Equal(t, *want.AttemptID, *got.AttemptID)
		require.Equal(t, want.JobID, got.JobID)
		require.Equal(t, *want.ItemNo, *got.ItemNo)
		require.Equal(t, "info", got.Level)
		require.JSONEq(t, `{"k":1}`, string(fields))

		require.NoError(t, f.st.Pool().QueryRow(t.Context(), `SELECT fields FROM dw_etl_run_logs WHERE message = 'bare'`).Scan(&fields))
		require.JSONEq(t, `{}`, string(fields))
	})

	t.Run("OneBadRowFailsTheCopyButNotTheFallback", func(t *testing.T) {
		t.Parallel()
		f := setupLogs(t)
		rows := make([]store.LogRow, 0, 10)
		for range 9 {
			rows = append(rows, f.row("good"))
		}
		bad := f.row("bad")
		missing := uuid.Must(uuid.NewV7())
		bad.AttemptID = &missing
		rows = append(rows[:4], append([]store.LogRow{bad}, rows[4:]...)...)

		_, err := f.st.CopyLogs(t.Context(), rows)
		require.Error(t, err)
		require.Zero(t, countLogs(t, f.st, f.runID))

		inserted, failed, err := f.st.InsertLogsOneByOne(t.Context(), rows)
		require.NoError(t, err)
		require.EqualValues(t, 9, inserted)
		require.Equal(t, 1, failed)
		require.Equal(t, 9, countLogs(t, f.st, f.runID))
	})

	t.Run("CancelledContextIsAnErrorNotAFailedRow", func(t *testing.T) {
		t.Parallel()
		f := setupLogs(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		inserted, failed, err := f.st.InsertLogsOneByOne(ctx, []store.LogRow{f.row("x")})
		require.Error(t, err)
		require.Zero(t, inserted)
		require.Zero(t, failed)
	})
}

func TestAddRunMetricForLogs(t *testing.T) {
	t.Parallel()
	f := setupLogs(t)
	ctx := t.Context()
	_, err := f.st.Pool().Exec(ctx, `UPDATE dw_etl_runs SET metrics = '{"other":"x","bad":"notanumber"}' WHERE run_id = $1`, f.runID)
	require.NoError(t, err)

	require.NoError(t, f.st.AddRunMetric(ctx, f.runID, "log_lines_dropped", 5))
	require.NoError(t, f.st.AddRunMetric(ctx, f.runID, "log_lines_dropped", 7))
	require.NoError(t, f.st.AddRunMetric(ctx, f.runID, "bad", 2))

	var metrics []byte
	require.NoError(t, f.st.Pool().QueryRow(ctx, `SELECT metrics FROM dw_etl_runs WHERE run_id = $1`, f.runID).Scan(&metrics))
	require.JSONEq(t, `{"other":"x","bad":2,"log_lines_dropped":12}`, string(metrics))

	err = f.st.AddRunMetric(ctx, uuid.Must(uuid.NewV7()), "log_lines_dropped", 1)
	require.ErrorIs(t, err, store.ErrNotFound)
}
