package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// LogRow is one run log line as stored in dw_etl_run_logs.
type LogRow struct {
	TS        time.Time
	RunID     uuid.UUID
	AttemptID *uuid.UUID
	JobID     string
	ItemNo    *int32
	Level     string
	Message   string
	// Fields holds every other key of the line as a JSON object; nil is stored as {}.
	Fields json.RawMessage
}

var logColumns = []string{"ts", "run_id", "attempt_id", "job_id", "item_no", "level", "message", "fields"}

var emptyObject = json.RawMessage(`{}`)

func (r *LogRow) values() []any {
	fields := r.Fields
	if len(fields) == 0 {
		fields = emptyObject
	}
	// pgtype.UUID encodes directly; uuid.UUID would go through driver.Valuer and a string.
	attempt := pgtype.UUID{}
	if r.AttemptID != nil {
		attempt = pgtype.UUID{Bytes: *r.AttemptID, Valid: true}
	}
	return []any{r.TS, pgtype.UUID{Bytes: r.RunID, Valid: true}, attempt, r.JobID, r.ItemNo, r.Level, r.Message, fields}
}

// CopyLogs writes rows to dw_etl_run_logs with one COPY. COPY is all-or-nothing: a single bad
// row (a missing run or attempt, a ts outside every partition) fails the whole call, and the
// caller may retry the rows with InsertLogsOneByOne.
func (s *Store) CopyLogs(ctx context.Context, rows []LogRow) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	n, err := s.pool.CopyFrom(ctx, pgx.Identifier{"public", "dw_etl_run_logs"}, logColumns,
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) { return rows[i].values(), nil }))
	if err != nil {
		return 0, fmt.Errorf("copy %d log lines: %w", len(rows), err)
	}
	return n, nil
}

const insertLogSQL = `INSERT INTO public.dw_etl_run_logs (ts, run_id, attempt_id, job_id, item_no, level, message, fields)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`

// InsertLogsOneByOne is the fallback when CopyLogs fails: it inserts rows one statement at a
// time on one connection, so a row the database rejects (a *pgconn.PgError: constraint, check,
// partition or encoding error) is counted in failed and the others are still stored. Any other
// error (connection lost, ctx done) stops the loop and is returned; rows after it are neither
// inserted nor counted as failed.
func (s *Store) InsertLogsOneByOne(ctx context.Context, rows []LogRow) (inserted int64, failed int, err error) {
	if len(rows) == 0 {
		return 0, 0, nil
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("insert %d log lines: acquire connection: %w", len(rows), err)
	}
	defer conn.Release()
	for i := range rows {
		_, err := conn.Exec(ctx, insertLogSQL, rows[i].values()...)
		if err == nil {
			inserted++
			continue
		}
		var pe *pgconn.PgError
		if errors.As(err, &pe) && ctx.Err() == nil {
			failed++
			continue
		}
		return inserted, failed, fmt.Errorf("insert log line %d of %d (run %s): %w", i+1, len(rows), rows[i].RunID, err)
	}
	return inserted, failed, nil
}

// AddRunMetric adds delta to the numeric key of the run's metrics object, starting from 0
// when the key is absent or not a number. It is atomic under concurrent callers (the row lock
// serialises them) and leaves updated_at alone: a metric is not a lifecycle change.
func (s *Store) AddRunMetric(ctx context.Context, runID uuid.UUID, key string, delta int64) error {
	tag, err := s.pool.Exec(ctx, `UPDATE public.dw_etl_runs
SET metrics = jsonb_set(coalesce(metrics, '{}'::jsonb), ARRAY[$2::text],
  to_jsonb(CASE WHEN jsonb_typeof(metrics -> $2::text) = 'number' THEN (metrics ->> $2::text)::numeric ELSE 0 END + $3::bigint))
WHERE run_id = $1`, runID, key, delta)
	if err != nil {
		return fmt.Errorf("add %d to metric %q of run %s: %w", delta, key, runID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("add %d to metric %q of run %s: %w", delta, key, runID, ErrNotFound)
	}
	return nil
}
