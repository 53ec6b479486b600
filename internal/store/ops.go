package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

// ErrRunNotActive is returned when cancelling a run that already ended.
var ErrRunNotActive = errors.New("run is not pending or running")

// ErrRunNotFinished is returned when rerunning a run that has not ended.
var ErrRunNotFinished = errors.New("run has not finished")

// CancelledItem is an item cancelled before it started, with its task to remove from Redis.
type CancelledItem struct {
	ItemNo int32
	TaskID string
}

// CancelRun records who cancelled the run and why, and cancels every item not yet started, in
// one transaction. Running items end CANCELLED when their workers see the request.
func (s *Store) CancelRun(ctx context.Context, runID uuid.UUID, who, reason string) ([]CancelledItem, error) {
	var out []CancelledItem
	err := s.InTx(ctx, func(tx *Tx) error {
		n, err := tx.q.RequestCancel(ctx, sqlcdb.RequestCancelParams{RunID: runID, CancelledBy: &who, CancelReason: &reason})
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrRunNotActive
		}
		run, err := tx.q.GetRun(ctx, runID)
		if err != nil {
			return err
		}
		rows, err := tx.q.CancelPendingItems(ctx, runID)
		if err != nil {
			return err
		}
		nos := make([]int32, len(rows))
		for i, r := range rows {
			out = append(out, CancelledItem{ItemNo: r.ItemNo, TaskID: r.TaskID})
			nos[i] = r.ItemNo
		}
		return tx.addProgress(ctx, runID, run.ItemCount, nos, 1)
	})
	if err != nil {
		return nil, fmt.Errorf("cancel run %s: %w", runID, mapErr(err))
	}
	return out, nil
}

// addProgress moves the progress shards of the given items by sign (+1 terminal, -1 reopened).
func (tx *Tx) addProgress(ctx context.Context, runID uuid.UUID, itemCount int32, itemNos []int32, sign int32) error {
	if len(itemNos) == 0 {
		return nil
	}
	deltas := map[int16]int32{}
	for _, no := range itemNos {
		deltas[ShardOf(no, itemCount)] += sign
	}
	p := sqlcdb.AddProgressParams{RunID: runID}
	for sh, d := range deltas {
		p.Shards = append(p.Shards, sh)
		p.Deltas = append(p.Deltas, d)
	}
	return tx.q.AddProgress(ctx, p)
}

// RerunFilter selects the items of a finished run to run again.
type RerunFilter struct {
	Statuses    []string // default FAILED, CANCELLED
	Categories  []string
	ParamHashes []string
}

// RerunItem is an item a rerun selects.
type RerunItem struct {
	ItemNo        int32           `json:"item_no"`
	ParamHash     string          `json:"param_hash"`
	Params        json.RawMessage `json:"params"`
	Status        string          `json:"status"`
	ErrorCategory string          `json:"error_category"`
	ErrorMessage  *string         `json:"error_message,omitempty"`
	Attempts      int32           `json:"attempts"`
	TaskID        string          `json:"task_id"`
}

// RerunCandidates lists the items a rerun with f would select.
func (s *Store) RerunCandidates(ctx context.Context, runID uuid.UUID, f RerunFilter) ([]RerunItem, error) {
	if len(f.Statuses) == 0 {
		f.Statuses = []string{"FAILED", "CANCELLED"}
	}
	rows, err := s.q.RerunCandidates(ctx, sqlcdb.RerunCandidatesParams{RunID: runID, Statuses: f.Statuses,
		Categories: nonNil(f.Categories), ParamHashes: nonNil(f.ParamHashes)})
	if err != nil {
		return nil, fmt.Errorf("select rerun items of run %s: %w", runID, err)
	}
	out := make([]RerunItem, len(rows))
	for i, r := range rows {
		out[i] = RerunItem{ItemNo: r.ItemNo, ParamHash: r.ParamHash, Params: r.Params, Status: r.Status,
			ErrorCategory: r.ErrorCategory, ErrorMessage: r.ErrorMessage, Attempts: r.Attempts, TaskID: r.TaskID}
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
// attempts, takes them out of the progress count, and reopens the run as RUNNING, in one
// transaction. It returns the items with their new task ids.
func (s *Store) ReopenForRerun(ctx context.Context, runID uuid.UUID, itemNos []int32, maxAttempts int32) ([]CreatedItem, error) {
	var out []CreatedItem
	err := s.InTx(ctx, func(tx *Tx) error {
		n, err := tx.q.ReopenRun(ctx, runID)
		if IsUniqueViolation(err, oneActiveIndex) {
			return ErrActiveRun
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrRunNotFinished
		}
		run, err := tx.q.GetRun(ctx, runID)
		if err != nil {
			return err
		}
		rows, err := tx.q.ReopenItems(ctx, sqlcdb.ReopenItemsParams{RunID: runID, ItemNos: itemNos, MaxAttempts: maxAttempts})
		if err != nil {
			return err
		}
		nos := make([]int32, len(rows))
		for i, r := range rows {
			out = append(out, CreatedItem{ItemNo: r.ItemNo, ParamHash: r.ParamHash, TaskID: r.TaskID})
			nos[i] = r.ItemNo
		}
		return tx.addProgress(ctx, runID, run.ItemCount, nos, -1)
	})
	if err != nil {
		return nil, fmt.Errorf("reopen run %s: %w", runID, mapErr(err))
	}
	return out, nil
}

// RunningTaskIDs lists the task ids of a run's running items.
func (s *Store) RunningTaskIDs(ctx context.Context, runID uuid.UUID) ([]string, error) {
	ids, err := s.q.RunningTaskIDs(ctx, runID)
	if err != nil {
		return nil, fmt.Errorf("list running items of run %s: %w", runID, err)
	}
	return ids, nil
}
