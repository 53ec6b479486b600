package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

// ErrNotClaimable is returned by Claim when the item is terminal, held by a live attempt, or
// out of attempts.
var ErrNotClaimable = errors.New("item cannot be claimed")

// GetItemContext loads an item with the run and job fields a worker needs.
func (s *Store) GetItemContext(ctx context.Context, runID uuid.UUID, itemNo int32) (ItemContext, error) {
	ic, err := s.q.GetItemContext(ctx, sqlcdb.GetItemContextParams{RunID: runID, ItemNo: itemNo})
	if err != nil {
		return ItemContext{}, fmt.Errorf("load item %d of run %s: %w", itemNo, runID, mapErr(err))
	}
	return ic, nil
}

// ClaimRequest asks for an item's next attempt.
type ClaimRequest struct {
	RunID       uuid.UUID
	ItemNo      int32
	AttemptID   uuid.UUID
	MaxAttempts int32
	Lease       time.Duration
	WorkerID    string
	ScheduledAt *time.Time
}

// Claim is a granted attempt.
type Claim struct {
	ItemAttempt int32
	AttemptNo   int64
	StartedAt   time.Time
	// LostAttempts is 1 when the claim took over from an attempt whose worker stopped
	// heartbeating; that attempt was closed FAILED/SYSTEM "worker lost".
	LostAttempts int32
}

// ClaimItem takes the item for one attempt and inserts the attempt row, in one statement.
func (s *Store) ClaimItem(ctx context.Context, r ClaimRequest) (Claim, error) {
	id := r.AttemptID
	worker := r.WorkerID
	row, err := s.relaxed().ClaimItem(ctx, sqlcdb.ClaimItemParams{
		RunID: r.RunID, ItemNo: r.ItemNo, AttemptID: &id, MaxAttempts: r.MaxAttempts,
		LeaseSeconds: r.Lease.Seconds(), ScheduledAt: r.ScheduledAt, WorkerID: &worker,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Claim{}, ErrNotClaimable
	}
	if err != nil {
		return Claim{}, fmt.Errorf("claim item %d of run %s: %w", r.ItemNo, r.RunID, err)
	}
	return Claim{ItemAttempt: row.ItemAttempt, AttemptNo: row.AttemptNo, StartedAt: row.StartedAt, LostAttempts: row.LostAttempts}, nil
}

// AttemptEnd is how an attempt ended and what the item becomes.
type AttemptEnd struct {
	RunID     uuid.UUID
	ItemNo    int32
	ItemCount int32
	AttemptID uuid.UUID
	// AttemptStatus is SUCCESS, FAILED or CANCELLED.
	AttemptStatus string
	// ItemStatus is SUCCESS, FAILED or CANCELLED when terminal, PENDING when a retry follows.
	ItemStatus    string
	Terminal      bool
	ErrorCategory string
	ErrorMessage  *string
	ErrorDetail   json.RawMessage
	// Backoff is set when a retry follows: recorded as backoff_ms and next_retry_at.
	Backoff        *time.Duration
	RecordsRead    int64
	RecordsWritten int64
	Pages          int64
	// CursorEnd is the watermark the item observed (modified_date); nil keeps the stored end.
	CursorEnd  *time.Time
	CursorNote *string
	// Cursor, when set, is advanced in the same transaction (cursor_policy item).
	Cursor *CursorAdvance
}

// CursorAdvance moves one (job, param_hash) cursor forward.
type CursorAdvance struct {
	JobID     string
	ParamHash string
	Params    json.RawMessage
	Strategy  string
	Value     time.Time
	RunID     uuid.UUID
}

// FinishAttempt records an attempt's end inside tx (with the target commit following inside
// the same window). It returns ErrLostClaim, changing nothing, when another attempt took the
// item meanwhile; shardComplete tells whether the run may now be complete.
func (tx *Tx) FinishAttempt(ctx context.Context, e AttemptEnd) (shardComplete bool, err error) {
	res, err := finishAttempts(ctx, tx.q, []AttemptEnd{e})
	if err != nil {
		return false, err
	}
	if res[0].Err != nil || e.Cursor == nil {
		return res[0].ShardComplete, res[0].Err
	}
	c := e.Cursor
	if err := tx.q.AdvanceCursors(ctx, sqlcdb.AdvanceCursorsParams{
		JobID: c.JobID, ParamHashes: []string{c.ParamHash}, Params: []json.RawMessage{c.Params},
		Strategy: c.Strategy, CursorValues: []time.Time{c.Value}, RunID: c.RunID,
	}); err != nil {
		return false, fmt.Errorf("advance cursor of item %d: %w", e.ItemNo, err)
	}
	return res[0].ShardComplete, nil
}

// FinishResult is the outcome of one attempt end in a batch.
type FinishResult struct {
	// ShardComplete is true when the item was terminal and completed its progress shard.
	ShardComplete bool
	// Err is ErrLostClaim when another attempt holds the item.
	Err error
}

// finishAttempts sends the ends as one pipelined batch (one round trip).
func finishAttempts(ctx context.Context, q *sqlcdb.Queries, ends []AttemptEnd) ([]FinishResult, error) {
	params := make([]sqlcdb.FinishAttemptsParams, len(ends))
	for i, e := range ends {
		var backoff *int64
		if e.Backoff != nil {
			ms := e.Backoff.Milliseconds()
			backoff = &ms
		}
		params[i] = sqlcdb.FinishAttemptsParams{
			ItemStatus: e.ItemStatus, AttemptStatus: e.AttemptStatus, ErrorCategory: e.ErrorCategory,
			ErrorMessage: e.ErrorMessage, ErrorDetail: e.ErrorDetail, BackoffMs: backoff, Terminal: e.Terminal,
			RecordsRead: e.RecordsRead, RecordsWritten: e.RecordsWritten, PageCount: e.Pages,
			CursorEnd: e.CursorEnd, CursorNote: e.CursorNote, RunID: e.RunID, ItemNo: e.ItemNo,
			AttemptID: &e.AttemptID, Shard: ShardOf(e.ItemNo, e.ItemCount),
		}
	}
	res := make([]FinishResult, len(ends))
	var firstErr error
	br := q.FinishAttempts(ctx, params)
	br.QueryRow(func(i int, row sqlcdb.FinishAttemptsRow, err error) {
		switch {
		case err != nil:
			if firstErr == nil {
				e := ends[i]
				firstErr = fmt.Errorf("finish attempt %s of item %d of run %s: %w", e.AttemptID, e.ItemNo, e.RunID, err)
			}
		case row.Matched == 0:
			res[i].Err = ErrLostClaim
		default:
			res[i].ShardComplete = row.ShardComplete
		}
	})
	if err := br.Close(); err != nil && firstErr == nil {
		firstErr = err
	}
	return res, firstErr
}

// FinishAttempts records many attempt ends in one transaction: one round trip for the batch
// and one commit (one WAL flush) for all of them. Ends carrying a cursor advance must go
// through FinishAttempt. The batch locks progress shards in (run, shard) order, so concurrent
// batches from several workers cannot deadlock.
func (s *Store) FinishAttempts(ctx context.Context, ends []AttemptEnd) ([]FinishResult, error) {
	for _, e := range ends {
		if e.Cursor != nil {
			return nil, fmt.Errorf("finish attempts: item %d carries a cursor advance; use FinishAttempt", e.ItemNo)
		}
	}
	order := make([]int, len(ends))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		ea, eb := ends[order[a]], ends[order[b]]
		if c := bytes.Compare(ea.RunID[:], eb.RunID[:]); c != 0 {
			return c < 0
		}
		return ShardOf(ea.ItemNo, ea.ItemCount) < ShardOf(eb.ItemNo, eb.ItemCount)
	})
	sorted := make([]AttemptEnd, len(ends))
	for i, o := range order {
		sorted[i] = ends[o]
	}
	var res []FinishResult
	err := s.InTx(ctx, func(tx *Tx) error {
		var err error
		res, err = finishAttempts(ctx, tx.q, sorted)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]FinishResult, len(ends))
	for i, o := range order {
		out[o] = res[i]
	}
	return out, nil
}

// FinishAttempt records one attempt's end in its own transaction.
func (s *Store) FinishAttempt(ctx context.Context, e AttemptEnd) (shardComplete bool, err error) {
	err = s.InTx(ctx, func(tx *Tx) error {
		shardComplete, err = tx.FinishAttempt(ctx, e)
		return err
	})
	return shardComplete, err
}

// RunComplete reports whether every item of the run is terminal, from the progress shards
// (at most ProgressShards rows, never the items).
func (s *Store) RunComplete(ctx context.Context, runID uuid.UUID) (bool, error) {
	p, err := s.q.RunProgress(ctx, runID)
	if err != nil {
		return false, fmt.Errorf("read progress of run %s: %w", runID, err)
	}
	return p.Terminal >= p.Items, nil
}

// Heartbeat refreshes the lease of the given live attempts; it returns how many items still
// belonged to them.
func (s *Store) Heartbeat(ctx context.Context, attemptIDs []uuid.UUID) (int64, error) {
	if len(attemptIDs) == 0 {
		return 0, nil
	}
	n, err := s.relaxed().HeartbeatItems(ctx, attemptIDs)
	if err != nil {
		return 0, fmt.Errorf("heartbeat %d attempts: %w", len(attemptIDs), err)
	}
	if err := s.relaxed().HeartbeatAttempts(ctx, attemptIDs); err != nil {
		return 0, fmt.Errorf("heartbeat %d attempts: %w", len(attemptIDs), err)
	}
	return n, nil
}

// CancelPendingItem cancels an item that has not started; it reports whether it did.
func (s *Store) CancelPendingItem(ctx context.Context, runID uuid.UUID, itemNo, itemCount int32) (bool, error) {
	var done bool
	err := s.InTx(ctx, func(tx *Tx) error {
		n, err := tx.q.CancelPendingItem(ctx, sqlcdb.CancelPendingItemParams{RunID: runID, ItemNo: itemNo})
		if err != nil || n == 0 {
			return err
		}
		done = true
		return tx.q.BumpProgress(ctx, sqlcdb.BumpProgressParams{RunID: runID, Shard: ShardOf(itemNo, itemCount)})
	})
	if err != nil {
		return false, fmt.Errorf("cancel item %d of run %s: %w", itemNo, runID, err)
	}
	return done, nil
}
