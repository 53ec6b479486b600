// Package kindtest runs a kind's handler for tests and benchmarks exactly as the executor's
// contract with kinds says, in one place, with the executor's own cursor rule
// (runstate.ItemCursor); the executor itself is exercised end to end by the worker's tests:
//
//   - the item's window starts at the stored cursor (nil on a first load) and carries the
//     stored cursor meta; for last_run it ends at the run's logical start;
//   - the handler writes into a transaction on the target, which is committed only when the
//     handler succeeds and the run is not a dry run, and rolled back otherwise;
//   - on that same success (and only then) the cursor moves to the greatest watermark
//     observed (modified_date; never backwards) or to the logical start (last_run), the meta
//     the handler set is stored with a moved cursor, and the handler's note is kept.
package kindtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
)

// Job is what the executor knows about a job and one of its items.
type Job struct {
	Kind     string
	Handler  etl.HandlerFunc
	Strategy etl.Strategy
	Config   json.RawMessage
	Params   json.RawMessage
	// Target is the job's target database.
	Target *pgxpool.Pool
}

// Cursor is what the executor stores for one (job, param hash).
type Cursor struct {
	Value *time.Time
	Meta  json.RawMessage
	// Note is the last successful item's note.
	Note string
}

// Options vary one run.
type Options struct {
	DryRun bool
	// LogicalStart is the run's logical start (last_run's window end); zero means now.
	LogicalStart time.Time
	// Attempt is the item's attempt number; 0 means 1.
	Attempt int
}

// Result is one attempt's outcome.
type Result struct {
	Metrics etl.Metrics
	Err     error
	// Moved reports whether the cursor moved.
	Moved bool
}

// Run runs one attempt of job's item against cur and applies the outcome to cur as the
// executor would. A failure of the harness itself (the target unreachable) is returned in
// Result.Err like the handler's.
func Run(ctx context.Context, job Job, cur *Cursor, opt Options) Result {
	tx, err := job.Target.Begin(ctx)
	if err != nil {
		return Result{Err: fmt.Errorf("kindtest: begin target transaction: %w", err)}
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	var end *time.Time
	if job.Strategy == etl.StrategyLastRun {
		e := opt.LogicalStart
		if e.IsZero() {
			e = time.Now().UTC()
		}
		end = &e
	}
	attempt := max(opt.Attempt, 1)
	it := etl.NewItem(etl.ItemSpec{
		JobID: "kindtest_" + job.Kind, Kind: job.Kind, ItemAttempt: attempt, MaxAttempts: max(attempt, 3),
		Params: job.Params, DryRun: opt.DryRun, Strategy: job.Strategy, Config: job.Config,
		WindowStart: cur.Value, WindowEnd: end, CursorMeta: cur.Meta, Logger: zerolog.Nop(), Target: tx,
	})
	err = job.Handler(ctx, it)
	m := it.Metrics()
	if err != nil || opt.DryRun {
		return Result{Metrics: m, Err: err}
	}
	if err := tx.Commit(ctx); err != nil {
		return Result{Metrics: m, Err: etl.DBError(fmt.Errorf("kindtest: commit target: %w", err))}
	}
	// The executor's own rule (policy item: the cursor moves with the item's success).
	out := runstate.ItemCursor(runstate.ItemCursorInput{Strategy: job.Strategy, Policy: runstate.CursorPolicyItem,
		Succeeded: true, Current: cur.Value, Watermark: m.Watermark, LogicalStart: end, RecordsRead: m.RecordsRead,
		HandlerNote: m.Note})
	res := Result{Metrics: m}
	if out.AdvanceNow && out.Candidate != nil {
		v := *out.Candidate
		cur.Value, res.Moved = &v, true
		if m.CursorMeta != nil {
			cur.Meta = m.CursorMeta
		}
	}
	cur.Note = m.Note
	return res
}

// ExactnessRounds is how many mutate → run rounds a randomized exactness test gives each source:
// ETL_EXACTNESS_ROUNDS, else 40 (10 with -short).
func ExactnessRounds(t testing.TB) int {
	t.Helper()
	if s := os.Getenv("ETL_EXACTNESS_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("ETL_EXACTNESS_ROUNDS=%q: want a positive number", s)
		}
		return n
	}
	if testing.Short() {
		return 10
	}
	return 40
}

// ExactnessSeed is ETL_EXACTNESS_SEED, else the clock; tests log it so a failure replays.
func ExactnessSeed(t testing.TB) uint64 {
	t.Helper()
	if s := os.Getenv("ETL_EXACTNESS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ETL_EXACTNESS_SEED=%q: want an unsigned number", s)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}
