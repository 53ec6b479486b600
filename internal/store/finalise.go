package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

// RunOutcome is everything the run-status rule needs, read under the run's row lock.
type RunOutcome struct {
	Run              Run
	Succeeded        int
	Failed           int
	Skipped          int
	Cancelled        int
	Pending          int
	Running          int
	RecordsRead      int64
	RecordsWritten   int64
	Pages            int64
	FailedCategories map[string]int
	AttemptCount     int
	Items            []ItemOutcome
}

// ItemOutcome is one item's end state, for cursor decisions.
type ItemOutcome struct {
	ItemNo      int32
	ParamHash   string
	Params      json.RawMessage
	Status      string
	CursorStart *time.Time
	CursorEnd   *time.Time
}

// RunResult is what finalisation writes.
type RunResult struct {
	Status        string
	ErrorCategory string
	ErrorMessage  *string
	// Notes maps item_no to its cursor_note.
	Notes map[int32]string
	// Advances are the cursors to move (never backwards; enforced in SQL too).
	Advances []CursorAdvance
}

// ErrRunNotDone is returned by a decide func when items are still open.
var ErrRunNotDone = errors.New("run has open items")

// FinaliseRun rolls a run up exactly once: under the run's row lock, it reads the item
// outcomes, lets decide compute the result, and writes status, counts, metrics and cursors in
// one transaction. It returns false when the run was already final or decide said
// ErrRunNotDone.
func (s *Store) FinaliseRun(ctx context.Context, runID uuid.UUID, decide func(RunOutcome) (RunResult, error)) (bool, error) {
	done := false
	err := s.InTx(ctx, func(tx *Tx) error {
		run, err := tx.q.LockRunForFinalise(ctx, runID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // already final (or gone): exactly once
		}
		if err != nil {
			return fmt.Errorf("lock run: %w", err)
		}
		tot, err := tx.q.RunTotals(ctx, runID)
		if err != nil {
			return fmt.Errorf("sum items: %w", err)
		}
		out := RunOutcome{Run: run, Succeeded: int(tot.Succeeded), Failed: int(tot.Failed), Skipped: int(tot.Skipped),
			Cancelled: int(tot.Cancelled), Pending: int(tot.Pending), Running: int(tot.Running),
			RecordsRead: tot.RecordsRead, RecordsWritten: tot.RecordsWritten, Pages: tot.PageCount,
			FailedCategories: map[string]int{}}
		if out.Pending+out.Running > 0 {
			if _, err := decide(out); errors.Is(err, ErrRunNotDone) {
				return nil
			}
		}
		cats, err := tx.q.FailedCategories(ctx, runID)
		if err != nil {
			return err
		}
		for _, c := range cats {
			out.FailedCategories[c.ErrorCategory] = int(c.N)
		}
		n, err := tx.q.RunAttemptCount(ctx, runID)
		if err != nil {
			return err
		}
		out.AttemptCount = int(n)
		items, err := tx.q.ItemOutcomes(ctx, runID)
		if err != nil {
			return err
		}
		out.Items = make([]ItemOutcome, len(items))
		for i, it := range items {
			out.Items[i] = ItemOutcome{ItemNo: it.ItemNo, ParamHash: it.ParamHash, Params: it.Params, Status: it.Status,
				CursorStart: it.CursorStart, CursorEnd: it.CursorEnd}
		}
		res, err := decide(out)
		if errors.Is(err, ErrRunNotDone) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(res.Advances) > 0 {
			byStrategy := map[string][]CursorAdvance{}
			for _, a := range res.Advances {
				byStrategy[a.Strategy] = append(byStrategy[a.Strategy], a)
			}
			for strategy, as := range byStrategy {
				p := sqlcdb.AdvanceCursorsParams{JobID: run.JobID, Strategy: strategy, RunID: runID}
				for _, a := range as {
					p.ParamHashes = append(p.ParamHashes, a.ParamHash)
					p.Params = append(p.Params, a.Params)
					p.CursorValues = append(p.CursorValues, a.Value)
				}
				if err := tx.q.AdvanceCursors(ctx, p); err != nil {
					return fmt.Errorf("advance %d cursors: %w", len(as), err)
				}
			}
		}
		if len(res.Notes) > 0 {
			p := sqlcdb.SetCursorNotesParams{RunID: runID}
			for no, note := range res.Notes {
				p.ItemNos = append(p.ItemNos, no)
				p.Notes = append(p.Notes, note)
			}
			if err := tx.q.SetCursorNotes(ctx, p); err != nil {
				return fmt.Errorf("write cursor notes: %w", err)
			}
		}
		if err := tx.q.FinishRun(ctx, sqlcdb.FinishRunParams{
			Status: res.Status, ErrorCategory: res.ErrorCategory, ErrorMessage: res.ErrorMessage,
			AttemptCount: int32(out.AttemptCount), ItemsSucceeded: int32(out.Succeeded), ItemsFailed: int32(out.Failed),
			ItemsSkipped: int32(out.Skipped), ItemsCancelled: int32(out.Cancelled), RecordsRead: out.RecordsRead,
			RecordsWritten: out.RecordsWritten, PageCount: out.Pages, RunID: runID,
		}); err != nil {
			return fmt.Errorf("write run result: %w", err)
		}
		done = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("finalise run %s: %w", runID, err)
	}
	return done, nil
}
