package runstate_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/etlexec/etlexec/internal/runstate"
)

// TestTransitions checks every (from, to) pair of both machines against the lists
// below, written out independently of the package's tables.
func TestTransitions(t *testing.T) {
	t.Parallel()
	const (
		P  = runstate.StatusPending
		R  = runstate.StatusRunning
		S  = runstate.StatusSuccess
		PS = runstate.StatusPartialSuccess
		F  = runstate.StatusFailed
		SK = runstate.StatusSkipped
		C  = runstate.StatusCancelled
	)
	tests := []struct {
		name    string
		m       runstate.Machine
		starts  []runstate.Status
		allowed []runstate.Transition
	}{
		{
			name:   "Items",
			m:      runstate.Items,
			starts: []runstate.Status{P},
			allowed: []runstate.Transition{
				{From: P, To: R}, {From: R, To: P},
				{From: R, To: S}, {From: R, To: F}, {From: R, To: C},
				{From: P, To: F}, {From: P, To: C}, {From: P, To: SK},
				{From: F, To: P}, {From: C, To: P}, {From: SK, To: P},
			},
		},
		{
			name:   "Runs",
			m:      runstate.Runs,
			starts: []runstate.Status{P, SK},
			allowed: []runstate.Transition{
				{From: P, To: R},
				{From: P, To: S}, {From: P, To: PS}, {From: P, To: F}, {From: P, To: C},
				{From: R, To: S}, {From: R, To: PS}, {From: R, To: F}, {From: R, To: C},
				{From: S, To: R}, {From: PS, To: R}, {From: F, To: R}, {From: C, To: R},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want := make(map[runstate.Transition]bool)
			for _, tr := range tc.allowed {
				want[tr] = true
			}
			for _, s := range allStatuses {
				if got, want := tc.m.CanStart(s), slices.Contains(tc.starts, s); got != want {
					t.Errorf("CanStart(%s) = %t, want %t", s, got, want)
				}
			}
			if got := tc.m.Starts(); len(got) != len(tc.starts) {
				t.Errorf("Starts() = %v, want %v", got, tc.starts)
			}
			for _, from := range allStatuses {
				for _, to := range allStatuses {
					tr := runstate.Transition{From: from, To: to}
					if got := tc.m.CanTransition(from, to); got != want[tr] {
						t.Errorf("CanTransition(%s) = %t, want %t", tr, got, want[tr])
					}
					err := tc.m.Check(from, to)
					if want[tr] != (err == nil) || (err != nil && !errors.Is(err, runstate.ErrInvalidTransition)) {
						t.Errorf("Check(%s) = %v, want allowed %t", tr, err, want[tr])
					}
				}
			}
			if got := len(tc.m.Transitions()); got != len(tc.allowed) {
				t.Errorf("Transitions() lists %d changes, want %d", got, len(tc.allowed))
			}
		})
	}
}

func TestTransitionsSorted(t *testing.T) {
	t.Parallel()
	ts := runstate.Items.Transitions()
	for i := 1; i < len(ts); i++ {
		a, b := ts[i-1], ts[i]
		if a.From > b.From || (a.From == b.From && a.To >= b.To) {
			t.Errorf("Transitions() out of order at %d: %s before %s", i, a, b)
		}
	}
	if got, want := ts[0].String(), "CANCELLED → PENDING"; got != want {
		t.Errorf("first transition = %q, want %q", got, want)
	}
}
