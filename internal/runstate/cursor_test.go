package runstate_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
)

func TestCursorDecision(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(h int) *time.Time { v := t0.Add(time.Duration(h) * time.Hour); return &v }
	ok := runstate.StatusSuccess

	// md and lr are successful, non-dry items of each strategy with run policy.
	md := runstate.CursorInput{Strategy: etl.StrategyModifiedDate, Policy: runstate.CursorPolicyRun, ItemStatus: ok, RunStatus: ok}
	lr := runstate.CursorInput{Strategy: etl.StrategyLastRun, Policy: runstate.CursorPolicyRun, ItemStatus: ok, RunStatus: ok}
	with := func(in runstate.CursorInput, f func(*runstate.CursorInput)) runstate.CursorInput { f(&in); return in }

	advanced := func(v *time.Time) runstate.CursorOutcome {
		return runstate.CursorOutcome{Advance: true, Value: v, Note: runstate.CursorNoteAdvanced}
	}
	stays := func(v *time.Time, note string) runstate.CursorOutcome {
		return runstate.CursorOutcome{Value: v, Note: note}
	}

	tests := []struct {
		name string
		in   runstate.CursorInput
		want runstate.CursorOutcome
	}{
		{"ModifiedDateAdvances", with(md, func(in *runstate.CursorInput) { in.Current, in.Watermark = at(1), at(5) }), advanced(at(5))},
		{"ModifiedDateFirstLoad", with(md, func(in *runstate.CursorInput) { in.Watermark = at(2) }), advanced(at(2))},
		{"ModifiedDateNoRows", with(md, func(in *runstate.CursorInput) { in.Current = at(3) }), stays(at(3), runstate.CursorNoteNoNewRows)},
		{"ModifiedDateNoRowsFirstLoad", md, stays(nil, runstate.CursorNoteNoNewRows)},
		{"ModifiedDateEqual", with(md, func(in *runstate.CursorInput) { in.Current, in.Watermark = at(3), at(3) }), stays(at(3), runstate.CursorNoteNoNewRows)},
		{"ModifiedDateNeverBackwards", with(md, func(in *runstate.CursorInput) { in.Current, in.Watermark = at(3), at(1) }), stays(at(3), runstate.CursorNoteNoNewRows)},
		{"ModifiedDateIgnoresLogicalStart", with(md, func(in *runstate.CursorInput) { in.LogicalStart = at(9) }), stays(nil, runstate.CursorNoteNoNewRows)},

		{"LastRunAdvances", with(lr, func(in *runstate.CursorInput) { in.Current, in.LogicalStart = at(1), at(2) }), advanced(at(2))},
		{"LastRunIgnoresWatermark", with(lr, func(in *runstate.CursorInput) { in.LogicalStart, in.Watermark = at(2), at(7) }), advanced(at(2))},
		{"LastRunOlderRerun", with(lr, func(in *runstate.CursorInput) { in.Current, in.LogicalStart = at(5), at(2) }), stays(at(5), runstate.CursorNoteNoNewRows)},

		{"None", with(md, func(in *runstate.CursorInput) { in.Strategy, in.Watermark = etl.StrategyNone, at(5) }), stays(nil, runstate.CursorNoteNotIncremental)},
		{"UnknownStrategy", with(md, func(in *runstate.CursorInput) { in.Strategy, in.Watermark = "hourly", at(5) }), stays(nil, runstate.CursorNoteNotIncremental)},
		{"DryRun", with(md, func(in *runstate.CursorInput) { in.DryRun, in.Current, in.Watermark = true, at(1), at(5) }), stays(at(1), runstate.CursorNoteDryRun)},
		{"DryRunBeforeFailure", with(md, func(in *runstate.CursorInput) { in.DryRun, in.ItemStatus = true, runstate.StatusFailed }), stays(nil, runstate.CursorNoteDryRun)},
		{"ItemFailed", with(md, func(in *runstate.CursorInput) { in.ItemStatus, in.Watermark = runstate.StatusFailed, at(5) }), stays(nil, runstate.CursorNoteItemFailed)},
		{"ItemSkipped", with(lr, func(in *runstate.CursorInput) { in.ItemStatus, in.LogicalStart = runstate.StatusSkipped, at(5) }), stays(nil, runstate.CursorNoteItemFailed)},
		{"RunPartial", with(md, func(in *runstate.CursorInput) { in.RunStatus, in.Watermark = runstate.StatusPartialSuccess, at(5) }), stays(nil, runstate.CursorNoteRunFailed)},
		{"RunStillRunning", with(lr, func(in *runstate.CursorInput) { in.RunStatus, in.LogicalStart = runstate.StatusRunning, at(5) }), stays(nil, runstate.CursorNoteRunFailed)},
		{"UnknownPolicyIsRun", with(md, func(in *runstate.CursorInput) {
			in.Policy, in.RunStatus, in.Watermark = "", runstate.StatusFailed, at(5)
		}), stays(nil, runstate.CursorNoteRunFailed)},
		{"ItemPolicyIgnoresRun", with(md, func(in *runstate.CursorInput) {
			in.Policy, in.RunStatus, in.Current, in.Watermark = runstate.CursorPolicyItem, runstate.StatusPartialSuccess, at(1), at(5)
		}), advanced(at(5))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := runstate.CursorDecision(tc.in)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("CursorDecision mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// The outcome must not alias the input: the caller may reuse its times.
func TestCursorDecisionCopiesValue(t *testing.T) {
	t.Parallel()
	wm := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	out := runstate.CursorDecision(runstate.CursorInput{
		Strategy: etl.StrategyModifiedDate, Policy: runstate.CursorPolicyItem,
		ItemStatus: runstate.StatusSuccess, Watermark: &wm,
	})
	wm = wm.Add(time.Hour)
	if want := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC); !out.Value.Equal(want) {
		t.Errorf("Value changed with the input: %v, want %v", out.Value, want)
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
