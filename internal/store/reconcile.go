package store

// Reconciliation: the statements the reconciler runs to repair what a crash, a lost worker or a
// lost Redis left behind, the scheduler's view of cron ticks, and the session advisory lock
// both use to elect one active replica. Every repair is guarded in SQL so that a live worker
// racing it wins, and every terminal transition is counted in the progress shards in the same
// statement, as FinishAttempt does.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

// AdvisoryLock is a Postgres session advisory lock (pg_try_advisory_lock(hashtext(name)))
// held on a connection of its own, taken out of the pool: the lock lives exactly as long as
// that session, so a replica that dies or loses its connection loses the lock with it.
// Advisory locks are per database, so replicas on one database compete and tests on their own
// databases do not. It is safe for concurrent use.
type AdvisoryLock struct {
	st   *Store
	name string

	mu   sync.Mutex
	conn *pgx.Conn
	held bool
}

// AdvisoryLock returns the (not yet acquired) advisory lock called name.
func (s *Store) AdvisoryLock(name string) *AdvisoryLock {
	return &AdvisoryLock{st: s, name: name}
}

// TryAcquire takes the lock if no other session holds it, without waiting. When this lock
// already holds it, TryAcquire checks that its session is still alive; a dead session means
// the lock is gone, and TryAcquire reports the error after dropping the connection (the next
// call starts afresh).
func (l *AdvisoryLock) TryAcquire(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		c, err := l.st.pool.Acquire(ctx)
		if err != nil {
			return false, fmt.Errorf("connect for advisory lock %q: %w", l.name, err)
		}
		l.conn = c.Hijack()
	}
	if l.held {
		if err := l.conn.Ping(ctx); err != nil {
			l.dropLocked()
			return false, fmt.Errorf("advisory lock %q: session lost: %w", l.name, err)
		}
		return true, nil
	}
	ok, err := sqlcdb.New(l.conn).TryAdvisoryLock(ctx, l.name)
	if err != nil {
		l.dropLocked()
		return false, fmt.Errorf("try advisory lock %q: %w", l.name, err)
	}
	l.held = ok
	return ok, nil
}

// Held reports whether the last TryAcquire got (or kept) the lock.
func (l *AdvisoryLock) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

// Release gives the lock up and closes its connection. It is safe to call when not held.
func (l *AdvisoryLock) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return nil
	}
	var err error
	if l.held {
		_, err = sqlcdb.New(l.conn).AdvisoryUnlock(ctx, l.name)
	}
	// Closing the session releases the lock even when the unlock failed.
	l.dropLocked()
	if err != nil {
		return fmt.Errorf("release advisory lock %q: %w", l.name, err)
	}
	return nil
}

func (l *AdvisoryLock) dropLocked() {
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = l.conn.Close(ctx)
		cancel()
	}
	l.conn, l.held = nil, false
}

// UnenqueuedRuns lists up to limit PENDING runs, older than grace, that were never marked
// enqueued: their enqueuer died between recording the run and finishing its fan-out.
func (s *Store) UnenqueuedRuns(ctx context.Context, grace time.Duration, limit int) ([]uuid.UUID, error) {
	ids, err := s.q.UnenqueuedRuns(ctx, sqlcdb.UnenqueuedRunsParams{GraceSeconds: grace.Seconds(), BatchSize: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list unenqueued runs: %w", err)
	}
	return ids, nil
}

// PendingItem is a PENDING item whose task should be in Redis.
type PendingItem struct {
	RunID     uuid.UUID
	JobID     string
	ItemNo    int32
	ParamHash string
	TaskID    string
}

// PendingItemsAfter pages through the PENDING, still claimable (attempts below their limit)
// items of open, enqueued runs older than grace, in (run_id, item_no) order after the given key; pass the last item of the
// previous page, or the zero PendingItem for the first.
func (s *Store) PendingItemsAfter(ctx context.Context, grace time.Duration, after PendingItem, limit int) ([]PendingItem, error) {
	rows, err := s.q.PendingItemsToCheck(ctx, sqlcdb.PendingItemsToCheckParams{
		GraceSeconds: grace.Seconds(), AfterRunID: after.RunID, AfterItemNo: after.ItemNo, BatchSize: int32(limit),
	})
	if err != nil {
		return nil, fmt.Errorf("list pending items after run %s item %d: %w", after.RunID, after.ItemNo, err)
	}
	out := make([]PendingItem, len(rows))
	for i, r := range rows {
		out[i] = PendingItem{RunID: r.RunID, JobID: r.JobID, ItemNo: r.ItemNo, ParamHash: r.ParamHash, TaskID: r.TaskID}
	}
	return out, nil
}

// ItemsStillPending returns which of the run's given items are still PENDING.
func (s *Store) ItemsStillPending(ctx context.Context, runID uuid.UUID, itemNos []int32) ([]int32, error) {
	nos, err := s.q.ItemsStillPending(ctx, sqlcdb.ItemsStillPendingParams{RunID: runID, ItemNos: itemNos})
	if err != nil {
		return nil, fmt.Errorf("re-read %d items of run %s: %w", len(itemNos), runID, err)
	}
	return nos, nil
}

// LostAttempt is an attempt closed because its worker stopped heartbeating.
type LostAttempt struct {
	RunID     uuid.UUID
	ItemNo    int32
	AttemptID uuid.UUID
	// Retry is true when the item went back to PENDING; false when it was out of attempts and
	// is now FAILED.
	Retry bool
}

// CloseLostAttempts closes, in one statement, up to limit attempts whose item's heartbeat is
// older than lease: the attempt FAILED/SYSTEM "worker lost", the item PENDING while attempts
// remain under its limit (attempt_limit, else the job's max_attempts; the retry policy continues
// with the next claim) or FAILED and counted terminal.
// The item must still name the attempt and still be stale under its row lock, so a live
// worker's concurrent finish or heartbeat wins; rows being written are skipped.
func (s *Store) CloseLostAttempts(ctx context.Context, lease time.Duration, limit int) ([]LostAttempt, error) {
	rows, err := s.q.CloseLostAttempts(ctx, sqlcdb.CloseLostAttemptsParams{
		LeaseSeconds: lease.Seconds(), BatchSize: int32(limit), Shards: ProgressShards,
	})
	if err != nil {
		return nil, fmt.Errorf("close lost attempts: %w", err)
	}
	out := make([]LostAttempt, len(rows))
	for i, r := range rows {
		out[i] = LostAttempt{RunID: r.RunID, ItemNo: r.ItemNo, AttemptID: r.AttemptID, Retry: r.Retry}
	}
	return out, nil
}

// CloseOrphanAttempts closes RUNNING attempts older than lease that no item names any more.
func (s *Store) CloseOrphanAttempts(ctx context.Context, lease time.Duration) (int64, error) {
	n, err := s.q.CloseOrphanAttempts(ctx, lease.Seconds())
	if err != nil {
		return 0, fmt.Errorf("close orphan attempts: %w", err)
	}
	return n, nil
}

// ItemRef names one item of a run.
type ItemRef struct {
	RunID  uuid.UUID
	ItemNo int32
}

// FailExhaustedItems fails (SYSTEM "out of attempts") up to limit PENDING items of open runs
// older than grace that can never be claimed again because their attempts reached their limit
// (attempt_limit, else the job's max_attempts, e.g. lowered while they waited), counting them
// terminal.
func (s *Store) FailExhaustedItems(ctx context.Context, grace time.Duration, limit int) ([]ItemRef, error) {
	rows, err := s.q.FailExhaustedItems(ctx, sqlcdb.FailExhaustedItemsParams{
		GraceSeconds: grace.Seconds(), BatchSize: int32(limit), Shards: ProgressShards,
	})
	if err != nil {
		return nil, fmt.Errorf("fail exhausted items: %w", err)
	}
	out := make([]ItemRef, len(rows))
	for i, r := range rows {
		out[i] = ItemRef{RunID: r.RunID, ItemNo: r.ItemNo}
	}
	return out, nil
}

// TimedOutRun is an open run past its job's run_timeout_ms.
type TimedOutRun struct {
	RunID      uuid.UUID
	JobID      string
	StartedAt  time.Time
	RunTimeout time.Duration
}

// TimedOutRuns lists up to limit open runs whose started_at + run_timeout_ms has passed.
func (s *Store) TimedOutRuns(ctx context.Context, limit int) ([]TimedOutRun, error) {
	rows, err := s.q.TimedOutRuns(ctx, int32(limit))
	if err != nil {
		return nil, fmt.Errorf("list timed-out runs: %w", err)
	}
	out := make([]TimedOutRun, len(rows))
	for i, r := range rows {
		out[i] = TimedOutRun{RunID: r.RunID, JobID: r.JobID, StartedAt: r.StartedAt,
			RunTimeout: time.Duration(r.RunTimeoutMs) * time.Millisecond}
	}
	return out, nil
}

// FailOpenItems fails up to limit PENDING/RUNNING items of a run as FAILED/SYSTEM with
// message, closes their running attempts the same way and counts the items terminal, in one
// statement. A worker still executing such an item loses its claim (its finish changes
// nothing). Items locked by a concurrent writer are skipped; call again until it returns 0.
func (s *Store) FailOpenItems(ctx context.Context, runID uuid.UUID, message string, limit int) (items, attempts int, err error) {
	r, err := s.q.FailOpenItems(ctx, sqlcdb.FailOpenItemsParams{
		RunID: runID, Message: message, BatchSize: int32(limit), Shards: ProgressShards,
	})
	if err != nil {
		return 0, 0, fmt.Errorf("fail open items of run %s: %w", runID, err)
	}
	return int(r.Items), int(r.Attempts), nil
}

// CompleteOpenRuns lists up to limit PENDING/RUNNING runs older than grace whose progress
// shards count every item terminal: runs nobody finalised.
func (s *Store) CompleteOpenRuns(ctx context.Context, grace time.Duration, limit int) ([]uuid.UUID, error) {
	ids, err := s.q.CompleteOpenRuns(ctx, sqlcdb.CompleteOpenRunsParams{GraceSeconds: grace.Seconds(), BatchSize: int32(limit)})
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

// RegenerateItemTask moves a PENDING item to its next task generation and returns the new
// task id; ErrNotFound when the item is no longer PENDING.
func (s *Store) RegenerateItemTask(ctx context.Context, runID uuid.UUID, itemNo int32) (string, error) {
	id, err := s.q.RegenerateItemTask(ctx, sqlcdb.RegenerateItemTaskParams{RunID: runID, ItemNo: itemNo})
	if err != nil {
		return "", fmt.Errorf("regenerate task of item %d of run %s: %w", itemNo, runID, mapErr(err))
	}
	return id, nil
}
