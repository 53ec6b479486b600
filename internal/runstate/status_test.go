package runstate_test

import (
	"strings"
	"testing"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
)

var allStatuses = []runstate.Status{
	runstate.StatusPending, runstate.StatusRunning, runstate.StatusSuccess, runstate.StatusPartialSuccess,
	runstate.StatusFailed, runstate.StatusSkipped, runstate.StatusCancelled,
}

func TestStatusTerminal(t *testing.T) {
	t.Parallel()
	nonTerminal := map[runstate.Status]bool{runstate.StatusPending: true, runstate.StatusRunning: true}
	for _, s := range allStatuses {
		if got, want := s.Terminal(), !nonTerminal[s]; got != want {
			t.Errorf("%s.Terminal() = %t, want %t", s, got, want)
		}
	}
	if runstate.Status("DONE").Terminal() {
		t.Error("unknown status reported terminal")
	}
}

func TestParseStatus(t *testing.T) {
	t.Parallel()
	for _, s := range allStatuses {
		if got, err := runstate.ParseStatus(string(s)); err != nil || got != s {
			t.Errorf("ParseStatus(%q) = %q, %v", s, got, err)
		}
	}
	if got, err := runstate.ParseStatus(" partial_success "); err != nil || got != runstate.StatusPartialSuccess {
		t.Errorf(`ParseStatus(" partial_success ") = %q, %v`, got, err)
	}
	for _, bad := range []string{"", "DONE", "PARTIAL"} {
		if _, err := runstate.ParseStatus(bad); err == nil {
			t.Errorf("ParseStatus(%q) succeeded", bad)
		}
	}
}

func TestRunStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		c      runstate.Counts
		cancel bool
		want   runstate.Status
	}{
		{"NoItems", runstate.Counts{}, false, runstate.StatusSuccess},
		{"AllSucceeded", runstate.Counts{Succeeded: 3}, false, runstate.StatusSuccess},
		{"SucceededAndSkipped", runstate.Counts{Succeeded: 2, Skipped: 1}, false, runstate.StatusSuccess},
		{"AllSkipped", runstate.Counts{Skipped: 4}, false, runstate.StatusSuccess},
		{"AllFailed", runstate.Counts{Failed: 2}, false, runstate.StatusFailed},
		{"FailedAndSkipped", runstate.Counts{Failed: 1, Skipped: 3}, false, runstate.StatusFailed},
		{"FailedAndCancelled", runstate.Counts{Failed: 1, Cancelled: 1}, false, runstate.StatusFailed},
		{"OnlyCancelledItems", runstate.Counts{Cancelled: 2}, false, runstate.StatusFailed},
		{"SomeFailed", runstate.Counts{Succeeded: 5, Failed: 1}, false, runstate.StatusPartialSuccess},
		{"SomeCancelled", runstate.Counts{Succeeded: 1, Cancelled: 1, Skipped: 1}, false, runstate.StatusPartialSuccess},
		{"StillPending", runstate.Counts{Succeeded: 1, Pending: 1}, false, runstate.StatusRunning},
		{"StillRunning", runstate.Counts{Failed: 1, Running: 1}, false, runstate.StatusRunning},
		{"CancelRequested", runstate.Counts{Succeeded: 9}, true, runstate.StatusCancelled},
		{"CancelRequestedWhileRunning", runstate.Counts{Running: 2}, true, runstate.StatusCancelled},
		{"CancelRequestedNoItems", runstate.Counts{}, true, runstate.StatusCancelled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := runstate.RunStatus(tc.c, tc.cancel, false); got != tc.want {
				t.Errorf("RunStatus(%+v, %t) = %s, want %s", tc.c, tc.cancel, got, tc.want)
			}
		})
	}
}

func TestCountsTotal(t *testing.T) {
	t.Parallel()
	c := runstate.Counts{Succeeded: 1, Failed: 2, Skipped: 3, Cancelled: 4, Pending: 5, Running: 6}
	if got := c.Total(); got != 21 {
		t.Errorf("Total() = %d, want 21", got)
	}
}

func TestDominantCategory(t *testing.T) {
	t.Parallel()
	type counts = map[etl.Category]int
	tests := []struct {
		name   string
		counts counts
		want   etl.Category
	}{
		{"Nil", nil, etl.CategoryNone},
		{"OnlyNone", counts{etl.CategoryNone: 5}, etl.CategoryNone},
		{"ZeroCounts", counts{etl.CategoryAPI: 0, etl.CategoryDB: -1}, etl.CategoryNone},
		{"MostFrequent", counts{etl.CategoryAPI: 3, etl.CategorySystem: 1, etl.CategoryData: 2}, etl.CategoryAPI},
		{"NoneIgnoredEvenIfLargest", counts{etl.CategoryNone: 10, etl.CategoryData: 1}, etl.CategoryData},
		{"TieSystemFirst", counts{etl.CategoryData: 2, etl.CategoryAPI: 2, etl.CategoryDB: 2, etl.CategorySystem: 2}, etl.CategorySystem},
		{"TieDBBeforeAPI", counts{etl.CategoryAPI: 2, etl.CategoryDB: 2, etl.CategoryData: 2}, etl.CategoryDB},
		{"TieAPIBeforeData", counts{etl.CategoryData: 1, etl.CategoryAPI: 1}, etl.CategoryAPI},
		{"UnknownRanksLast", counts{"QUOTA": 2, etl.CategoryData: 2}, etl.CategoryData},
		{"UnknownByName", counts{"ZED": 2, "ALPHA": 2}, "ALPHA"},
		{"UnknownWinsByCount", counts{"QUOTA": 3, etl.CategoryData: 2}, "QUOTA"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Map order is random: repeat so a tie broken by iteration order would show.
			for range 20 {
				if got := runstate.DominantCategory(tc.counts); got != tc.want {
					t.Fatalf("DominantCategory(%v) = %s, want %s", tc.counts, got, tc.want)
				}
			}
		})
	}
}

func TestRunStatusTimedOut(t *testing.T) {
	t.Parallel()
	done := runstate.Counts{Succeeded: 3}
	if got := runstate.RunStatus(done, false, true); got != runstate.StatusFailed {
		t.Errorf("a run past its deadline whose items all succeeded = %s, want FAILED", got)
	}
	if got := runstate.RunStatus(runstate.Counts{Succeeded: 1, Running: 1}, false, true); got != runstate.StatusRunning {
		t.Errorf("a timed-out run with a running item = %s, want RUNNING (not final yet)", got)
	}
	if got := runstate.RunStatus(done, true, true); got != runstate.StatusCancelled {
		t.Errorf("a cancelled run = %s, want CANCELLED", got)
	}
}

func TestLostAttempt(t *testing.T) {
	t.Parallel()
	first := runstate.LostAttempt(runstate.LostInput{Lost: 0})
	if !first.Retry || first.SoloNext || first.Message != runstate.MsgWorkerLost {
		t.Errorf("first loss = %+v, want a plain retry", first)
	}
	second := runstate.LostAttempt(runstate.LostInput{Lost: runstate.SuspectAfter - 1})
	if !second.Retry || !second.SoloNext {
		t.Errorf("loss %d = %+v, want a retry alone", runstate.SuspectAfter, second)
	}
	suspect := runstate.LostAttempt(runstate.LostInput{Lost: 2, Solo: true})
	if suspect.Retry || !strings.Contains(suspect.Message, "suspect") {
		t.Errorf("a loss while alone = %+v, want failed as the suspect", suspect)
	}
	limit := runstate.LostAttempt(runstate.LostInput{Lost: runstate.LostAttemptsLimit - 1})
	if limit.Retry {
		t.Errorf("loss %d = %+v, want failed at the limit", runstate.LostAttemptsLimit, limit)
	}
}
