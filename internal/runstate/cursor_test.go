package runstate_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
)

func TestItemCursor(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(h int) *time.Time { v := t0.Add(time.Duration(h) * time.Hour); return &v }
	stamp := func(h int) string { return at(h).Format(time.RFC3339Nano) }

	// md and lr are successful, non-dry items of each strategy with run policy.
	md := runstate.ItemCursorInput{Strategy: etl.StrategyModifiedDate, Policy: runstate.CursorPolicyRun, Succeeded: true}
	lr := runstate.ItemCursorInput{Strategy: etl.StrategyLastRun, Policy: runstate.CursorPolicyRun, Succeeded: true}
	with := func(in runstate.ItemCursorInput, f func(*runstate.ItemCursorInput)) runstate.ItemCursorInput {
		f(&in)
		return in
	}
	pending := func(h int) runstate.ItemCursorOutcome {
		return runstate.ItemCursorOutcome{Candidate: at(h), Note: "advances to " + stamp(h) + " if the run succeeds"}
	}
	now := func(h int) runstate.ItemCursorOutcome {
		return runstate.ItemCursorOutcome{Candidate: at(h), AdvanceNow: true, Note: "advanced to " + stamp(h)}
	}
	stays := func(note string) runstate.ItemCursorOutcome { return runstate.ItemCursorOutcome{Note: note} }

	tests := []struct {
		name string
		in   runstate.ItemCursorInput
		want runstate.ItemCursorOutcome
	}{
		{"ModifiedDateAdvancesWithTheRun", with(md, func(in *runstate.ItemCursorInput) { in.Current, in.Watermark = at(1), at(5) }), pending(5)},
		{"ModifiedDateFirstLoad", with(md, func(in *runstate.ItemCursorInput) { in.Watermark = at(2) }), pending(2)},
		{"ModifiedDateNoRows", with(md, func(in *runstate.ItemCursorInput) { in.Current = at(3) }), stays(runstate.CursorNoteNoNewRows)},
		{"ModifiedDateEqualRowsReRead", with(md, func(in *runstate.ItemCursorInput) {
			in.Current, in.Watermark, in.RecordsRead = at(3), at(3), 10
		}), stays("10 rows re-read at or before the cursor: cursor held")},
		{"ModifiedDateNeverBackwards", with(md, func(in *runstate.ItemCursorInput) { in.Current, in.Watermark = at(3), at(1) }), stays(runstate.CursorNoteNoNewRows)},
		{"ModifiedDateIgnoresLogicalStart", with(md, func(in *runstate.ItemCursorInput) { in.LogicalStart = at(9) }), stays(runstate.CursorNoteNoNewRows)},
		{"LastRunAdvances", with(lr, func(in *runstate.ItemCursorInput) { in.Current, in.LogicalStart = at(1), at(2) }), pending(2)},
		{"LastRunIgnoresWatermark", with(lr, func(in *runstate.ItemCursorInput) { in.LogicalStart, in.Watermark = at(2), at(7) }), pending(2)},
		{"LastRunOlderRerun", with(lr, func(in *runstate.ItemCursorInput) { in.Current, in.LogicalStart = at(5), at(2) }), stays(runstate.CursorNoteNoNewRows)},
		{"None", with(md, func(in *runstate.ItemCursorInput) { in.Strategy, in.Watermark = etl.StrategyNone, at(5) }), stays(runstate.CursorNoteNotIncremental)},
		{"UnknownStrategy", with(md, func(in *runstate.ItemCursorInput) { in.Strategy, in.Watermark = "hourly", at(5) }), stays(runstate.CursorNoteNotIncremental)},
		{"DryRun", with(md, func(in *runstate.ItemCursorInput) { in.DryRun, in.Current, in.Watermark = true, at(1), at(5) }), stays(runstate.CursorNoteDryRun)},
		{"DryRunBeforeFailure", with(md, func(in *runstate.ItemCursorInput) { in.DryRun, in.Succeeded = true, false }), stays(runstate.CursorNoteDryRun)},
		{"ItemFailed", with(md, func(in *runstate.ItemCursorInput) { in.Succeeded, in.Watermark = false, at(5) }), stays(runstate.CursorNoteItemFailed)},
		{"ItemPolicyMovesNow", with(md, func(in *runstate.ItemCursorInput) {
			in.Policy, in.Current, in.Watermark = runstate.CursorPolicyItem, at(1), at(5)
		}), now(5)},
		{"UnknownPolicyIsRun", with(md, func(in *runstate.ItemCursorInput) { in.Policy, in.Watermark = "", at(5) }), pending(5)},
		{"HandlerNoteLeads", with(md, func(in *runstate.ItemCursorInput) {
			in.Watermark, in.HandlerNote = at(2), "3 rows at the boundary re-read"
		}),
			runstate.ItemCursorOutcome{Candidate: at(2), Note: "3 rows at the boundary re-read; advances to " + stamp(2) + " if the run succeeds"}},
		// The handler's note says what it read: new rows at the cursor's own time are not "re-read".
		{"HandlerNoteWhenHeld", with(md, func(in *runstate.ItemCursorInput) {
			in.Current, in.Watermark, in.RecordsRead, in.HandlerNote = at(2), at(2), 4, "4 rows written at the cursor"
		}), runstate.ItemCursorOutcome{Note: "4 rows written at the cursor; cursor held"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, runstate.ItemCursor(tc.in)); diff != "" {
				t.Errorf("ItemCursor mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunCursors(t *testing.T) {
	t.Parallel()
	md, run, item := etl.StrategyModifiedDate, runstate.CursorPolicyRun, runstate.CursorPolicyItem
	tests := []struct {
		name     string
		strategy etl.Strategy
		policy   runstate.CursorPolicy
		dry      bool
		status   runstate.Status
		advance  bool
	}{
		{"RunSucceeded", md, run, false, runstate.StatusSuccess, true},
		{"RunPartial", md, run, false, runstate.StatusPartialSuccess, false},
		{"DryRun", md, run, true, runstate.StatusSuccess, false},
		{"ItemPolicyMovedAlready", md, item, false, runstate.StatusSuccess, false},
		{"NotIncremental", etl.StrategyNone, run, false, runstate.StatusSuccess, false},
		{"LastRun", etl.StrategyLastRun, run, false, runstate.StatusSuccess, true},
	}
	for _, tc := range tests {
		advance, note := runstate.RunCursors(tc.strategy, tc.policy, tc.dry, tc.status)
		if advance != tc.advance || note == "" {
			t.Errorf("%s: RunCursors = %v, %q; want advance %v and a note", tc.name, advance, note, tc.advance)
		}
	}
}

func TestParseCursorPolicy(t *testing.T) {
	t.Parallel()
	for _, p := range []runstate.CursorPolicy{runstate.CursorPolicyRun, runstate.CursorPolicyItem} {
		if got, err := runstate.ParseCursorPolicy(string(p)); err != nil || got != p {
			t.Errorf("ParseCursorPolicy(%q) = %q, %v", p, got, err)
		}
	}
	if _, err := runstate.ParseCursorPolicy("RUN"); err == nil {
		t.Error(`ParseCursorPolicy("RUN") succeeded`)
	}
}
