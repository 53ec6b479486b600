package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

// ProgressShards caps how many counter rows a run spreads its progress over; every worker
// writes to one shard of its own choosing (WorkerRef.Shard), so workers do not serialise on a
// hot row.
const ProgressShards = 64

// WorkerRef names the worker process doing bookkeeping.
type WorkerRef struct {
	ID   uuid.UUID
	Name string
	// Shard is the progress shard this process writes its attempt ends to, in
	// [1, ProgressShards); its claims count in ClaimShard.
	Shard int16
}

// ClaimShard is the shard w's claims count their starts in: another row than its ends', so a
// worker's claim and end statements never wait on each other's counter row.
func (w WorkerRef) ClaimShard() int16 {
	return 1 + (w.Shard-1+(ProgressShards-1)/2)%(ProgressShards-1)
}

// ClaimRequest asks for an item's next attempt.
type ClaimRequest struct {
	RunID      uuid.UUID
	ItemNo     int32
	Generation int32
	// AttemptID is the new attempt's id; a retried claim with the same id is idempotent.
	AttemptID uuid.UUID
}

// Claim is what a claim found: a granted attempt with everything its handler needs, or why
// the item could not be claimed.
type Claim struct {
	Claimed     bool
	ItemAttempt int32
	AttemptNo   int64
	// Solo is true when the attempt must run alone on its worker (a suspect of worker deaths).
	Solo bool

	// Why not: the item does not exist, is settled, is held by another attempt, belongs to an
	// older or newer generation than the task, is a suspect the caller does not run alone,
	// is out of attempts, or its run is cancelled, past its deadline or closed.
	Found           bool
	ItemStatus      runstate.Status
	Generation      int32
	Held            bool
	NeedsSolo       bool
	Exhausted       bool
	CancelRequested bool
	PastDeadline    bool

	AttemptLimit int32
	// LostAttempts counts the item's attempts lost with their workers (not counted against
	// AttemptLimit).
	LostAttempts int32
	Params       json.RawMessage
	ParamHash    string
	CursorStart  *time.Time
	CursorMeta   json.RawMessage
	// CursorEnd is the item's window end: the run's logical start for last_run.
	CursorEnd *time.Time

	JobID        string
	JobUpdatedAt time.Time
	RunStatus    runstate.Status
	DryRun       bool
	LogicalStart *time.Time
	ItemCount    int32
	// Deadline is how long the run has left before its run_timeout (database clock), nil
	// when it has none.
	Deadline *time.Duration
}

// ClaimItems claims a batch of items for one worker in one statement (see ClaimItems in
// queries/items.sql); alone says the caller runs them alone, which suspects require. Results
// come back in request order. The statement is retried on transient errors; a retry after an
// unacknowledged commit finds its own claims and reports them claimed.
func (s *Store) ClaimItems(ctx context.Context, w WorkerRef, alone bool, reqs []ClaimRequest) ([]Claim, error) {
	p := sqlcdb.ClaimItemsParams{Alone: alone, Worker: w.ID, Shard: w.ClaimShard(),
		RunIds: make([]uuid.UUID, len(reqs)), ItemNos: make([]int32, len(reqs)),
		Generations: make([]int32, len(reqs)), AttemptIds: make([]uuid.UUID, len(reqs))}
	for i, r := range reqs {
		p.RunIds[i], p.ItemNos[i], p.Generations[i], p.AttemptIds[i] = r.RunID, r.ItemNo, r.Generation, r.AttemptID
	}
	var rows []sqlcdb.ClaimItemsRow
	err := Retry(ctx, RetryBookkeeping, func(ctx context.Context) error {
		var err error
		rows, err = s.q.ClaimItems(ctx, p)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claim %d items: %w", len(reqs), err)
	}
	byAttempt := make(map[uuid.UUID]*sqlcdb.ClaimItemsRow, len(rows))
	for i := range rows {
		byAttempt[rows[i].AttemptID] = &rows[i]
	}
	out := make([]Claim, len(reqs))
	for i, r := range reqs {
		row, ok := byAttempt[r.AttemptID]
		if !ok {
			return nil, fmt.Errorf("claim item %d of run %s: no answer for attempt %s", r.ItemNo, r.RunID, r.AttemptID)
		}
		out[i] = claimOf(row)
	}
	return out, nil
}

func claimOf(r *sqlcdb.ClaimItemsRow) Claim {
	c := Claim{
		Claimed: r.Claimed, ItemAttempt: r.ItemAttempt, AttemptNo: r.AttemptNo, Solo: r.Solo,
		Found: r.Found, ItemStatus: runstate.Status(r.ItemStatus), Generation: r.ItemGeneration, Held: r.Held,
		Exhausted: r.Exhausted, CancelRequested: r.CancelRequested, AttemptLimit: r.AttemptLimit, LostAttempts: r.LostAttempts,
		Params: r.Params, ParamHash: r.ParamHash, CursorStart: r.CursorStart, CursorMeta: r.CursorMeta,
		CursorEnd: r.CursorEnd, JobID: r.JobID, RunStatus: runstate.Status(r.RunStatus), DryRun: r.DryRun,
		LogicalStart: r.LogicalStart, ItemCount: r.ItemCount,
	}
	// A held item's solo flag belongs to the attempt running it alone.
	c.NeedsSolo = !r.Claimed && r.ItemSolo && !r.Held
	if r.JobUpdatedAt != nil {
		c.JobUpdatedAt = *r.JobUpdatedAt
	}
	if r.DeadlineAt != nil {
		left := r.DeadlineAt.Sub(r.DbNow)
		c.Deadline = &left
		c.PastDeadline = left <= 0
	}
	return c
}

// Who recorded an attempt's end (dw_etl_run_attempts.ended_by).
const (
	EndedByHolder     = "holder"
	EndedByReconciler = "reconciler"
	EndedByTimeout    = "timeout"
)

// AttemptEnd is how an attempt ended and what its item becomes.
type AttemptEnd struct {
	RunID     uuid.UUID
	ItemNo    int32
	AttemptID uuid.UUID
	// AttemptStatus is SUCCESS, FAILED or CANCELLED.
	AttemptStatus runstate.Status
	// ItemStatus is SUCCESS, FAILED or CANCELLED when Terminal, PENDING when a retry follows.
	ItemStatus    runstate.Status
	Terminal      bool
	ErrorCategory etl.Category
	ErrorMessage  *string
	ErrorDetail   json.RawMessage
	// Backoff is set when a retry follows: recorded as backoff_ms and next_retry_at.
	Backoff     *time.Duration
	RecordsRead int64
	// RecordsWritten counts records the attempt committed (a dry run: would have written);
	// RecordsDiscarded those written in a target transaction that was rolled back.
	RecordsWritten   int64
	RecordsDiscarded int64
	Pages            int64
	// CursorEnd is the item's cursor candidate (runstate.ItemCursor); nil keeps the stored one.
	CursorEnd     *time.Time
	CursorEndMeta json.RawMessage
	CursorNote    *string
	// AdvanceCursor moves the item's cursor to CursorEnd in the same statement (policy item).
	AdvanceCursor bool
}

// endRow is the JSON shape of one end in FinishAttempts' @ends.
type endRow struct {
	AttemptID        uuid.UUID       `json:"attempt_id"`
	RunID            uuid.UUID       `json:"run_id"`
	ItemNo           int32           `json:"item_no"`
	AttemptStatus    runstate.Status `json:"attempt_status"`
	ItemStatus       runstate.Status `json:"item_status"`
	Terminal         bool            `json:"terminal"`
	Category         etl.Category    `json:"category"`
	Message          *string         `json:"message"`
	Detail           json.RawMessage `json:"detail,omitempty"`
	BackoffMs        *int64          `json:"backoff_ms"`
	RecordsRead      int64           `json:"records_read"`
	RecordsWritten   int64           `json:"records_written"`
	RecordsDiscarded int64           `json:"records_discarded"`
	Pages            int64           `json:"pages"`
	CursorEnd        *time.Time      `json:"cursor_end"`
	CursorEndMeta    json.RawMessage `json:"cursor_end_meta,omitempty"`
	CursorNote       *string         `json:"cursor_note"`
	AdvanceCursor    bool            `json:"advance_cursor"`
	EndedBy          string          `json:"ended_by"`
}

func rowOf(e AttemptEnd) endRow {
	r := endRow{
		AttemptID: e.AttemptID, RunID: e.RunID, ItemNo: e.ItemNo, AttemptStatus: e.AttemptStatus,
		ItemStatus: e.ItemStatus, Terminal: e.Terminal, Category: e.ErrorCategory,
		Message: TextPtr(e.ErrorMessage, MessageMax), Detail: JSON(e.ErrorDetail, FieldMax),
		RecordsRead: e.RecordsRead, RecordsWritten: e.RecordsWritten, RecordsDiscarded: e.RecordsDiscarded,
		Pages: e.Pages, CursorEnd: e.CursorEnd, CursorEndMeta: JSON(e.CursorEndMeta, FieldMax),
		CursorNote: TextPtr(e.CursorNote, MessageMax), AdvanceCursor: e.AdvanceCursor, EndedBy: EndedByHolder,
	}
	if r.Category == "" {
		r.Category = etl.CategoryNone
	}
	if e.Backoff != nil {
		ms := e.Backoff.Milliseconds()
		r.BackoffMs = &ms
	}
	return r
}

// check refuses an end whose item change runstate.Items does not allow from RUNNING (the
// claim it ends), or whose Terminal disagrees with its item status.
func (e AttemptEnd) check() error {
	if !runstate.Items.CanTransition(runstate.StatusRunning, e.ItemStatus) || e.Terminal != e.ItemStatus.Terminal() {
		return fmt.Errorf("end attempt %s of item %d of run %s as %s (terminal %t): %w",
			e.AttemptID, e.ItemNo, e.RunID, e.ItemStatus, e.Terminal, runstate.ErrInvalidTransition)
	}
	return nil
}

// Finish is the outcome of one attempt end.
type Finish struct {
	// Recorded is true when the end is in the ledger: written now, or already by an earlier
	// try of the same statement, or by an earlier end of the same attempt whose commit was not
	// acknowledged.
	Recorded bool
	// Status is the attempt's status as recorded: the one written now, or the one an earlier
	// end of this attempt wrote (an ambiguous commit that did land).
	Status runstate.Status
	// RunOpen is how many items of the run were still open once this end was counted (a lower
	// bound is not guaranteed under concurrency: 0 means this end may have completed the run).
	RunOpen int
	// Err is set when this one end could not be recorded although its neighbours in the batch
	// were (Postgres refused even its text-less form).
	Err error
}

// Lost reports whether the attempt had lost its claim: nothing was recorded.
func (f Finish) Lost() bool { return !f.Recorded && f.Err == nil }

// FinishAttempts records the ends of w's attempts in one statement and one commit, retrying
// transient errors (the statement is idempotent). When Postgres refuses a row of the batch (a value or a
// constraint: SQLSTATE class 22 or 23), each end is written alone so that one cannot fail its
// neighbours; an end still refused is tried once more without its texts, and if that fails too
// its Finish carries the error. An end runstate.Items refuses (its item status not a change
// allowed from RUNNING, or Terminal not matching it) is not written: its Finish carries
// runstate.ErrInvalidTransition.
func (s *Store) FinishAttempts(ctx context.Context, w WorkerRef, ends []AttemptEnd) ([]Finish, error) {
	valid := true
	for _, e := range ends {
		valid = valid && e.check() == nil
	}
	if valid {
		out, err := s.retryFinish(ctx, w, ends)
		if err == nil || !IsRowError(err) || len(ends) == 0 {
			return out, err
		}
	}
	out := make([]Finish, len(ends))
	for i, e := range ends {
		if err := e.check(); err != nil {
			out[i] = Finish{Err: err}
			continue
		}
		res, err := s.retryFinish(ctx, w, []AttemptEnd{e})
		if err != nil && IsRowError(err) {
			res, err = s.retryFinish(ctx, w, []AttemptEnd{withoutTexts(e, err)})
		}
		switch {
		case err != nil && IsRowError(err):
			out[i] = Finish{Err: err}
		case err != nil:
			return nil, err
		default:
			out[i] = res[0]
		}
	}
	return out, nil
}

func (s *Store) retryFinish(ctx context.Context, w WorkerRef, ends []AttemptEnd) ([]Finish, error) {
	var out []Finish
	err := Retry(ctx, RetryBookkeeping, func(ctx context.Context) error {
		var err error
		out, err = finishAttempts(ctx, s.q, w, ends)
		return err
	})
	return out, err
}

// withoutTexts keeps an end's outcome and drops what Postgres could not store.
func withoutTexts(e AttemptEnd, cause error) AttemptEnd {
	msg := "the attempt's end could not be stored as reported: " + Text(cause.Error(), 300)
	e.ErrorMessage, e.ErrorDetail, e.CursorEndMeta, e.CursorNote = &msg, nil, nil, nil
	return e
}

// FinishAttempts records ends inside the caller's transaction (a handler's target transaction
// on etlexec's own database), so the item's outcome commits with its target writes. It sets
// the transaction's lock timeout first: the caller's session is not Bounded. An end
// runstate.Items refuses fails the call with runstate.ErrInvalidTransition.
func (tx *Tx) FinishAttempts(ctx context.Context, w WorkerRef, ends []AttemptEnd) ([]Finish, error) {
	if _, err := tx.tx.Exec(ctx, "SET LOCAL lock_timeout = "+fmt.Sprint(LockTimeout.Milliseconds())); err != nil {
		return nil, fmt.Errorf("bound the target transaction's locks: %w", err)
	}
	for _, e := range ends {
		if err := e.check(); err != nil {
			return nil, err
		}
	}
	return finishAttempts(ctx, tx.q, w, ends)
}

func finishAttempts(ctx context.Context, q *sqlcdb.Queries, w WorkerRef, ends []AttemptEnd) ([]Finish, error) {
	rows := make([]endRow, len(ends))
	for i, e := range ends {
		rows[i] = rowOf(e)
	}
	b, err := json.Marshal(rows)
	if err != nil {
		return nil, fmt.Errorf("encode %d attempt ends: %w", len(ends), err)
	}
	res, err := q.FinishAttempts(ctx, sqlcdb.FinishAttemptsParams{Ends: b, Shard: w.Shard, WorkerName: w.Name})
	if err != nil {
		return nil, fmt.Errorf("finish %d attempts: %w", len(ends), err)
	}
	byAttempt := make(map[uuid.UUID]sqlcdb.FinishAttemptsRow, len(res))
	for _, r := range res {
		byAttempt[r.AttemptID] = r
	}
	// Items this batch settled, per run, to tell how many remain open after it.
	settled := map[uuid.UUID]int{}
	for _, e := range ends {
		if r := byAttempt[e.AttemptID]; r.Recorded && e.Terminal {
			settled[e.RunID]++
		}
	}
	out := make([]Finish, len(ends))
	for i, e := range ends {
		r := byAttempt[e.AttemptID]
		out[i] = Finish{Recorded: r.Recorded, Status: e.AttemptStatus, RunOpen: max(int(r.OpenBefore)-settled[e.RunID], 0)}
		// Not recorded now, but its holder's end is in the ledger: an earlier try landed.
		if status, by, _ := strings.Cut(r.Previous, ":"); !r.Recorded && by == EndedByHolder {
			out[i].Recorded, out[i].Status = true, runstate.Status(status)
		}
	}
	return out, nil
}

// SettleItems ends PENDING, unclaimed items of a run that can never be claimed (out of
// attempts, cancelled, past the run's deadline) as status with category and message, counting
// them in shard; it returns the items it settled with their task generations. status must be
// a final status runstate.Items allows from PENDING (FAILED, CANCELLED or SKIPPED).
func (s *Store) SettleItems(ctx context.Context, shard int16, runID uuid.UUID, itemNos []int32,
	status runstate.Status, category etl.Category, message string) ([]ItemTask, error) {
	if !status.Terminal() || !runstate.Items.CanTransition(runstate.StatusPending, status) {
		return nil, fmt.Errorf("settle %d items of run %s as %s: %w", len(itemNos), runID, status, runstate.ErrInvalidTransition)
	}
	var rows []sqlcdb.SettleItemsRow
	err := Retry(ctx, RetryBookkeeping, func(ctx context.Context) error {
		var err error
		rows, err = s.q.SettleItems(ctx, sqlcdb.SettleItemsParams{RunID: runID, ItemNos: itemNos, Status: string(status),
			Category: string(category), Message: Text(message, MessageMax), Shard: shard})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("settle %d items of run %s as %s: %w", len(itemNos), runID, status, err)
	}
	out := make([]ItemTask, len(rows))
	for i, r := range rows {
		out[i] = ItemTask{RunID: runID, ItemNo: r.ItemNo, Generation: r.Generation}
	}
	return out, nil
}

// ItemTask names an item's task: the item and the generation its task id carries.
type ItemTask struct {
	RunID      uuid.UUID
	ItemNo     int32
	Generation int32
	// NotBefore, when set, is when the task is due (a retry's backoff).
	NotBefore *time.Time
}

// OpenItems pages a run's PENDING, unclaimed items after the given item_no.
func (s *Store) OpenItems(ctx context.Context, runID uuid.UUID, after int32, limit int) ([]ItemTask, error) {
	rows, err := s.q.OpenItemsOfRun(ctx, sqlcdb.OpenItemsOfRunParams{RunID: runID, AfterItemNo: after, BatchSize: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list open items of run %s after %d: %w", runID, after, err)
	}
	out := make([]ItemTask, len(rows))
	for i, r := range rows {
		out[i] = ItemTask{RunID: runID, ItemNo: r.ItemNo, Generation: r.Generation, NotBefore: r.NextRetryAt}
	}
	return out, nil
}

// HoldsClaim reports whether the attempt still holds the item (retrying transient errors): a
// target transaction whose commit failed with the attempt's end in it did not land if it does.
func (s *Store) HoldsClaim(ctx context.Context, runID uuid.UUID, itemNo int32, attemptID uuid.UUID) (bool, error) {
	var held bool
	err := Retry(ctx, RetryBookkeeping, func(ctx context.Context) error {
		var err error
		held, err = s.q.HoldsClaim(ctx, sqlcdb.HoldsClaimParams{RunID: runID, ItemNo: itemNo, AttemptID: attemptID})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("check the claim of item %d of run %s: %w", itemNo, runID, err)
	}
	return held, nil
}
