package store

// Reconciliation: the statements the reconciler runs to repair what a dead worker, a lost
// Redis or a dead enqueuer left behind, and the scheduler's view of cron ticks. Every repair is
// guarded in SQL so that a live worker racing it wins, and every settled item is counted in the
// progress counters in the same statement.

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

// ReconcilerShard is the progress shard the reconciler and operator actions count in.
const ReconcilerShard int16 = 0

// DeadWorker is a worker whose lease lapsed.
type DeadWorker struct {
	ID      uuid.UUID
	Name    string
	AppName string
	Stopped bool
}

// DeadWorkers lists up to limit workers whose lease lapsed and that nobody declared dead yet.
func (s *Store) DeadWorkers(ctx context.Context, limit int) ([]DeadWorker, error) {
	rows, err := s.q.DeadWorkers(ctx, int32(limit))
	if err != nil {
		return nil, fmt.Errorf("list dead workers: %w", err)
	}
	out := make([]DeadWorker, len(rows))
	for i, r := range rows {
		out[i] = DeadWorker{ID: r.WorkerID, Name: r.Name, AppName: r.AppName, Stopped: r.Stopped}
	}
	return out, nil
}

// DeclareWorkerDead marks the worker dead if its lease is still lapsed; false means it renewed
// meanwhile (it lives) or someone else declared it.
func (s *Store) DeclareWorkerDead(ctx context.Context, id uuid.UUID) (bool, error) {
	n, err := s.q.DeclareWorkerDead(ctx, id)
	if err != nil {
		return false, fmt.Errorf("declare worker %s dead: %w", id, err)
	}
	return n == 1, nil
}

// terminateBackendsSQL ends the sessions with the given application_name on this database
// (pg_stat_activity is a catalog view sqlc does not model).
const terminateBackendsSQL = `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int
FROM pg_stat_activity
WHERE application_name LIKE $1 || '%' AND $1 <> '' AND datname = current_database() AND pid <> pg_backend_pid()`

// TerminateBackends ends the sessions on this database whose application_name starts with app
// (a dead worker's: its main and liveness pools), so that a frozen or cut-off process holds no
// lock a takeover needs and cannot commit late. It needs the same role as those sessions or
// pg_signal_backend; it reports how many it ended.
func (s *Store) TerminateBackends(ctx context.Context, app string) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, terminateBackendsSQL, app).Scan(&n); err != nil {
		return 0, fmt.Errorf("terminate sessions of %q: %w", app, err)
	}
	return n, nil
}

// LostAttempt is an attempt closed because its worker died.
type LostAttempt struct {
	RunID      uuid.UUID
	ItemNo     int32
	AttemptID  uuid.UUID
	Queue      string
	Generation int32
	Outcome    runstate.LostOutcome
}

// CloseLostAttempts closes up to limit attempts of a dead worker in one transaction: it locks
// their items (SKIP LOCKED, in key order), decides each item's fate with runstate.LostAttempt,
// and writes it — the attempt FAILED/SYSTEM, the item PENDING under a new task generation (its
// old task is stuck active under the dead worker) or FAILED, the counters. Call it until it
// returns fewer than limit.
func (s *Store) CloseLostAttempts(ctx context.Context, worker uuid.UUID, limit int) ([]LostAttempt, error) {
	var out []LostAttempt
	err := s.InTx(ctx, func(tx *Tx) error {
		rows, err := tx.q.LockLostAttempts(ctx, sqlcdb.LockLostAttemptsParams{Worker: worker, BatchSize: int32(limit)})
		if err != nil || len(rows) == 0 {
			return err
		}
		p := sqlcdb.CloseLostAttemptsParams{EndedBy: EndedByReconciler, Shard: ReconcilerShard}
		queues := map[uuid.UUID]string{}
		decided := map[uuid.UUID]runstate.LostOutcome{}
		for _, r := range rows {
			o := runstate.LostAttempt(runstate.LostInput{Lost: int(r.LostAttempts), Solo: r.Solo})
			p.RunIds = append(p.RunIds, r.RunID)
			p.ItemNos = append(p.ItemNos, r.ItemNo)
			p.AttemptIds = append(p.AttemptIds, r.AttemptID)
			p.Retry = append(p.Retry, o.Retry)
			p.SoloNext = append(p.SoloNext, o.SoloNext)
			p.Messages = append(p.Messages, o.Message)
			queues[r.AttemptID], decided[r.AttemptID] = r.Queue, o
		}
		closed, err := tx.q.CloseLostAttempts(ctx, p)
		if err != nil {
			return err
		}
		for _, c := range closed {
			out = append(out, LostAttempt{RunID: c.RunID, ItemNo: c.ItemNo, AttemptID: c.AttemptID,
				Queue: queues[c.AttemptID], Generation: c.Generation, Outcome: decided[c.AttemptID]})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("close lost attempts of worker %s: %w", worker, err)
	}
	return out, nil
}

// UnenqueuedRuns lists up to limit open runs whose fan-out never finished and whose fan-out
// lease lapsed.
func (s *Store) UnenqueuedRuns(ctx context.Context, limit int) ([]uuid.UUID, error) {
	ids, err := s.q.UnenqueuedRuns(ctx, int32(limit))
	if err != nil {
		return nil, fmt.Errorf("list unenqueued runs: %w", err)
	}
	return ids, nil
}

// FanoutLeaseDefault is how long one fan-out lease renewal holds a run's fan-out.
const FanoutLeaseDefault = 30 * time.Second

// TakeFanout takes a run's fan-out lease for ttl (renew: the caller already holds it); false
// means another process holds it or the fan-out is done.
func (s *Store) TakeFanout(ctx context.Context, runID uuid.UUID, ttl time.Duration, renew bool) (bool, error) {
	_, err := s.q.TakeFanout(ctx, sqlcdb.TakeFanoutParams{RunID: runID, TtlMs: ttl.Milliseconds(), Renew: renew})
	if err = mapErr(err); err == ErrNotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("take fan-out of run %s: %w", runID, err)
	}
	return true, nil
}

// OpenRunCount is an open, enqueued run's queue and counters.
type OpenRunCount struct {
	RunID           uuid.UUID
	Queue           string
	Items           int64
	Settled         int64
	Running         int64
	Deadline        *time.Time
	CancelRequested bool
}

// Waiting is how many of the run's items wait for a delivery.
func (c OpenRunCount) Waiting() int64 { return max(c.Items-c.Settled-c.Running, 0) }

// OpenRunCounts lists every open, enqueued run with its counters (at most ProgressShards
// counter rows per run; never items).
func (s *Store) OpenRunCounts(ctx context.Context) ([]OpenRunCount, error) {
	rows, err := s.q.OpenRunCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("count open runs: %w", err)
	}
	out := make([]OpenRunCount, len(rows))
	for i, r := range rows {
		out[i] = OpenRunCount{RunID: r.RunID, Queue: r.Queue, Items: int64(r.ItemCount), Settled: r.Terminal,
			Running: r.Running, Deadline: r.DeadlineAt, CancelRequested: r.CancelRequestedAt != nil}
	}
	return out, nil
}

// DeliverableItems pages, after the given item (zero value for the first page), the items of a
// queue's open enqueued runs that wait for a delivery.
func (s *Store) DeliverableItems(ctx context.Context, queue string, after ItemTask, limit int) ([]ItemTask, error) {
	rows, err := s.q.DeliverableItems(ctx, sqlcdb.DeliverableItemsParams{Queue: queue, AfterRunID: after.RunID,
		AfterItemNo: after.ItemNo, BatchSize: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list deliverable items of queue %s: %w", queue, err)
	}
	out := make([]ItemTask, len(rows))
	for i, r := range rows {
		out[i] = ItemTask{RunID: r.RunID, ItemNo: r.ItemNo, Generation: r.Generation, NotBefore: r.NextRetryAt}
	}
	return out, nil
}

// RedisEpoch reads the marker last written to Redis for queue; "" when none was.
func (s *Store) RedisEpoch(ctx context.Context, queue string) (string, error) {
	e, err := s.q.GetRedisEpoch(ctx, queue)
	if err = mapErr(err); err == ErrNotFound {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read redis epoch of queue %s: %w", queue, err)
	}
	return e, nil
}

// SetRedisEpoch records the marker just written to Redis for queue.
func (s *Store) SetRedisEpoch(ctx context.Context, queue, epoch string) error {
	if err := s.q.SetRedisEpoch(ctx, sqlcdb.SetRedisEpochParams{Queue: queue, Epoch: epoch}); err != nil {
		return fmt.Errorf("record redis epoch of queue %s: %w", queue, err)
	}
	return nil
}

// NextItemGeneration moves a PENDING, unclaimed item to its next task generation; ErrNotFound
// when it was claimed or settled meanwhile.
func (s *Store) NextItemGeneration(ctx context.Context, runID uuid.UUID, itemNo int32) (ItemTask, error) {
	r, err := s.q.NextItemGeneration(ctx, sqlcdb.NextItemGenerationParams{RunID: runID, ItemNo: itemNo})
	if err != nil {
		return ItemTask{}, fmt.Errorf("next task generation of item %d of run %s: %w", itemNo, runID, mapErr(err))
	}
	return ItemTask{RunID: runID, ItemNo: itemNo, Generation: r.Generation, NotBefore: r.NextRetryAt}, nil
}

// ItemState is an item's current delivery state.
type ItemState struct {
	ItemTask
	Status  runstate.Status
	Claimed bool
}

// ItemStates reads the state of the named items (missing ones are left out).
func (s *Store) ItemStates(ctx context.Context, refs []ItemTask) ([]ItemState, error) {
	p := sqlcdb.ItemGenerationsParams{RunIds: make([]uuid.UUID, len(refs)), ItemNos: make([]int32, len(refs))}
	for i, r := range refs {
		p.RunIds[i], p.ItemNos[i] = r.RunID, r.ItemNo
	}
	rows, err := s.q.ItemGenerations(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("read %d items: %w", len(refs), err)
	}
	out := make([]ItemState, len(rows))
	for i, r := range rows {
		out[i] = ItemState{ItemTask: ItemTask{RunID: r.RunID, ItemNo: r.ItemNo, Generation: r.Generation, NotBefore: r.NextRetryAt},
			Status: r.Status, Claimed: r.CurrentAttemptID != nil}
	}
	return out, nil
}

// NextRunDeadline is the earliest deadline of an open run, nil when none has one.
func (s *Store) NextRunDeadline(ctx context.Context) (*time.Time, error) {
	d, err := s.q.NextRunDeadline(ctx)
	if err = mapErr(err); err == ErrNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read next run deadline: %w", err)
	}
	return d, nil
}

// TimedOutRun is an open run past its deadline.
type TimedOutRun struct {
	RunID     uuid.UUID
	JobID     string
	StartedAt time.Time
	Deadline  time.Time
}

// TimedOutRuns lists up to limit open runs past their deadline.
func (s *Store) TimedOutRuns(ctx context.Context, limit int) ([]TimedOutRun, error) {
	rows, err := s.q.TimedOutRuns(ctx, int32(limit))
	if err != nil {
		return nil, fmt.Errorf("list timed-out runs: %w", err)
	}
	out := make([]TimedOutRun, len(rows))
	for i, r := range rows {
		out[i] = TimedOutRun{RunID: r.RunID, JobID: r.JobID, StartedAt: r.StartedAt, Deadline: r.DeadlineAt}
	}
	return out, nil
}

// CloseTimedOutClaims fails, in one transaction, up to limit claimed items of a timed-out
// run whose worker had the deadline plus grace to record them, with their attempts.
func (s *Store) CloseTimedOutClaims(ctx context.Context, runID uuid.UUID, grace time.Duration, message string, limit int) (int, error) {
	n := 0
	err := s.InTx(ctx, func(tx *Tx) error {
		rows, err := tx.q.LockTimedOutClaims(ctx, sqlcdb.LockTimedOutClaimsParams{RunID: runID, GraceMs: grace.Milliseconds(), BatchSize: int32(limit)})
		if err != nil || len(rows) == 0 {
			return err
		}
		p := sqlcdb.CloseTimedOutClaimsParams{RunID: runID, Shard: ReconcilerShard, Message: Text(message, MessageMax)}
		for _, r := range rows {
			p.ItemNos = append(p.ItemNos, r.ItemNo)
			p.AttemptIds = append(p.AttemptIds, r.AttemptID)
		}
		if _, err := tx.q.CloseTimedOutClaims(ctx, p); err != nil {
			return err
		}
		n = len(rows)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("close timed-out claims of run %s: %w", runID, err)
	}
	return n, nil
}

// CompleteOpenRuns lists up to limit open, enqueued runs whose counters say every item settled.
func (s *Store) CompleteOpenRuns(ctx context.Context, limit int) ([]uuid.UUID, error) {
	ids, err := s.q.CompleteOpenRuns(ctx, int32(limit))
	if err != nil {
		return nil, fmt.Errorf("list complete open runs: %w", err)
	}
	return ids, nil
}

// ScheduledJob is an enabled job with a cron schedule and the last tick it fired.
type ScheduledJob struct {
	JobID    string
	Schedule string
	// UpdatedAt is when the definition last changed; a job that never fired counts its ticks
	// from here.
	UpdatedAt time.Time
	// LastScheduledFor is the latest scheduled_for among the job's runs; nil when none.
	LastScheduledFor *time.Time
}

// ScheduledJobTicks lists enabled jobs with a schedule and their last fired tick.
func (s *Store) ScheduledJobTicks(ctx context.Context) ([]ScheduledJob, error) {
	rows, err := s.q.ScheduledJobTicks(ctx)
	if err != nil {
		return nil, fmt.Errorf("list scheduled jobs: %w", err)
	}
	out := make([]ScheduledJob, len(rows))
	for i, r := range rows {
		out[i] = ScheduledJob{JobID: r.JobID, Schedule: r.Schedule, UpdatedAt: r.UpdatedAt, LastScheduledFor: r.LastScheduledFor}
	}
	return out, nil
}

// ScheduleTickIndex is the partial unique index on (job_id, scheduled_for) that makes a cron
// tick fire once however many schedulers race for it.
const ScheduleTickIndex = "dw_etl_runs_schedule_tick_idx"

// IsTickTaken reports whether err says the run's tick was already fired (by another replica).
func IsTickTaken(err error) bool { return IsUniqueViolation(err, ScheduleTickIndex) }
