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

// Notes a CursorOutcome gives, stored in dw_etl_run_items.cursor_note.
const (
	CursorNoteNotIncremental = "not incremental"
	CursorNoteDryRun         = "dry run"
	CursorNoteItemFailed     = "item failed"
	CursorNoteRunFailed      = "run not successful"
	CursorNoteNoNewRows      = "no new rows"
	CursorNoteAdvanced       = "advanced"
)

// CursorInput is what CursorDecision needs about one item.
type CursorInput struct {
	Strategy etl.Strategy
	Policy   CursorPolicy
	DryRun   bool
	// ItemStatus is the item's final status; RunStatus the run's (used by
	// CursorPolicyRun only).
	ItemStatus, RunStatus Status
	// Current is the stored cursor, nil when there is none yet.
	Current *time.Time
	// Watermark is the greatest modification time the handler observed
	// (StrategyModifiedDate), nil when it saw no rows.
	Watermark *time.Time
	// LogicalStart is the run's logical start (StrategyLastRun).
	LogicalStart *time.Time
}

// CursorOutcome says whether an item's cursor moves and where it ends.
type CursorOutcome struct {
	// Advance is true when the cursor must be written with Value.
	Advance bool
	// Value is the cursor after this item: the new value when Advance, otherwise the
	// current one (nil if there is none).
	Value *time.Time
	// Note is one of the CursorNote constants.
	Note string
}

// CursorDecision decides whether an item moves its cursor, by the first rule that
// applies:
//
//  1. strategy none (or unknown): "not incremental";
//  2. dry run: "dry run", since a dry run never moves a cursor;
//  3. item status not SUCCESS: "item failed";
//  4. policy run (or unknown, the stricter reading) and run status not SUCCESS:
//     "run not successful";
//  5. the candidate, the Watermark for modified_date or the LogicalStart for last_run,
//     is nil or not after Current: "no new rows", and the cursor stays;
//  6. otherwise "advanced" to the candidate.
//
// A cursor never moves backwards: Value is the greater of Current and the candidate.
func CursorDecision(in CursorInput) CursorOutcome {
	stay := func(note string) CursorOutcome {
		return CursorOutcome{Value: cloneTime(in.Current), Note: note}
	}

	var candidate *time.Time
	switch in.Strategy {
	case etl.StrategyModifiedDate:
		candidate = in.Watermark
	case etl.StrategyLastRun:
		candidate = in.LogicalStart
	default:
		return stay(CursorNoteNotIncremental)
	}
	switch {
	case in.DryRun:
		return stay(CursorNoteDryRun)
	case in.ItemStatus != StatusSuccess:
		return stay(CursorNoteItemFailed)
	case in.Policy != CursorPolicyItem && in.RunStatus != StatusSuccess:
		return stay(CursorNoteRunFailed)
	case candidate == nil || (in.Current != nil && !candidate.After(*in.Current)):
		return stay(CursorNoteNoNewRows)
	}
	return CursorOutcome{Advance: true, Value: cloneTime(candidate), Note: CursorNoteAdvanced}
}

func cloneTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := *t
	return &c
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
