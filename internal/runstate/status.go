package runstate

import (
	"fmt"
	"slices"
	"strings"
)

// Status is the status of a run, an attempt or an item (the status columns of
// dw_etl_runs, dw_etl_run_attempts and dw_etl_run_items).
type Status string

const (
	StatusPending        Status = "PENDING"
	StatusRunning        Status = "RUNNING"
	StatusSuccess        Status = "SUCCESS"
	StatusPartialSuccess Status = "PARTIAL_SUCCESS" // runs only
	StatusFailed         Status = "FAILED"
	StatusSkipped        Status = "SKIPPED"
	StatusCancelled      Status = "CANCELLED"
)

// Statuses lists every status, in the order the status columns' CHECK constraints list them.
var Statuses = []Status{StatusPending, StatusRunning, StatusSuccess, StatusPartialSuccess, StatusFailed, StatusSkipped, StatusCancelled}

// Strings returns the statuses as strings, the form of filters, flags and SQL array parameters.
func Strings(ss ...Status) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return out
}

// Terminal reports whether s is final unless an operator reruns: every status but
// PENDING and RUNNING.
func (s Status) Terminal() bool {
	switch s {
	case StatusSuccess, StatusPartialSuccess, StatusFailed, StatusSkipped, StatusCancelled:
		return true
	}
	return false
}

// ParseStatus returns the Status named by s, ignoring case and surrounding space.
func ParseStatus(s string) (Status, error) {
	if st := Status(strings.ToUpper(strings.TrimSpace(s))); slices.Contains(Statuses, st) {
		return st, nil
	}
	return "", fmt.Errorf("unknown status %q: want one of %s", s, strings.Join(Strings(Statuses...), ", "))
}

// Counts is how many of a run's items are in each status.
type Counts struct {
	Succeeded, Failed, Skipped, Cancelled, Pending, Running int
}

// Total is the number of items counted.
func (c Counts) Total() int {
	return c.Succeeded + c.Failed + c.Skipped + c.Cancelled + c.Pending + c.Running
}

// RunStatus is the status a run has given its items' counts, by the first rule that
// applies:
//
//  1. cancelRequested: CANCELLED, whatever the items did (an operator's cancel is
//     the outcome to report; items still running are being stopped);
//  2. any item PENDING or RUNNING: RUNNING, the run is not finished and must not be
//     finalised; callers finalise only when the result is Terminal;
//  3. timedOut (the run passed its run_timeout): FAILED, whatever its items did — a run
//     that did not finish in time did not do its job;
//  4. every item SUCCESS or SKIPPED, including a run with no items: SUCCESS;
//  5. no item SUCCESS (each FAILED, CANCELLED or SKIPPED): FAILED;
//  6. otherwise (some SUCCESS, some FAILED or CANCELLED): PARTIAL_SUCCESS.
//
// A run whose items were all SKIPPED therefore succeeds: nothing was left to do.
func RunStatus(c Counts, cancelRequested, timedOut bool) Status {
	switch {
	case cancelRequested:
		return StatusCancelled
	case c.Pending > 0 || c.Running > 0:
		return StatusRunning
	case timedOut:
		return StatusFailed
	case c.Failed == 0 && c.Cancelled == 0:
		return StatusSuccess
	case c.Succeeded == 0:
		return StatusFailed
	default:
		return StatusPartialSuccess
	}
}
