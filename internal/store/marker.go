package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Commit markers: when a job's target is another database than etlexec's, the item's target
// transaction also writes a marker row there, in a small table etlexec owns in that database.
// The target commit and the ledger's record of it are then two commits; the marker is how a
// redelivery or a takeover learns that the first one happened, and records the item's success
// without running its handler again. The primary key on (run_id, item_no) makes a second commit
// of the same item impossible, even from a worker that was frozen past its lease (an item that
// succeeded is never run again in its run: reruns take failed and cancelled items only).

// MarkerTableDefault is the marker table's name in the target's search_path.
const MarkerTableDefault = "etlexec_item_commits"

// Marker is one item's committed target transaction.
type Marker struct {
	RunID          uuid.UUID
	ItemNo         int32
	Generation     int32
	AttemptID      uuid.UUID
	RecordsWritten int64
	CommittedAt    time.Time
}

// markerIdent quotes a possibly schema-qualified table name.
func markerIdent(table string) string {
	if table == "" {
		table = MarkerTableDefault
	}
	return pgx.Identifier(strings.Split(table, ".")).Sanitize()
}

// EnsureMarkerTable creates the marker table in a target database if it is missing (the
// worker's role needs CREATE on its schema the first time).
func EnsureMarkerTable(ctx context.Context, pool *pgxpool.Pool, table string) error {
	_, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+markerIdent(table)+` (
  run_id uuid NOT NULL,
  item_no integer NOT NULL,
  generation integer NOT NULL,
  attempt_id uuid NOT NULL,
  records_written bigint NOT NULL DEFAULT 0,
  committed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (run_id, item_no))`)
	if err != nil {
		return fmt.Errorf("create commit marker table %s in the target database: %w", table, err)
	}
	return nil
}

// WriteMarker writes the item's marker in its target transaction, just before the commit. A
// marker already there (another attempt committed this item) fails the insert, and with it
// the transaction; one held by an uncommitted transaction is waited for at most LockTimeout.
func WriteMarker(ctx context.Context, tx pgx.Tx, table string, m Marker) error {
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = "+fmt.Sprint(LockTimeout.Milliseconds())); err != nil {
		return fmt.Errorf("bound the target transaction's locks: %w", err)
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+markerIdent(table)+` (run_id, item_no, generation, attempt_id, records_written)
VALUES ($1, $2, $3, $4, $5)`, m.RunID, m.ItemNo, m.Generation, m.AttemptID, m.RecordsWritten)
	if IsUniqueViolation(err, "") {
		return fmt.Errorf("write commit marker of item %d of run %s: %w", m.ItemNo, m.RunID, ErrAlreadyCommitted)
	}
	if err != nil {
		return fmt.Errorf("write commit marker of item %d of run %s: %w", m.ItemNo, m.RunID, err)
	}
	return nil
}

// ErrAlreadyCommitted says another attempt already committed the item's target transaction.
var ErrAlreadyCommitted = errors.New("the item's target transaction was already committed")

// ReadMarker reads the item's marker; found is false when no attempt committed it.
func ReadMarker(ctx context.Context, pool *pgxpool.Pool, table string, runID uuid.UUID, itemNo int32) (m Marker, found bool, err error) {
	err = pool.QueryRow(ctx, `SELECT generation, attempt_id, records_written, committed_at FROM `+markerIdent(table)+`
WHERE run_id = $1 AND item_no = $2`, runID, itemNo).Scan(&m.Generation, &m.AttemptID, &m.RecordsWritten, &m.CommittedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Marker{}, false, nil
	}
	if err != nil {
		return Marker{}, false, fmt.Errorf("read commit marker of item %d of run %s: %w", itemNo, runID, err)
	}
	m.RunID, m.ItemNo = runID, itemNo
	return m, true, nil
}
