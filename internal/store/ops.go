package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

// ErrRunNotActive is returned when cancelling a run that already ended.
var ErrRunNotActive = errors.New("run is not pending or running")

// ErrRunNotFinished is returned when rerunning a run that has not ended.
var ErrRunNotFinished = errors.New("run has not finished")

// MsgRunCancelled is the error message of items a cancel ended.
const MsgRunCancelled = "run cancelled"

// cancelBatch bounds the items one cancel statement settles, so a huge run's cancel never
// holds a long transaction.
const cancelBatch = 5000

// RequestCancel records who cancelled the run and why; from then on no item of it is claimed.
func (s *Store) RequestCancel(ctx context.Context, runID uuid.UUID, who, reason string) error {
	who, reason = Text(who, 200), Text(reason, MessageMax)
	n, err := s.q.RequestCancel(ctx, sqlcdb.RequestCancelParams{RunID: runID, CancelledBy: &who, CancelReason: &reason})
	if err != nil {
		return fmt.Errorf("cancel run %s: %w", runID, err)
	}
	if n == 0 {
		return fmt.Errorf("cancel run %s: %w", runID, ErrRunNotActive)
	}
	return nil
}

// CancelOpenItems ends every item of a run that no attempt holds as CANCELLED, in bounded
// batches, and returns them (their tasks can be removed from Redis). Items an attempt holds
// end CANCELLED when their workers stop them.
func (s *Store) CancelOpenItems(ctx context.Context, runID uuid.UUID) ([]ItemTask, error) {
	var out []ItemTask
	after := int32(0)
	for {
		page, err := s.OpenItems(ctx, runID, after, cancelBatch)
		if err != nil || len(page) == 0 {
			return out, err
		}
		nos := make([]int32, len(page))
		for i, p := range page {
			nos[i] = p.ItemNo
		}
		settled, err := s.SettleItems(ctx, ReconcilerShard, runID, nos, runstate.StatusCancelled, etl.CategoryNone, MsgRunCancelled)
		if err != nil {
			return out, err
		}
		out = append(out, settled...)
		after = page[len(page)-1].ItemNo
		if len(page) < cancelBatch {
			return out, nil
		}
	}
}

// ClaimedItems lists the items of a run an attempt holds, with their task generations.
func (s *Store) ClaimedItems(ctx context.Context, runID uuid.UUID) ([]ItemTask, error) {
	rows, err := s.q.ClaimedItems(ctx, runID)
	if err != nil {
		return nil, fmt.Errorf("list claimed items of run %s: %w", runID, err)
	}
	out := make([]ItemTask, len(rows))
	for i, r := range rows {
		out[i] = ItemTask{RunID: runID, ItemNo: r.ItemNo, Generation: r.Generation}
	}
	return out, nil
}

// RerunFilter selects the items of a finished run to run again.
type RerunFilter struct {
	Statuses    []string // default FAILED, CANCELLED
	Categories  []string
	ParamHashes []string
}

// ErrRerunSucceeded is returned when a rerun asks for SUCCESS items: a second success of an
// item in the same run would load its data twice.
var ErrRerunSucceeded = errors.New("succeeded items are not rerun: trigger a new run with their params to load them again")

// RerunItem is an item a rerun selects.
type RerunItem struct {
	ItemNo        int32           `json:"item_no"`
	ParamHash     string          `json:"param_hash"`
	Params        json.RawMessage `json:"params"`
	Status        runstate.Status `json:"status"`
	ErrorCategory etl.Category    `json:"error_category"`
	ErrorMessage  *string         `json:"error_message,omitempty"`
	Attempts      int32           `json:"attempts"`
	Generation    int32           `json:"generation"`
}

// RerunCandidates lists the items a rerun with f would select.
func (s *Store) RerunCandidates(ctx context.Context, runID uuid.UUID, f RerunFilter) ([]RerunItem, error) {
	if len(f.Statuses) == 0 {
		f.Statuses = []string{string(runstate.StatusFailed), string(runstate.StatusCancelled)}
	}
	for _, st := range f.Statuses {
		if runstate.Status(st) == runstate.StatusSuccess {
			return nil, fmt.Errorf("rerun run %s: %w", runID, ErrRerunSucceeded)
		}
	}
	rows, err := s.q.RerunCandidates(ctx, sqlcdb.RerunCandidatesParams{RunID: runID, Statuses: f.Statuses,
		Categories: nonNil(f.Categories), ParamHashes: nonNil(f.ParamHashes)})
	if err != nil {
		return nil, fmt.Errorf("select rerun items of run %s: %w", runID, err)
	}
	out := make([]RerunItem, len(rows))
	for i, r := range rows {
		out[i] = RerunItem{ItemNo: r.ItemNo, ParamHash: r.ParamHash, Params: r.Params, Status: r.Status,
			ErrorCategory: r.ErrorCategory, ErrorMessage: r.ErrorMessage, Attempts: r.Attempts, Generation: r.Generation}
	}
	return out, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// ReopenForRerun puts the items back to PENDING under a new generation with maxAttempts more
// attempts, takes them out of the counters, and reopens the run as RUNNING under a fan-out
// lease held by the caller, in one transaction. It returns the reopened items' tasks.
func (s *Store) ReopenForRerun(ctx context.Context, runID uuid.UUID, itemNos []int32, maxAttempts int32) ([]ItemTask, error) {
	var out []ItemTask
	err := s.InTx(ctx, func(tx *Tx) error {
		n, err := tx.q.ReopenRun(ctx, sqlcdb.ReopenRunParams{RunID: runID, FanoutMs: FanoutLeaseDefault.Milliseconds()})
		if IsUniqueViolation(err, oneActiveIndex) {
			return ErrActiveRun
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrRunNotFinished
		}
		rows, err := tx.q.ReopenItems(ctx, sqlcdb.ReopenItemsParams{RunID: runID, ItemNos: itemNos, MaxAttempts: maxAttempts, Shard: ReconcilerShard})
		if err != nil {
			return err
		}
		for _, r := range rows {
			out = append(out, ItemTask{RunID: runID, ItemNo: r.ItemNo, Generation: r.Generation})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reopen run %s: %w", runID, mapErr(err))
	}
	return out, nil
}
