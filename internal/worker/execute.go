package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/aggregate"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/task"
)

// infraRetryDelay is how soon a delivery that could not reach Postgres is tried again.
const infraRetryDelay = 2 * time.Second

// errTargetCommit marks a target database that refused the commit of a successful attempt.
var errTargetCommit = errors.New("commit target")

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

	ic, err := w.cfg.Store.GetItemContext(ctx, p.RunID, p.ItemNo)
	if errors.Is(err, store.ErrNotFound) {
		log.Warn().Msg("item not found; dropping task")
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	if err != nil {
		// Postgres unreachable: try the delivery again soon, not after asynq's minute-long
		// default delay.
		log.Warn().Err(err).Msg("could not load item; delivery retried shortly")
		return task.RetryIn(err, infraRetryDelay)
	}
	log = log.With().Str("job_id", ic.JobID).Logger()
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		log = log.With().Str("trace_id", sc.TraceID().String()).Logger()
	}

	if p.Generation < ic.Generation {
		log.Info().Int32("task_generation", p.Generation).Int32("item_generation", ic.Generation).Msg("stale task of an earlier generation; ignored")
		return nil
	}
	if runstate.Status(ic.Status).Terminal() {
		// Also what an operator sees after "Run" on an archived task in asynqmon: Postgres says
		// the item ended, so running it again is a rerun, which is explicit.
		log.Info().Str("status", ic.Status).Str("rerun_with", fmt.Sprintf("enqueuer rerun %s --param-hash %s", ic.RunID, ic.ParamHash)).
			Msg("duplicate delivery: item already terminal; nothing to do")
		return nil
	}
	if ic.CancelRequestedAt != nil && ic.Status == string(runstate.StatusPending) {
		return w.cancelPending(ctx, ic, log)
	}

	attemptID, err := uuid.NewV7()
	if err != nil {
		return err
	}
	claim, err := w.cfg.Store.ClaimItem(ctx, store.ClaimRequest{
		RunID: ic.RunID, ItemNo: ic.ItemNo, AttemptID: attemptID, MaxAttempts: ic.MaxAttempts,
		Lease: w.cfg.Lease, WorkerID: w.cfg.WorkerID,
	})
	if errors.Is(err, store.ErrNotClaimable) {
		return w.notClaimable(ctx, ic, log)
	}
	if err != nil {
		log.Warn().Err(err).Msg("could not claim item; delivery retried shortly")
		return task.RetryIn(err, infraRetryDelay)
	}
	log = log.With().Str("attempt_id", attemptID.String()).Int64("attempt_no", claim.AttemptNo).
		Int32("item_attempt", claim.ItemAttempt).Logger()
	if claim.LostAttempts > 0 {
		log.Warn().Msg("took over an item whose worker stopped heartbeating")
	}
	return w.execute(ctx, ic, attemptID, claim, log)
}

// execute runs one claimed attempt and records its end.
func (w *Worker) execute(ctx context.Context, ic store.ItemContext, attemptID uuid.UUID, claim store.Claim, log zerolog.Logger) error {
	// The attempt's context descends from the worker's base (cancelled at the end of the
	// shutdown grace) rather than asynq's, and carries the job timeout.
	actx, cancel := context.WithCancelCause(w.base)
	defer cancel(nil)
	// Keep the delivery's trace: the handler's and the target's queries are its children.
	actx = trace.ContextWithSpan(actx, trace.SpanFromContext(ctx))
	// asynq cancels its ctx only for CancelProcessing or its own deadline; pass those on.
	stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	defer stop()
	timeout := time.Duration(ic.TimeoutMs) * time.Millisecond
	actx, cancelTimeout := context.WithTimeout(actx, timeout)
	defer cancelTimeout()
	w.track(attemptID, ic.RunID, cancel)
	defer w.untrack(attemptID)
	start := time.Now()

	w.shareSecrets(ic.Config)
	var cfg targetConfig
	_ = json.Unmarshal(ic.Config, &cfg)
	var runErr error
	var metrics etl.Metrics
	var target *lazyTx
	pool, err := w.targets.pool(actx, cfg.TargetURLEnv)
	if err == nil {
		target = newLazyTx(actx, pool)
	}
	if err != nil {
		runErr = err
	} else {
		handler, ok := w.cfg.Registry.Lookup(ic.Kind)
		if !ok {
			runErr = etl.Permanent(etl.SystemError(fmt.Errorf("no handler registered for kind %q in worker %s", ic.Kind, w.cfg.WorkerID)))
		} else {
			item := etl.NewItem(etl.ItemSpec{
				JobID: ic.JobID, Kind: ic.Kind, RunID: ic.RunID, AttemptID: attemptID, AttemptNo: claim.AttemptNo,
				ItemAttempt: int(claim.ItemAttempt), MaxAttempts: int(ic.AttemptLimit), ItemNo: int(ic.ItemNo),
				Params: ic.Params, ParamHash: ic.ParamHash, DryRun: ic.DryRun, Strategy: etl.Strategy(ic.Strategy),
				Config: ic.Config, WindowStart: ic.CursorStart, WindowEnd: windowEnd(ic), Logger: log, Target: target,
			})
			log.Info().Msg("attempt started")
			runErr = runHandler(log.WithContext(actx), handler, item)
			metrics = item.Metrics()
		}
	}
	if runErr == nil && actx.Err() != nil {
		runErr = context.Cause(actx)
	}
	return w.record(ctx, ic, attemptID, claim, target, metrics, runErr, context.Cause(actx), start, log)
}

type targetConfig struct {
	// TargetURLEnv names the environment variable holding the target database URL; empty
	// means etlexec's own database.
	TargetURLEnv string `json:"target_url_env"`
}

func windowEnd(ic store.ItemContext) *time.Time {
	if ic.Strategy == string(etl.StrategyLastRun) {
		return ic.LogicalStart
	}
	return nil
}

// runHandler calls h, turning a panic into a SYSTEM error with its stack, and abandons a handler
// that ignores its cancelled context for longer than abandonGrace.
func runHandler(ctx context.Context, h etl.HandlerFunc, it *etl.Item) error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				done <- etl.Recover(v)
			}
		}()
		done <- h(ctx, it)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	select {
	case err := <-done:
		if err == nil {
			// Returned success after its deadline: the work may be partial, so do not keep it.
			return etl.SystemError(fmt.Errorf("handler returned after its context ended: %w", context.Cause(ctx)))
		}
		return err
	case <-time.After(abandonGrace):
		return etl.SystemError(fmt.Errorf("handler ignored cancellation (%v) for %s; attempt abandoned", context.Cause(ctx), abandonGrace))
	}
}

// record ends the attempt in Postgres and tells asynq what follows.
func (w *Worker) record(ctx context.Context, ic store.ItemContext, attemptID uuid.UUID, claim store.Claim,
	target *lazyTx, m etl.Metrics, runErr, cause error, start time.Time, log zerolog.Logger) error {
	end := store.AttemptEnd{
		RunID: ic.RunID, ItemNo: ic.ItemNo, ItemCount: ic.ItemCount, AttemptID: attemptID,
		RecordsRead: m.RecordsRead, RecordsWritten: m.RecordsWritten, Pages: m.Pages,
		ErrorCategory: string(etl.CategoryNone),
	}
	var asynqErr error
	switch {
	case runErr == nil:
		end.AttemptStatus, end.ItemStatus, end.Terminal = "SUCCESS", "SUCCESS", true
		if ic.Strategy == string(etl.StrategyModifiedDate) {
			end.CursorEnd = m.Watermark
		}
		w.itemCursor(ic, &end)
	case errors.Is(cause, ErrRunCancelled) || (cause != nil && w.runCancelled(ctx, ic.RunID)):
		end.AttemptStatus, end.ItemStatus, end.Terminal = "CANCELLED", "CANCELLED", true
		end.ErrorCategory = string(etl.CategoryNone)
		msg := "run cancelled"
		end.ErrorMessage = &msg
	default:
		if errors.Is(cause, errShutdown) || (errors.Is(cause, context.Canceled) && w.base.Err() != nil) {
			runErr = etl.SystemError(fmt.Errorf("worker shut down during the attempt: %w", runErr))
		}
		d := runstate.Decide(runErr, int(claim.ItemAttempt), int(ic.AttemptLimit))
		end.AttemptStatus = "FAILED"
		end.ErrorCategory = string(d.Category)
		msg := truncate(runErr.Error(), 4000)
		end.ErrorMessage = &msg
		end.ErrorDetail = errorDetail(runErr, d)
		if d.Retry {
			b := w.cfg.Retry.Backoff(int(claim.ItemAttempt), runErr, rand.Float64)
			end.Backoff = &b
			end.ItemStatus = "PENDING"
			asynqErr = task.RetryIn(runErr, b)
		} else {
			end.ItemStatus, end.Terminal = "FAILED", true
			asynqErr = fmt.Errorf("%w: %w", runErr, asynq.SkipRetry)
		}
	}

	// Bookkeeping commits only if this attempt still holds the item; a target that was written
	// commits inside that window, so a takeover cannot interleave between them. An untouched
	// target needs no transaction at all: the end is one statement.
	rctx := context.WithoutCancel(ctx)
	var tx pgx.Tx
	if target != nil {
		tx = target.started()
	}
	var shardComplete bool
	var err error
	switch {
	case tx == nil && end.Cursor == nil:
		shardComplete, err = w.finish(rctx, end)
	case tx == nil:
		shardComplete, err = w.cfg.Store.FinishAttempt(rctx, end)
	default:
		err = w.cfg.Store.InTx(rctx, func(btx *store.Tx) error {
			var err error
			if shardComplete, err = btx.FinishAttempt(rctx, end); err != nil {
				return err
			}
			if runErr != nil || ic.DryRun {
				// A failed rollback means the connection died (e.g. cancelled mid-query); the
				// transaction is gone either way, so the attempt's record must still commit.
				_ = tx.Rollback(rctx)
				return nil
			}
			if err := tx.Commit(rctx); err != nil {
				return fmt.Errorf("%w: %w", errTargetCommit, err)
			}
			return nil
		})
		_ = tx.Rollback(rctx) // no-op after commit; releases the connection otherwise
	}
	if errors.Is(err, store.ErrLostClaim) {
		log.Warn().Msg("attempt lost its claim to another delivery; its result is discarded")
		return fmt.Errorf("%w: lost claim", errDuplicate)
	}
	if errors.Is(err, errTargetCommit) {
		// The target refused the commit: record the attempt as a DB failure instead.
		return w.record(ctx, ic, attemptID, claim, nil, m, etl.DBError(err), cause, start, log)
	}
	if err != nil {
		// The item stays RUNNING under this attempt until the reconciler closes it a lease
		// after its last heartbeat; come back then rather than after asynq's default delay.
		log.Error().Err(err).Msg("could not record attempt; the lease will expire and the item be retried")
		return task.RetryIn(err, w.cfg.Lease)
	}
	ev := log.Info()
	if runErr != nil {
		ev = log.Warn().Str("error_category", end.ErrorCategory).Str("error", truncate(runErr.Error(), 500))
	}
	ev.Str("status", end.AttemptStatus).Int64("records_read", m.RecordsRead).Int64("records_written", m.RecordsWritten).
		Int64("page_count", m.Pages).Bool("dry_run", ic.DryRun).Msg("attempt ended")
	w.cfg.Metrics.ObserveAttempt(ic.JobID, end.AttemptStatus, end.ErrorCategory, time.Since(start), m.RecordsRead, m.RecordsWritten)
	if end.Terminal && shardComplete {
		w.maybeFinalise(rctx, ic.RunID, log)
	}
	return asynqErr
}

// runCancelled reports whether an operator asked to cancel the run; the attempt's context may
// have been cancelled through asynq's channel, which says nothing about why.
func (w *Worker) runCancelled(ctx context.Context, runID uuid.UUID) bool {
	run, err := w.cfg.Store.GetRun(context.WithoutCancel(ctx), runID)
	return err == nil && run.CancelRequestedAt != nil
}

// itemCursor advances the item's cursor with its success when the job's policy is per item.
func (w *Worker) itemCursor(ic store.ItemContext, end *store.AttemptEnd) {
	if ic.CursorPolicy != string(runstate.CursorPolicyItem) {
		return
	}
	out := runstate.CursorDecision(runstate.CursorInput{
		Strategy: etl.Strategy(ic.Strategy), Policy: runstate.CursorPolicyItem, DryRun: ic.DryRun,
		ItemStatus: runstate.StatusSuccess, Current: ic.CursorStart, Watermark: end.CursorEnd, LogicalStart: ic.LogicalStart,
	})
	end.CursorNote = &out.Note
	if out.Advance && out.Value != nil {
		end.Cursor = &store.CursorAdvance{JobID: ic.JobID, ParamHash: ic.ParamHash, Params: ic.Params,
			Strategy: ic.Strategy, Value: *out.Value, RunID: ic.RunID}
	}
}

func (w *Worker) maybeFinalise(ctx context.Context, runID uuid.UUID, log zerolog.Logger) {
	done, err := w.cfg.Store.RunComplete(ctx, runID)
	if err != nil || !done {
		if err != nil {
			log.Warn().Err(err).Msg("progress check failed; the reconciler will finalise")
		}
		return
	}
	began := time.Now()
	ok, err := aggregate.Finalise(ctx, w.cfg.Store, runID)
	w.cfg.Metrics.ObserveFinalise(time.Since(began))
	if err != nil {
		log.Error().Err(err).Msg("finalise failed; the reconciler will retry")
		return
	}
	if ok {
		run, err := w.cfg.Store.GetRun(ctx, runID)
		if err == nil {
			log.Info().Str("status", run.Status).Int32("items_succeeded", run.ItemsSucceeded).
				Int32("items_failed", run.ItemsFailed).Int64("records_read", run.RecordsRead).
				Int64("records_written", run.RecordsWritten).Msg("run finalised")
		}
	}
}

// cancelPending ends a not-yet-started item of a cancelled run.
func (w *Worker) cancelPending(ctx context.Context, ic store.ItemContext, log zerolog.Logger) error {
	ok, err := w.cfg.Store.CancelPendingItem(ctx, ic.RunID, ic.ItemNo, ic.ItemCount)
	if err != nil {
		return err
	}
	if ok {
		log.Info().Msg("item cancelled before start")
		w.maybeFinalise(context.WithoutCancel(ctx), ic.RunID, log)
	}
	return nil
}

// notClaimable handles a delivery that could not claim: a live attempt holds the item
// (a duplicate delivery), or its holder died. In the second case the reconciler closes the
// lost attempt (retrying the item, or failing it when out of attempts), so the delivery only
// comes back a lease later.
func (w *Worker) notClaimable(ctx context.Context, ic store.ItemContext, log zerolog.Logger) error {
	cur, err := w.cfg.Store.GetItemContext(ctx, ic.RunID, ic.ItemNo)
	if err != nil {
		return err
	}
	log.Info().Str("status", cur.Status).Msg("duplicate delivery: item held by another attempt or terminal")
	return task.RetryIn(fmt.Errorf("%w: item %s", errDuplicate, cur.Status), w.cfg.Lease)
}

// shareSecrets hands the values of environment variables named by *_env config keys to the
// log redactor, so a secret a job uses never reaches a log line.
func (w *Worker) shareSecrets(config json.RawMessage) {
	if w.cfg.OnSecrets == nil {
		return
	}
	var m map[string]any
	if json.Unmarshal(config, &m) != nil {
		return
	}
	var vals []string
	for k, v := range m {
		if s, ok := v.(string); ok && strings.HasSuffix(k, "_env") {
			if val := os.Getenv(s); val != "" {
				vals = append(vals, val)
			}
		}
	}
	if len(vals) > 0 {
		w.cfg.OnSecrets(vals...)
	}
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

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
