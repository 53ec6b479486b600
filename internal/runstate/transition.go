package runstate

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// ErrInvalidTransition is returned (wrapped) by Machine.Check for a status change the
// machine does not allow.
var ErrInvalidTransition = errors.New("invalid status transition")

// Transition is one status change.
type Transition struct {
	From, To Status
}

func (t Transition) String() string { return string(t.From) + " → " + string(t.To) }

// Machine is the set of status changes allowed for one kind of record. Staying in the
// same status is not a transition; callers treat it as a no-op.
type Machine struct {
	name  string
	edges map[Transition]bool
}

func newMachine(name string, ts ...Transition) Machine {
	m := Machine{name: name, edges: make(map[Transition]bool, len(ts))}
	for _, t := range ts {
		m.edges[t] = true
	}
	return m
}

// Items is the life of an item (dw_etl_run_items):
//
//	PENDING → RUNNING               a worker claims it
//	RUNNING → PENDING               the attempt failed and will be retried
//	RUNNING → SUCCESS | FAILED | CANCELLED
//	PENDING → CANCELLED | SKIPPED   the run was cancelled, or the item has nothing to do
//	FAILED | CANCELLED → PENDING    an operator reruns it
var Items = newMachine("item",
	Transition{StatusPending, StatusRunning},
	Transition{StatusRunning, StatusPending},
	Transition{StatusRunning, StatusSuccess},
	Transition{StatusRunning, StatusFailed},
	Transition{StatusRunning, StatusCancelled},
	Transition{StatusPending, StatusCancelled},
	Transition{StatusPending, StatusSkipped},
	Transition{StatusFailed, StatusPending},
	Transition{StatusCancelled, StatusPending},
)

// Runs is the life of a run (dw_etl_runs):
//
//	PENDING → RUNNING | SKIPPED | CANCELLED
//	RUNNING → SUCCESS | PARTIAL_SUCCESS | FAILED | CANCELLED   (see RunStatus)
//	any terminal status → RUNNING                                an operator reruns it
var Runs = newMachine("run",
	Transition{StatusPending, StatusRunning},
	Transition{StatusPending, StatusSkipped},
	Transition{StatusPending, StatusCancelled},
	Transition{StatusRunning, StatusSuccess},
	Transition{StatusRunning, StatusPartialSuccess},
	Transition{StatusRunning, StatusFailed},
	Transition{StatusRunning, StatusCancelled},
	Transition{StatusSuccess, StatusRunning},
	Transition{StatusPartialSuccess, StatusRunning},
	Transition{StatusFailed, StatusRunning},
	Transition{StatusSkipped, StatusRunning},
	Transition{StatusCancelled, StatusRunning},
)

// CanTransition reports whether a record may go from one status to the other.
func (m Machine) CanTransition(from, to Status) bool {
	return m.edges[Transition{from, to}]
}

// Check is CanTransition as an error wrapping ErrInvalidTransition.
func (m Machine) Check(from, to Status) error {
	if m.CanTransition(from, to) {
		return nil
	}
	return fmt.Errorf("%s %s → %s: %w", m.name, from, to, ErrInvalidTransition)
}

// Transitions lists the allowed changes, sorted by From then To, for documentation
// (the state diagram in docs/) and tests.
func (m Machine) Transitions() []Transition {
	ts := make([]Transition, 0, len(m.edges))
	for t := range m.edges {
		ts = append(ts, t)
	}
	slices.SortFunc(ts, func(a, b Transition) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To))
	})
	return ts
}
