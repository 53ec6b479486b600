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

// Machine is the set of statuses a kind of record is created in and the status changes
// allowed for it afterwards. Staying in the same status is not a transition; callers treat
// it as a no-op.
type Machine struct {
	name   string
	starts map[Status]bool
	edges  map[Transition]bool
}

func newMachine(name string, starts []Status, ts ...Transition) Machine {
	m := Machine{name: name, starts: make(map[Status]bool, len(starts)), edges: make(map[Transition]bool, len(ts))}
	for _, s := range starts {
		m.starts[s] = true
	}
	for _, t := range ts {
		m.edges[t] = true
	}
	return m
}

// Items is the life of an item (dw_etl_run_items). RUNNING is the claim: the status column
// stays PENDING while an attempt holds the item (current_attempt_id set), and every reader
// shows such an item RUNNING.
//
//	created PENDING                 with its run, in one COPY
//	PENDING → RUNNING               a worker claims it
//	RUNNING → PENDING               the attempt failed and will be retried, or its worker died
//	RUNNING → SUCCESS | FAILED | CANCELLED
//	                                its attempt ended (by its worker, or by the reconciler: the
//	                                worker died too often, or the run timed out)
//	PENDING → FAILED | CANCELLED | SKIPPED
//	                                settled without an attempt: out of attempts or past the run's
//	                                deadline, the run was cancelled, or nothing to do
//	FAILED | CANCELLED | SKIPPED → PENDING
//	                                an operator reruns it; SUCCESS is never rerun (a second
//	                                success in one run would load its data twice)
var Items = newMachine("item", []Status{StatusPending},
	Transition{StatusPending, StatusRunning},
	Transition{StatusRunning, StatusPending},
	Transition{StatusRunning, StatusSuccess},
	Transition{StatusRunning, StatusFailed},
	Transition{StatusRunning, StatusCancelled},
	Transition{StatusPending, StatusFailed},
	Transition{StatusPending, StatusCancelled},
	Transition{StatusPending, StatusSkipped},
	Transition{StatusFailed, StatusPending},
	Transition{StatusCancelled, StatusPending},
	Transition{StatusSkipped, StatusPending},
)

// Runs is the life of a run (dw_etl_runs):
//
//	created PENDING | SKIPPED       SKIPPED by the overlap or catch-up policy, with no items
//	PENDING → RUNNING               every task was handed to Redis
//	PENDING | RUNNING → SUCCESS | PARTIAL_SUCCESS | FAILED | CANCELLED
//	                                finalised (see RunStatus); a run whose items all settled
//	                                before its fan-out was recorded — cancelled or timed out
//	                                while its enqueuer was away, or simply fast — ends from PENDING
//	SUCCESS | PARTIAL_SUCCESS | FAILED | CANCELLED → RUNNING
//	                                an operator reruns some of its items (a SUCCESS run only has
//	                                SKIPPED ones to rerun); a SKIPPED run has none and is never
//	                                rerun
var Runs = newMachine("run", []Status{StatusPending, StatusSkipped},
	Transition{StatusPending, StatusRunning},
	Transition{StatusPending, StatusSuccess},
	Transition{StatusPending, StatusPartialSuccess},
	Transition{StatusPending, StatusFailed},
	Transition{StatusPending, StatusCancelled},
	Transition{StatusRunning, StatusSuccess},
	Transition{StatusRunning, StatusPartialSuccess},
	Transition{StatusRunning, StatusFailed},
	Transition{StatusRunning, StatusCancelled},
	Transition{StatusSuccess, StatusRunning},
	Transition{StatusPartialSuccess, StatusRunning},
	Transition{StatusFailed, StatusRunning},
	Transition{StatusCancelled, StatusRunning},
)

// CanStart reports whether a record may be created in status s.
func (m Machine) CanStart(s Status) bool { return m.starts[s] }

// Starts lists the statuses a record may be created in, sorted.
func (m Machine) Starts() []Status {
	ss := make([]Status, 0, len(m.starts))
	for s := range m.starts {
		ss = append(ss, s)
	}
	slices.Sort(ss)
	return ss
}

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
