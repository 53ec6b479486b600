package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/failpoint"
	"github.com/etlexec/etlexec/internal/limits"
	"github.com/etlexec/etlexec/internal/logsink"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/task"
)

// infraRetryDelay is how soon a delivery that could not reach Postgres is tried again.
const infraRetryDelay = 2 * time.Second

// finaliseTail is how few open items a run may have left, as an attempt end counted them in its
// statement's snapshot, before the worker checks the counters again after the commit: ends
// committing at once do not see each other, so the check covers every batch that may be in
// flight beside this one.
const finaliseTail = 4 * finishBatchMax

// Messages of items the worker settles without running them.
const (
	msgOutOfAttempts = "out of attempts"
	msgRunTimeout    = "run timeout"
)

// errDuplicate marks deliveries that found nothing to do; asynq does not count them as failures.
var errDuplicate = errors.New("duplicate delivery")

// HandleItem is the asynq handler of item tasks.
func (w *Worker) HandleItem(ctx context.Context, t *asynq.Task) error {
	p, err := task.ParseItem(t)
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	taskID, _ := asynq.GetTaskID(ctx)
	log := w.log.With().Str("run_id", p.RunID.String()).Int32("item_no", p.ItemNo).Str("task_id", taskID).Logger()
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		log = log.With().Str("trace_id", sc.TraceID().String()).Logger()
	}
	if w.base.Err() != nil { // shutting down: leave the task to another worker
		return task.RetryIn(fmt.Errorf("%w: worker shutting down", errDuplicate), infraRetryDelay)
	}
	// The job's running slot comes before the claim and goes after the end is recorded, so
	// the attempts Postgres shows running never outnumber max_running_items; without a free
	// slot the delivery goes back to the queue, no attempt made.
	slot, err := w.runningSlot(ctx, p)
	if err != nil {
		if errors.Is(err, errAtLimit) {
			log.Debug().Err(err).Msg("job at max_running_items: delivery sent back to the queue")
		}
		return err
	}
	kept := false
	defer func() {
		if !kept {
			w.releaseSlot(slot)
		}
	}()
	w.gate.RLock()
	if w.base.Err() != nil {
		w.gate.RUnlock()
		return task.RetryIn(fmt.Errorf("%w: worker shutting down", errDuplicate), infraRetryDelay)
	}
	attemptID, err := uuid.NewV7()
	if err != nil {
		w.gate.RUnlock()
		return err
	}
	req := store.ClaimRequest{RunID: p.RunID, ItemNo: p.ItemNo, Generation: p.Generation, AttemptID: attemptID}
	claim, err := w.claims.do(ctx, req)
	if err == nil && claim.NeedsSolo {
		// A suspect of earlier worker deaths runs alone: wait until this worker runs nothing
		// else (new deliveries wait unclaimed meanwhile), then claim it.
		w.gate.RUnlock()
		w.gate.Lock()
		defer w.gate.Unlock()
		if w.base.Err() != nil {
			return task.RetryIn(fmt.Errorf("%w: worker shutting down", errDuplicate), infraRetryDelay)
		}
		var claims []store.Claim
		if claims, err = w.cfg.Store.ClaimItems(context.WithoutCancel(ctx), w.ref(), true, []store.ClaimRequest{req}); err == nil {
			claim = claims[0]
		}
	} else {
		defer w.gate.RUnlock()
	}
	if err != nil {
		log.Warn().Err(err).Msg("could not claim the item; delivery retried shortly")
		return task.RetryIn(err, infraRetryDelay)
	}
	if !claim.Claimed {
		return w.unclaimed(ctx, p, claim, log)
	}
	failpoint.Hit(failpoint.Claimed)
	log = log.With().Str("job_id", claim.JobID).Str("attempt_id", attemptID.String()).Int64("attempt_no", claim.AttemptNo).
		Int32("item_attempt", claim.ItemAttempt).Logger()
	if claim.Solo {
		log.Warn().Msg("running alone: the item was present at earlier worker deaths")
	}
	kept = true // the attempt releases it once its end is recorded
	return w.execute(ctx, p, attemptID, claim, slot, log)
}

// unclaimed answers a delivery whose item could not be claimed. Deliveries that find the item
// held or settled are duplicates and acknowledged: a live holder records the outcome, a dead
// one's item is recovered by the reconciler under a new task generation. Items that can never
// be claimed again are settled here, so their run can end.
func (w *Worker) unclaimed(ctx context.Context, p task.Item, c store.Claim, log zerolog.Logger) error {
	switch {
	case !c.Found:
		log.Warn().Msg("item not found; dropping task")
		return fmt.Errorf("item %d of run %s: %w: %w", p.ItemNo, p.RunID, store.ErrNotFound, asynq.SkipRetry)
	case c.Generation != p.Generation:
		log.Info().Int32("task_generation", p.Generation).Int32("item_generation", c.Generation).Msg("stale task of another generation; ignored")
		return nil
	case c.ItemStatus.Terminal():
		// Also what an operator sees after "Run" on an archived task in asynqmon: Postgres says
		// the item ended, so running it again is a rerun, which is explicit.
		log.Info().Str("status", string(c.ItemStatus)).Str("rerun_with", fmt.Sprintf("enqueuer rerun %s --param-hash %s", p.RunID, c.ParamHash)).
			Msg("duplicate delivery: item already settled; nothing to do")
		return nil
	case c.Held:
		log.Info().Msg("duplicate delivery: another attempt holds the item")
		return nil
	case c.CancelRequested:
		return w.settle(ctx, p, runstate.StatusCancelled, etl.CategoryNone, store.MsgRunCancelled, log)
	case c.PastDeadline:
		return w.settle(ctx, p, runstate.StatusFailed, etl.CategorySystem, msgRunTimeout, log)
	case c.Exhausted:
		return w.settle(ctx, p, runstate.StatusFailed, etl.CategorySystem, msgOutOfAttempts, log)
	}
	log.Info().Str("run_status", string(c.RunStatus)).Msg("item not claimable in its run's state; ignored")
	return nil
}

// settle ends an item that can never be claimed.
func (w *Worker) settle(ctx context.Context, p task.Item, status runstate.Status, cat etl.Category, msg string, log zerolog.Logger) error {
	done, err := w.cfg.Store.SettleItems(context.WithoutCancel(ctx), w.ref().Shard, p.RunID, []int32{p.ItemNo}, status, cat, msg)
	if err != nil {
		return task.RetryIn(err, infraRetryDelay)
	}
	if len(done) > 0 {
		log.Info().Str("status", string(status)).Str("reason", msg).Msg("item settled without an attempt")
		w.finaliseSoon(context.WithoutCancel(ctx), p.RunID, log)
	}
	return nil
}

// attempt is one claimed execution of an item.
type attempt struct {
	p     task.Item
	id    uuid.UUID
	claim store.Claim
	job   *job
	tgt   target
	log   zerolog.Logger
	start time.Time
	// try counts the runs of the handler within this attempt (see rerun).
	try int
	// slot is the job's running slot (nil without max_running_items), released once the
	// attempt's end is recorded.
	slot *limits.Slot
}

// takeHandler waits for one of the Concurrency handler places (a claimed-ahead delivery waits
// here while the others run; shutdown's end of grace lets it through to be cancelled) and
// returns its release, safe to call twice.
func (w *Worker) takeHandler() (release func()) {
	w.waiting.Add(1)
	defer w.waiting.Add(-1)
	select {
	case w.handlers <- struct{}{}:
	case <-w.base.Done():
		return func() {}
	}
	var once sync.Once
	return func() { once.Do(func() { <-w.handlers }) }
}

// execute runs one claimed attempt and records its end.
func (w *Worker) execute(ctx context.Context, p task.Item, attemptID uuid.UUID, claim store.Claim, slot *limits.Slot, log zerolog.Logger) error {
	release := w.takeHandler()
	defer release()
	a := &attempt{p: p, id: attemptID, claim: claim, log: log, start: time.Now(), slot: slot}
	// The attempt's context descends from the worker's base (cancelled at the end of the
	// shutdown grace) rather than asynq's, and carries the job timeout and the run deadline.
	actx, cancel := context.WithCancelCause(w.base)
	defer cancel(nil)
	// Keep the delivery's trace: the handler's and the target's queries are its children.
	actx = trace.ContextWithSpan(actx, trace.SpanFromContext(ctx))
	// asynq cancels its ctx only for CancelProcessing or its own deadline; pass those on.
	stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	defer stop()
	if w.runCancelledHere(p.RunID) {
		// Cancelled while this claimed-ahead delivery waited for a handler: never start it.
		return w.record(ctx, a, nil, etl.Metrics{}, ErrRunCancelled, ErrRunCancelled)
	}

	var err error
	if a.job, err = w.jobs.get(actx, claim.JobID, claim.JobUpdatedAt); err != nil {
		return w.record(ctx, a, nil, etl.Metrics{}, err, nil)
	}
	if w.cfg.OnSecrets != nil && len(a.job.secrets) > 0 {
		w.cfg.OnSecrets(a.job.secrets...)
	}
	actx, cancelTimeout := context.WithTimeoutCause(actx, a.job.Timeout, fmt.Errorf("item timeout %s", a.job.Timeout))
	defer cancelTimeout()
	if claim.Deadline != nil {
		var cancelDeadline context.CancelFunc
		actx, cancelDeadline = context.WithTimeoutCause(actx, max(*claim.Deadline, 0), errRunTimeout)
		defer cancelDeadline()
	}
	if a.tgt, err = w.targets.get(actx, a.job.TargetEnv); err != nil {
		return w.record(ctx, a, nil, etl.Metrics{}, err, nil)
	}
	if a.tgt.foreign && claim.ItemAttempt > 1 {
		// An earlier attempt may have committed the target and died before the ledger heard
		// of it: its marker says so, and the item must not run again.
		if m, found, err := store.ReadMarker(actx, a.tgt.pool, store.MarkerTableDefault, p.RunID, p.ItemNo); err != nil {
			return w.record(ctx, a, nil, etl.Metrics{}, etl.DBError(err), nil)
		} else if found {
			return w.recordFromMarker(ctx, a, m)
		}
	}
	limiter, err := w.sourceLimiter(actx, a.job)
	if err != nil {
		return w.record(ctx, a, nil, etl.Metrics{}, err, nil)
	}
	handler, ok := w.cfg.Registry.Lookup(a.job.Kind)
	if !ok {
		return w.record(ctx, a, nil, etl.Metrics{}, etl.Permanent(etl.SystemError(
			fmt.Errorf("no handler registered for kind %q in worker %s", a.job.Kind, w.cfg.Name))), nil)
	}
	log.Debug().Str(logsink.LedgerEventKey, "attempt_started").Msg("attempt started")
	for a.try = 1; ; a.try++ {
		lazy := newLazyTx(actx, a.tgt.pool)
		item := etl.NewItem(etl.ItemSpec{
			JobID: claim.JobID, Kind: a.job.Kind, RunID: p.RunID, AttemptID: attemptID, AttemptNo: claim.AttemptNo,
			ItemAttempt: int(claim.ItemAttempt), MaxAttempts: int(claim.AttemptLimit), ItemNo: int(p.ItemNo),
			Params: claim.Params, ParamHash: claim.ParamHash, DryRun: claim.DryRun, Strategy: a.job.Strategy,
			Config: a.job.Config, WindowStart: claim.CursorStart, WindowEnd: windowEnd(a.job.Strategy, claim),
			CursorMeta: claim.CursorMeta, Logger: log, Target: lazy, Limiter: limiter,
		})
		w.track(attemptID, p.RunID, item, cancel)
		runErr := w.runHandler(log.WithContext(actx), handler, item)
		if runErr == nil && actx.Err() != nil {
			runErr = context.Cause(actx)
		}
		if runErr != nil && w.rerun(actx, a, lazy, runErr) {
			continue
		}
		if runErr == nil {
			failpoint.Hit(failpoint.Handled)
		}
		err := w.record(ctx, a, lazy, item.Metrics(), runErr, context.Cause(actx))
		if errors.Is(err, errRerun) {
			if w.rerun(actx, a, nil, err) {
				continue
			}
			err = w.record(ctx, a, nil, item.Metrics(), etl.DBError(err), context.Cause(actx))
		}
		w.untrack(attemptID)
		release() // the next claimed delivery may start while this end is written
		return err
	}
}

// transientReruns bounds how often one attempt runs its handler again after transient database
// errors (a dropped connection, a full server, a deadlock) before the error counts as the
// attempt's failure; the waits between runs double up to transientRerunMaxDelay, so the
// attempt rides out about a minute of trouble (or less: its item timeout still applies).
const (
	transientReruns        = 40
	transientRerunMaxDelay = 2 * time.Second
)

// errRerun says a target commit failed transiently and did not land: run the handler again.
var errRerun = errors.New("the target commit did not land; run the handler again")

// rerun decides whether the attempt runs its handler again in place after err: a transient
// database error never costs an attempt (its target transaction is rolled back, nothing of it
// committed), up to transientReruns times and while the attempt's context lives.
func (w *Worker) rerun(ctx context.Context, a *attempt, lazy *lazyTx, err error) bool {
	if !errors.Is(err, errRerun) && !store.IsTransientPostgres(err) || a.try >= transientReruns || ctx.Err() != nil {
		return false
	}
	if lazy != nil {
		if tx := lazy.started(); tx != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}
	delay := min(100*time.Millisecond<<min(a.try-1, 5), transientRerunMaxDelay)
	a.log.Warn().Err(err).Int("try", a.try).Dur("delay", delay).Msg("transient database error: running the handler again within the attempt")
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// windowEnd is the item's window end: the run's logical start for last_run.
func windowEnd(s etl.Strategy, c store.Claim) *time.Time {
	if s == etl.StrategyLastRun {
		return c.LogicalStart
	}
	return nil
}

// runHandler calls h on a runner goroutine, turning a panic into a SYSTEM error with its stack,
// and abandons a handler that ignores its cancelled context for longer than abandonGrace.
func (w *Worker) runHandler(ctx context.Context, h etl.HandlerFunc, it *etl.Item) error {
	done := make(chan error, 1)
	w.runners.run(func() {
		defer func() {
			if v := recover(); v != nil {
				done <- etl.Recover(v)
			}
		}()
		done <- h(ctx, it)
	})
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	t := time.NewTimer(abandonGrace)
	defer t.Stop()
	select {
	case err := <-done:
		if err == nil {
			// Returned success after its deadline: the work may be partial, so do not keep it.
			return etl.SystemError(fmt.Errorf("handler returned after its context ended: %w", context.Cause(ctx)))
		}
		return err
	case <-t.C:
		return etl.SystemError(fmt.Errorf("handler ignored cancellation (%v) for %s; attempt abandoned", context.Cause(ctx), abandonGrace))
	}
}

// outcome is what an attempt's end says to the ledger and to asynq.
type outcome struct {
	end store.AttemptEnd
	// asynq is what HandleItem returns: nil, a retry with the recorded delay, or SkipRetry.
	asynq error
	// commit is true when the target transaction is to be committed (success, not dry run).
	commit bool
	// untouched is true when the handler never opened its target transaction.
	untouched bool
}

// decide turns a handler's result into the attempt's end, using runstate's rules for retries,
// backoff and cursors.
func (w *Worker) decide(a *attempt, m etl.Metrics, runErr, cause error) outcome {
	c := a.claim
	end := store.AttemptEnd{
		RunID: a.p.RunID, ItemNo: a.p.ItemNo, AttemptID: a.id, ErrorCategory: etl.CategoryNone,
		RecordsRead: m.RecordsRead, RecordsWritten: m.RecordsWritten, Pages: m.Pages,
	}
	var o outcome
	cursorIn := runstate.ItemCursorInput{DryRun: c.DryRun, Current: c.CursorStart, Watermark: m.Watermark,
		LogicalStart: c.LogicalStart, RecordsRead: m.RecordsRead, HandlerNote: m.Note}
	if a.job != nil {
		cursorIn.Strategy, cursorIn.Policy = a.job.Strategy, a.job.CursorPolicy
	}
	switch {
	case runErr == nil:
		end.AttemptStatus, end.ItemStatus, end.Terminal = runstate.StatusSuccess, runstate.StatusSuccess, true
		o.commit = !c.DryRun
		cursorIn.Succeeded = true
		cur := runstate.ItemCursor(cursorIn)
		end.CursorNote = &cur.Note
		end.CursorEnd, end.AdvanceCursor = cur.Candidate, cur.AdvanceNow
		if cur.Candidate != nil {
			end.CursorEndMeta = m.CursorMeta
		}
	case errors.Is(cause, ErrRunCancelled) || cause != nil && w.runCancelled(a.p.RunID):
		end.AttemptStatus, end.ItemStatus, end.Terminal = runstate.StatusCancelled, runstate.StatusCancelled, true
		msg := store.MsgRunCancelled
		end.ErrorMessage = &msg
		o.asynq = fmt.Errorf("%w: %w", runErr, asynq.SkipRetry)
	case errors.Is(cause, errRunTimeout):
		end.AttemptStatus, end.ItemStatus, end.Terminal = runstate.StatusFailed, runstate.StatusFailed, true
		end.ErrorCategory = etl.CategorySystem
		msg := fmt.Sprintf("%s: %s", msgRunTimeout, store.Text(runErr.Error(), 500))
		end.ErrorMessage = &msg
		o.asynq = fmt.Errorf("%w: %w", runErr, asynq.SkipRetry)
	default:
		if errors.Is(cause, errShutdown) || errors.Is(cause, errDeclaredDead) {
			runErr = etl.SystemError(fmt.Errorf("%w: %w", context.Cause(w.base), runErr))
		}
		// Attempts lost with their workers do not count against the item's limit.
		counted := int(c.ItemAttempt - c.LostAttempts)
		d := runstate.Decide(runErr, counted, int(c.AttemptLimit))
		end.AttemptStatus, end.ErrorCategory = runstate.StatusFailed, d.Category
		msg := runErr.Error()
		end.ErrorMessage = &msg
		end.ErrorDetail = errorDetail(runErr, d)
		if d.Retry {
			b := w.cfg.Retry.Backoff(counted, runErr, rand.Float64)
			end.Backoff = &b
			end.ItemStatus = runstate.StatusPending
			o.asynq = task.RetryIn(runErr, b)
		} else {
			end.ItemStatus, end.Terminal = runstate.StatusFailed, true
			o.asynq = fmt.Errorf("%w: %w", runErr, asynq.SkipRetry)
		}
	}
	if !o.commit && !c.DryRun {
		// Writes of an attempt whose target transaction rolls back never happened.
		end.RecordsWritten, end.RecordsDiscarded = 0, m.RecordsWritten
	}
	o.end = end
	return o
}

// record ends the attempt: it commits or rolls back the target transaction and writes the
// attempt's end so that each outcome is one commit. On etlexec's own database the end is
// written inside the target transaction; on another database the target transaction carries
// the item's commit marker and the end follows through the batch; an untouched target needs no
// transaction at all.
func (w *Worker) record(ctx context.Context, a *attempt, lazy *lazyTx, m etl.Metrics, runErr, cause error) error {
	o := w.decide(a, m, runErr, cause)
	rctx := context.WithoutCancel(ctx)
	var tx pgx.Tx
	if lazy != nil {
		tx = lazy.started()
	}
	switch {
	case tx != nil && o.commit && !a.tgt.foreign:
		fin, err := w.commitWithTarget(rctx, a, tx, o.end)
		if errors.Is(err, errTargetCommit) {
			if store.IsTransient(err) {
				// The end was inside the transaction: the claim is still ours iff it did not land.
				if held, herr := w.cfg.Store.HoldsClaim(rctx, a.p.RunID, a.p.ItemNo, a.id); herr == nil && held {
					return fmt.Errorf("%w: %w", errRerun, err)
				}
			}
			return w.record(ctx, a, nil, m, etl.DBError(err), cause)
		}
		return w.ended(rctx, a, o, m, runErr, fin, err)
	case tx != nil && o.commit:
		err := store.WriteMarker(rctx, tx, store.MarkerTableDefault, store.Marker{RunID: a.p.RunID, ItemNo: a.p.ItemNo,
			Generation: a.p.Generation, AttemptID: a.id, RecordsWritten: o.end.RecordsWritten, End: &o.end})
		if err == nil {
			err = tx.Commit(rctx)
		}
		if err != nil {
			_ = tx.Rollback(rctx)
			if store.IsTransient(err) {
				// Unknown whether the target committed: its marker says.
				mk, found, merr := store.ReadMarker(rctx, a.tgt.pool, store.MarkerTableDefault, a.p.RunID, a.p.ItemNo)
				switch {
				case merr == nil && found:
					return w.recordFromMarker(ctx, a, mk)
				case merr == nil:
					return fmt.Errorf("%w: %w", errRerun, err)
				}
			}
			// Still unknown: fail the attempt; the next one reads the marker.
			return w.record(ctx, a, nil, m, etl.DBError(fmt.Errorf("%w: %w", errTargetCommit, err)), cause)
		}
		failpoint.Hit(failpoint.TargetCommitted)
	case tx != nil:
		// A failed rollback means the connection died (e.g. cancelled mid-query); the
		// transaction is gone either way, so the attempt's record must still land.
		_ = tx.Rollback(rctx)
	default:
		o.untouched = true
	}
	return w.end(rctx, a, o, m, runErr)
}

// end writes the attempt's end through the batch. An end after which asynq is done with the
// task (success, or a failure that is not retried) is written in the background, so the
// handler's slot serves the next task at once and ends batch up however long Postgres takes;
// if this process dies first, the item's claim is lost with it and the reconciler runs it
// again (foreign targets find their commit marker). An end followed by a retry is waited for:
// asynq's retry must find the item released.
func (w *Worker) end(ctx context.Context, a *attempt, o outcome, m etl.Metrics, runErr error) error {
	if o.end.Terminal {
		w.finishes.submit(o.end, func(fin store.Finish, err error) { _ = w.ended(ctx, a, o, m, runErr, fin, err) })
		return o.asynq
	}
	fin, err := w.finishes.do(ctx, o.end)
	return w.ended(ctx, a, o, m, runErr, fin, err)
}

// ended handles a recorded (or refused) attempt end and returns what HandleItem answers asynq.
func (w *Worker) ended(ctx context.Context, a *attempt, o outcome, m etl.Metrics, runErr error, fin store.Finish, err error) error {
	if err == nil {
		err = fin.Err
	}
	if err != nil {
		// Postgres refused it or stayed unreachable through every retry: the item stays held by
		// this live worker, which keeps trying in the background (the delivery that comes back
		// finds it held); if the worker dies first, the reconciler closes the attempt as lost.
		a.log.Error().Err(err).Msg("could not record the attempt's end; retrying in the background")
		w.deferEnd(a, o, m, runErr) // the item still runs as far as Postgres knows: keep its slot
		return task.RetryIn(err, infraRetryDelay)
	}
	w.releaseSlot(a.slot)
	if fin.Lost() {
		a.log.Warn().Msg("attempt lost its claim (its worker was declared dead, or the run timed out); its result is discarded")
		return nil
	}
	if fin.Status != o.end.AttemptStatus {
		// An earlier end of this attempt landed after all (a commit whose answer was lost).
		a.log.Info().Str("status", string(fin.Status)).Msg("the attempt's earlier end had been recorded")
		return nil
	}
	if o.commit && o.untouched {
		failpoint.Hit(failpoint.TargetCommitted) // nothing to commit but the end itself
	}
	failpoint.Hit(failpoint.Recorded)
	w.logEnd(a, o.end, m, runErr)
	if o.end.Terminal && fin.RunOpen <= finaliseTail {
		w.finaliseSoon(ctx, a.p.RunID, a.log)
	}
	return o.asynq
}

// errTargetCommit marks a target database that refused the commit of a successful attempt.
var errTargetCommit = errors.New("commit target")

// commitWithTarget writes the end inside the target transaction on etlexec's own database and
// commits both at once. A lost claim rolls the target back.
func (w *Worker) commitWithTarget(ctx context.Context, a *attempt, tx pgx.Tx, end store.AttemptEnd) (store.Finish, error) {
	res, err := w.cfg.Store.WithTx(tx).FinishAttempts(ctx, w.ref(), []store.AttemptEnd{end})
	if err != nil {
		_ = tx.Rollback(ctx)
		return store.Finish{}, fmt.Errorf("%w: %w", errTargetCommit, err)
	}
	if res[0].Lost() {
		_ = tx.Rollback(ctx)
		return res[0], nil
	}
	if err := tx.Commit(ctx); err != nil {
		// Unknown outcome: recording a failure tells, since it is refused (already recorded)
		// if the commit did land.
		return store.Finish{}, fmt.Errorf("%w: %w", errTargetCommit, err)
	}
	failpoint.Hit(failpoint.TargetCommitted)
	return res[0], nil
}

// recordFromMarker records an attempt that found the item already committed by an earlier one:
// with the outcome that attempt was about to record (metrics, cursor candidate), which the
// marker keeps.
func (w *Worker) recordFromMarker(ctx context.Context, a *attempt, m store.Marker) error {
	note := fmt.Sprintf("the target already holds this item's commit, made by attempt %s at %s; the handler was not run again",
		m.AttemptID, m.CommittedAt.UTC().Format(time.RFC3339))
	a.log.Warn().Str("committed_by_attempt", m.AttemptID.String()).Msg("item already committed in the target: recorded without running it")
	end := store.AttemptEnd{RecordsWritten: m.RecordsWritten}
	if m.End != nil {
		end = *m.End
		if end.CursorNote != nil && *end.CursorNote != "" {
			note = *end.CursorNote + "; " + note
		}
	}
	end.RunID, end.ItemNo, end.AttemptID = a.p.RunID, a.p.ItemNo, a.id
	end.AttemptStatus, end.ItemStatus, end.Terminal, end.ErrorCategory = runstate.StatusSuccess, runstate.StatusSuccess, true, etl.CategoryNone
	end.ErrorMessage, end.ErrorDetail, end.Backoff, end.RecordsDiscarded, end.CursorNote = nil, nil, nil, 0, &note
	o := outcome{end: end}
	return w.end(context.WithoutCancel(ctx), a, o, etl.Metrics{RecordsRead: end.RecordsRead, RecordsWritten: end.RecordsWritten, Pages: end.Pages}, nil)
}

func (w *Worker) logEnd(a *attempt, end store.AttemptEnd, m etl.Metrics, runErr error) {
	// A success goes to stdout only (the ledger has it); a failure is also kept in the run's
	// logs, where operators look for what went wrong.
	ev := a.log.Info().Str(logsink.LedgerEventKey, "attempt_ended")
	if runErr != nil {
		ev = a.log.Warn().Str("error_category", string(end.ErrorCategory)).Str("error", store.Text(runErr.Error(), 500))
	}
	ev.Str("status", string(end.AttemptStatus)).Int64("records_read", m.RecordsRead).Int64("records_written", end.RecordsWritten).
		Int64("page_count", m.Pages).Bool("dry_run", a.claim.DryRun).Msg("attempt ended")
	jobID := a.claim.JobID
	w.cfg.Metrics.ObserveAttempt(jobID, string(end.AttemptStatus), string(end.ErrorCategory), time.Since(a.start), m.RecordsRead, end.RecordsWritten)
}

// finaliseSoon finalises the run in the background once its counters say every item settled,
// one finalisation per run at a time in this process: ends that arrive meanwhile ask for one
// more check after it, so the last end is never missed and a run's tail does not queue dozens
// of sessions on its row lock.
func (w *Worker) finaliseSoon(ctx context.Context, runID uuid.UUID, log zerolog.Logger) {
	w.mu.Lock()
	if _, busy := w.finalisingRuns[runID]; busy {
		w.finalisingRuns[runID] = true // check again when the current one is done
		w.mu.Unlock()
		return
	}
	w.finalisingRuns[runID] = false
	w.mu.Unlock()
	w.finalising.Go(func() {
		for {
			w.maybeFinalise(ctx, runID, log)
			w.mu.Lock()
			again := w.finalisingRuns[runID]
			if !again {
				delete(w.finalisingRuns, runID)
				w.mu.Unlock()
				return
			}
			w.finalisingRuns[runID] = false
			w.mu.Unlock()
		}
	})
}

// maybeFinalise finalises the run if its counters, read after this worker's ends committed,
// say every item settled.
func (w *Worker) maybeFinalise(ctx context.Context, runID uuid.UUID, log zerolog.Logger) {
	open, ok, err := w.cfg.Store.RunOpenItems(ctx, runID)
	if err != nil {
		log.Error().Err(err).Msg("could not check whether the run is complete; the reconciler will finalise it")
		return
	}
	if !ok || open > 0 {
		return
	}
	began := time.Now()
	res, err := w.cfg.Store.FinaliseRun(ctx, runID)
	if err != nil {
		log.Error().Err(err).Msg("finalise failed; the reconciler will retry")
		return
	}
	if res.Done {
		w.cfg.Metrics.ObserveFinalise(time.Since(began))
		log.Info().Str("status", string(res.Status)).Int64("items_succeeded", res.Counters.Succeeded).
			Int64("items_failed", res.Counters.Failed).Int64("records_read", res.Counters.RecordsRead).
			Int64("records_written", res.Counters.RecordsWritten).Msg("run finalised")
	}
}

// runCancelled reports whether an operator asked to cancel the run; an attempt's context may
// have been cancelled through asynq's channel, which says nothing about why.
func (w *Worker) runCancelled(runID uuid.UUID) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	run, err := w.cfg.Store.GetRun(ctx, runID)
	return err == nil && run.CancelRequestedAt != nil
}

func errorDetail(err error, d runstate.Decision) json.RawMessage {
	detail := map[string]any{"retry": d.Retry, "reason": d.Reason}
	var pe *etl.PanicError
	if errors.As(err, &pe) {
		detail["panic"] = fmt.Sprint(pe.Value)
		detail["stack"] = string(pe.Stack)
	}
	var he *etl.HTTPError
	if errors.As(err, &he) {
		detail["http_status"] = he.StatusCode
	}
	if ra, ok := etl.RetryAfterOf(err); ok {
		detail["retry_after_ms"] = ra.Milliseconds()
	}
	b, _ := json.Marshal(detail)
	return b
}
