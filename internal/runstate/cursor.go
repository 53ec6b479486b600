package runstate

import (
	"fmt"
	"time"

	"github.com/etlexec/etlexec/etl"
)

// CursorPolicy says when an incremental job's cursors move (the cursor_policy column
// of dw_etl_jobs).
type CursorPolicy string

const (
	// CursorPolicyRun moves an item's cursor only when the whole run succeeded, so a
	// rerun of a partly failed run loads the same window for every item.
	CursorPolicyRun CursorPolicy = "run"
	// CursorPolicyItem moves each succeeded item's cursor regardless of its siblings.
	CursorPolicyItem CursorPolicy = "item"
)

// Notes the cursor rules give (dw_etl_run_items.cursor_note, dw_etl_runs.cursor_note).
const (
	CursorNoteNotIncremental = "not incremental"
	CursorNoteDryRun         = "dry run: cursor held"
	CursorNoteItemFailed     = "item failed: cursor held"
	CursorNoteNoNewRows      = "no new rows: cursor held"
	// CursorNoteHeld follows a handler's own note when the cursor stays.
	CursorNoteHeld = "cursor held"
)

// ItemCursorInput is what the cursor rule knows about one item that ended.
type ItemCursorInput struct {
	Strategy etl.Strategy
	Policy   CursorPolicy
	DryRun   bool
	// Succeeded is true when the item ended SUCCESS.
	Succeeded bool
	// Current is the stored cursor when the run expanded its items, nil on a first load.
	Current *time.Time
	// Watermark is the greatest modification time the handler observed (modified_date),
	// nil when it observed none.
	Watermark *time.Time
	// LogicalStart is the run's logical start (last_run).
	LogicalStart *time.Time
	// RecordsRead is how many records the item read.
	RecordsRead int64
	// HandlerNote is what the handler said about its load (etl.Item.SetNote), "" if nothing.
	HandlerNote string
}

// ItemCursorOutcome is the cursor rule's answer for one item.
type ItemCursorOutcome struct {
	// Candidate is where the item's cursor moves if it moves at all: the watermark
	// (modified_date) or the run's logical start (last_run); nil when it stays.
	Candidate *time.Time
	// AdvanceNow is true when the cursor moves with the item's own success (policy item);
	// with policy run it moves at finalisation when the run succeeded (RunCursors).
	AdvanceNow bool
	// Note says what happened, stored as the item's cursor_note.
	Note string
}

// ItemCursor decides an ended item's cursor, by the first rule that applies:
//
//  1. strategy none (or unknown): "not incremental";
//  2. a dry run never moves a cursor;
//  3. a failed item never moves its cursor;
//  4. the candidate — the watermark for modified_date, the run's logical start for
//     last_run — is nil or not after the current cursor: the cursor stays (without a note of
//     the handler's, the note says whether rows at or before the cursor were re-read);
//  5. policy item: the cursor moves to the candidate now;
//  6. policy run (or unknown, the stricter reading): it moves there if the run succeeds.
//
// A cursor never moves backwards, and the handler's own note, when it gave one, leads the
// item's note.
func ItemCursor(in ItemCursorInput) ItemCursorOutcome {
	out := itemCursor(in)
	if in.HandlerNote != "" && in.Strategy != etl.StrategyNone && in.Strategy != "" {
		out.Note = in.HandlerNote + "; " + out.Note
	}
	return out
}

func itemCursor(in ItemCursorInput) ItemCursorOutcome {
	var candidate *time.Time
	switch in.Strategy {
	case etl.StrategyModifiedDate:
		candidate = in.Watermark
	case etl.StrategyLastRun:
		candidate = in.LogicalStart
	default:
		return ItemCursorOutcome{Note: CursorNoteNotIncremental}
	}
	switch {
	case in.DryRun:
		return ItemCursorOutcome{Note: CursorNoteDryRun}
	case !in.Succeeded:
		return ItemCursorOutcome{Note: CursorNoteItemFailed}
	case candidate == nil || (in.Current != nil && !candidate.After(*in.Current)):
		if in.HandlerNote != "" {
			// The handler said what it read (rows at the cursor's own time may be new ones).
			return ItemCursorOutcome{Note: CursorNoteHeld}
		}
		if in.RecordsRead > 0 {
			return ItemCursorOutcome{Note: fmt.Sprintf("%d rows re-read at or before the cursor: cursor held", in.RecordsRead)}
		}
		return ItemCursorOutcome{Note: CursorNoteNoNewRows}
	}
	c := *candidate
	stamp := c.UTC().Format(time.RFC3339Nano)
	if in.Policy == CursorPolicyItem {
		return ItemCursorOutcome{Candidate: &c, AdvanceNow: true, Note: "advanced to " + stamp}
	}
	return ItemCursorOutcome{Candidate: &c, Note: "advances to " + stamp + " if the run succeeds"}
}

// RunCursors decides at finalisation whether the cursor candidates of a run's succeeded
// items move (policy run) and says so in one note for the run.
func RunCursors(strategy etl.Strategy, policy CursorPolicy, dryRun bool, status Status) (advance bool, note string) {
	switch {
	case strategy != etl.StrategyModifiedDate && strategy != etl.StrategyLastRun:
		return false, CursorNoteNotIncremental
	case dryRun:
		return false, "dry run: cursors held"
	case policy == CursorPolicyItem:
		return false, "cursor policy item: each succeeded item moved its own cursor"
	case status != StatusSuccess:
		return false, fmt.Sprintf("run %s: cursors held (cursor policy run)", status)
	}
	return true, "cursors advanced"
}

// ParseCursorPolicy returns the CursorPolicy named by s, exactly as stored in
// dw_etl_jobs.
func ParseCursorPolicy(s string) (CursorPolicy, error) {
	switch p := CursorPolicy(s); p {
	case CursorPolicyRun, CursorPolicyItem:
		return p, nil
	}
	return "", fmt.Errorf("unknown cursor policy %q: want %q or %q", s, CursorPolicyRun, CursorPolicyItem)
}
