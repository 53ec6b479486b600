package runstate

import "fmt"

// Limits of the lost-attempt rule.
const (
	// LostAttemptsLimit is how many of an item's attempts may be lost with their workers
	// before the item fails: a budget of its own, so that deaths caused by another item
	// sharing the worker never use up the job's max_attempts.
	LostAttemptsLimit = 5
	// SuspectAfter is how many worker deaths an item must have been present at before its
	// next attempt runs alone on its worker.
	SuspectAfter = 2
)

// MsgWorkerLost is the error message of an attempt closed because its worker died.
const MsgWorkerLost = "worker lost"

// LostInput is what the lost-attempt rule knows about an item whose attempt died with its
// worker.
type LostInput struct {
	// Lost counts the item's attempts lost before this one.
	Lost int
	// Solo is true when the lost attempt ran alone on its worker.
	Solo bool
}

// LostOutcome is what happens to the item.
type LostOutcome struct {
	// Retry is true when the item goes back to PENDING for another attempt.
	Retry bool
	// SoloNext is true when that attempt must run alone on its worker.
	SoloNext bool
	// Message is recorded on the attempt and the item.
	Message string
}

// LostAttempt decides the fate of an item whose attempt was lost with its worker, by the
// first rule that applies:
//
//  1. the attempt ran alone: the item is the suspect — nothing else ran beside it when the
//     worker died — and fails;
//  2. this loss reaches LostAttemptsLimit: the item fails;
//  3. the item has now been present at SuspectAfter or more deaths: it is retried alone;
//  4. otherwise it is retried as usual.
//
// Lost attempts never count against the job's max_attempts.
func LostAttempt(in LostInput) LostOutcome {
	lost := in.Lost + 1
	switch {
	case in.Solo:
		return LostOutcome{Message: fmt.Sprintf(
			"suspect: its worker died while running it alone, after %d worker deaths it was present at", lost)}
	case lost >= LostAttemptsLimit:
		return LostOutcome{Message: fmt.Sprintf("worker lost %d times", lost)}
	case lost >= SuspectAfter:
		return LostOutcome{Retry: true, SoloNext: true, Message: MsgWorkerLost}
	}
	return LostOutcome{Retry: true, Message: MsgWorkerLost}
}
