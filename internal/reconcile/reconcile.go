// Package reconcile repairs what crashes leave between Postgres (the record) and Redis
// (delivery). One replica at a time — the holder of a Postgres session advisory lock — runs a
// pass every Interval that:
//
//   - fails the open items of runs past their job's run_timeout_ms, then finalises them;
//   - closes attempts whose worker stopped heartbeating ("worker lost"), returning the item to
//     PENDING while attempts remain, failing it otherwise;
//   - finishes the fan-out of runs whose enqueuer died before marking them enqueued;
//   - re-enqueues PENDING items whose task is gone from Redis (restart, data loss, eviction)
//     or sits archived/completed there;
//   - finalises runs whose items are all terminal but that nobody finalised.
//
// Every repair is safe against a live worker racing it: Postgres statements are guarded on the
// item's current attempt and row lock, and a task enqueued twice is a duplicate delivery the
// worker's claim turns into a no-op.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/etlexec/etlexec/internal/aggregate"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/store"
)

// Config configures a Reconciler.
type Config struct {
	// Store is etlexec's database. Required.
	Store *store.Store
	// Redis is where tasks are checked and re-enqueued. Required.
	Redis asynq.RedisConnOpt
	// Interval is the time between passes (and between attempts to become the leader).
	// Defaults to IntervalDefault.
	Interval time.Duration
	// Lease is how long an attempt may go without a heartbeat before it is considered lost;
	// keep it at least the workers' lease. Defaults to LeaseDefault.
	Lease time.Duration
	// Grace is how old a run must be before its items are checked against Redis, fanned out
	// or finalised here, so that an enqueuer or worker still busy with it is left alone.
	// Defaults to GraceDefault; a tiny value (1ns) effectively disables it in tests.
	Grace time.Duration
	// BatchSize bounds the rows one statement reads or changes. Defaults to BatchSizeDefault.
	BatchSize int
	// CheckConcurrency bounds concurrent task lookups in Redis (one round trip each).
	// Defaults to CheckConcurrencyDefault.
	CheckConcurrency int
	// Logger receives one line per pass that changed something and one per repair.
	Logger zerolog.Logger
}

// Named defaults of Config.
const (
	IntervalDefault         = 30 * time.Second
	LeaseDefault            = 30 * time.Second
	GraceDefault            = 10 * time.Second
	BatchSizeDefault        = 1000
	CheckConcurrencyDefault = 16
)

// LockName names the advisory lock whose holder is the leader.
const LockName = "etlexec_reconciler"

// Messages recorded on what the reconciler ends.
const (
	MsgWorkerLost = "worker lost"
	MsgRunTimeout = "run timeout"
)

// ErrNotLeader is returned by Once when another reconciler holds the leadership lock.
var ErrNotLeader = errors.New("another reconciler is the leader")

// Report counts what one pass did.
type Report struct {
	// RunsEnqueued counts runs never marked enqueued whose fan-out this pass finished, and
	// TasksEnqueued their tasks handed to Redis (tasks already there included).
	RunsEnqueued  int
	TasksEnqueued int
	// TasksChecked counts PENDING items whose task was looked up in Redis.
	TasksChecked int
	// TasksMissing counts tasks found gone and re-enqueued.
	TasksMissing int
	// TasksReplaced counts archived/completed tasks of PENDING items, deleted and re-enqueued.
	TasksReplaced int
	// AttemptsLost counts attempts closed FAILED/SYSTEM "worker lost".
	AttemptsLost int
	// ItemsRetried counts items of lost attempts put back to PENDING (attempts remained).
	ItemsRetried int
	// ItemsFailed counts items failed because their last attempt was lost or because they ran
	// out of attempts while PENDING.
	ItemsFailed int
	// RunsTimedOut counts runs past run_timeout_ms whose open items were failed; ItemsTimedOut
	// counts those items.
	RunsTimedOut  int
	ItemsTimedOut int
	// RunsFinalised counts runs this pass finalised.
	RunsFinalised int
}

// Acted reports whether the pass changed anything.
func (r Report) Acted() bool {
	r.TasksChecked = 0
	return r != Report{}
}

// Reconciler runs reconciliation passes.
type Reconciler struct {
	cfg  Config
	log  zerolog.Logger
	lock *store.AdvisoryLock
	insp *asynq.Inspector
	enq  *enqueue.Enqueuer // this pass's, on a fresh client; see enqueuer
}

// New builds a Reconciler. Close it when done.
func New(cfg Config) (*Reconciler, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("reconcile config: Store is required")
	case cfg.Redis == nil:
		return nil, errors.New("reconcile config: Redis is required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = IntervalDefault
	}
	if cfg.Lease <= 0 {
		cfg.Lease = LeaseDefault
	}
	if cfg.Grace <= 0 {
		cfg.Grace = GraceDefault
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = BatchSizeDefault
	}
	if cfg.CheckConcurrency <= 0 {
		cfg.CheckConcurrency = CheckConcurrencyDefault
	}
	return &Reconciler{
		cfg:  cfg,
		log:  cfg.Logger.With().Str("component", "reconciler").Logger(),
		lock: cfg.Store.AdvisoryLock(LockName),
		insp: asynq.NewInspector(cfg.Redis),
	}, nil
}

// Close gives up leadership and closes the Redis connections.
func (r *Reconciler) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(r.lock.Release(ctx), r.insp.Close())
}

// Leader reports whether this reconciler held the leadership lock at its last attempt.
func (r *Reconciler) Leader() bool { return r.lock.Held() }

// Run makes a pass every Interval while ctx lives, acting only while it is the leader (it
// tries to become the leader before each pass). It gives leadership up when it returns; it
// returns nil when ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := r.lock.Release(rctx); err != nil {
			r.log.Warn().Err(err).Msg("release reconciler leadership")
		}
	}()
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	wasLeader := false
	for {
		_, err := r.Once(ctx)
		leader := r.lock.Held()
		switch {
		case leader && !wasLeader:
			r.log.Info().Dur("interval", r.cfg.Interval).Msg("reconciler is the leader")
		case !leader && wasLeader:
			r.log.Warn().Err(err).Msg("reconciler lost leadership")
		}
		wasLeader = leader
		if err != nil && !errors.Is(err, ErrNotLeader) && ctx.Err() == nil {
			r.log.Warn().Err(err).Msg("reconcile pass failed; retrying next interval")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Once makes one pass if this reconciler is (or can become) the leader; otherwise it returns
// ErrNotLeader. Leadership, once taken, is kept until Close (or Run's return), so a second
// Reconciler on the same database gets ErrNotLeader until then. A failing step does not stop
// the others; their errors are joined.
func (r *Reconciler) Once(ctx context.Context) (Report, error) {
	ok, err := r.lock.TryAcquire(ctx)
	if err != nil {
		return Report{}, err
	}
	if !ok {
		return Report{}, ErrNotLeader
	}
	var (
		rep  Report
		errs []error
	)
	enq, done, err := r.enqueuer()
	if err != nil {
		return Report{}, err
	}
	defer done()
	r.enq = enq
	start := time.Now()
	for _, step := range []struct {
		name string
		fn   func(context.Context, *Report) error
	}{
		// Timeouts first: items they fail need no retry or task. Lost attempts before the
		// Redis check, which then makes sure their items have a task.
		{"run timeouts", r.runTimeouts},
		{"lost attempts", r.lostAttempts},
		{"unenqueued runs", r.unenqueuedRuns},
		{"missing tasks", r.missingTasks},
		{"unfinalised runs", r.unfinalisedRuns},
	} {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		if err := step.fn(ctx, &rep); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", step.name, err))
		}
	}
	ev := r.log.Debug()
	if rep.Acted() {
		ev = r.log.Info()
	}
	ev.Int("runs_enqueued", rep.RunsEnqueued).Int("tasks_enqueued", rep.TasksEnqueued).
		Int("tasks_checked", rep.TasksChecked).Int("tasks_missing", rep.TasksMissing).
		Int("tasks_replaced", rep.TasksReplaced).Int("attempts_lost", rep.AttemptsLost).
		Int("items_retried", rep.ItemsRetried).Int("items_failed", rep.ItemsFailed).
		Int("runs_timed_out", rep.RunsTimedOut).Int("items_timed_out", rep.ItemsTimedOut).
		Int("runs_finalised", rep.RunsFinalised).Int("errors", len(errs)).
		Dur("elapsed", time.Since(start)).Msg("reconcile pass")
	return rep, errors.Join(errs...)
}

// runTimeouts fails the open items of runs past run_timeout_ms and finalises the runs.
func (r *Reconciler) runTimeouts(ctx context.Context, rep *Report) error {
	runs, err := r.cfg.Store.TimedOutRuns(ctx, r.cfg.BatchSize)
	if err != nil {
		return err
	}
	var errs []error
	for _, run := range runs {
		total, attempts := 0, 0
		for {
			n, a, err := r.cfg.Store.FailOpenItems(ctx, run.RunID, MsgRunTimeout, r.cfg.BatchSize)
			total, attempts = total+n, attempts+a
			if err != nil {
				errs = append(errs, err)
				break
			}
			if n < r.cfg.BatchSize {
				break // the rest (if any) is locked by a worker right now: next pass
			}
		}
		if total > 0 {
			rep.RunsTimedOut++
			rep.ItemsTimedOut += total
			r.log.Warn().Str("job_id", run.JobID).Str("run_id", run.RunID.String()).
				Dur("run_timeout", run.RunTimeout).Time("started_at", run.StartedAt).
				Int("items_failed", total).Int("attempts_closed", attempts).Msg("run timed out; open items failed")
		}
		if err := r.finalise(ctx, run.RunID, rep); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// lostAttempts closes attempts whose worker stopped heartbeating, and fails PENDING items that
// ran out of attempts.
func (r *Reconciler) lostAttempts(ctx context.Context, rep *Report) error {
	ended := map[uuid.UUID]bool{} // runs with an item made terminal here
	for {
		lost, err := r.cfg.Store.CloseLostAttempts(ctx, r.cfg.Lease, r.cfg.BatchSize)
		if err != nil {
			return err
		}
		for _, l := range lost {
			rep.AttemptsLost++
			next := "item back to PENDING for its next attempt"
			if l.Retry {
				rep.ItemsRetried++
			} else {
				rep.ItemsFailed++
				ended[l.RunID] = true
				next = "item out of attempts: FAILED"
			}
			r.log.Warn().Str("run_id", l.RunID.String()).Int32("item_no", l.ItemNo).
				Str("attempt_id", l.AttemptID.String()).Bool("retry", l.Retry).
				Dur("lease", r.cfg.Lease).Msg("worker lost: " + next)
		}
		if len(lost) < r.cfg.BatchSize {
			break
		}
	}
	orphans, err := r.cfg.Store.CloseOrphanAttempts(ctx, r.cfg.Lease)
	if err != nil {
		return err
	}
	if orphans > 0 {
		rep.AttemptsLost += int(orphans)
		r.log.Warn().Int64("attempts", orphans).Msg("closed stale attempts no item names (worker lost)")
	}
	exhausted, err := r.cfg.Store.FailExhaustedItems(ctx, r.cfg.Grace, r.cfg.BatchSize)
	if err != nil {
		return err
	}
	for _, it := range exhausted {
		rep.ItemsFailed++
		ended[it.RunID] = true
		r.log.Warn().Str("run_id", it.RunID.String()).Int32("item_no", it.ItemNo).
			Msg("PENDING item can never be claimed (attempts reached its limit): FAILED")
	}
	var errs []error
	for runID := range ended {
		if err := r.finalise(ctx, runID, rep); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unenqueuedRuns finishes the fan-out of runs whose enqueuer died before marking them
// enqueued: their PENDING items are enqueued (tasks already in Redis are left alone) and the
// run marked enqueued.
func (r *Reconciler) unenqueuedRuns(ctx context.Context, rep *Report) error {
	ids, err := r.cfg.Store.UnenqueuedRuns(ctx, r.cfg.Grace, r.cfg.BatchSize)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		n, err := r.enq.EnqueueRun(ctx, id)
		rep.TasksEnqueued += n
		if err != nil {
			errs = append(errs, fmt.Errorf("enqueue run %s: %w", id, err))
			continue
		}
		rep.RunsEnqueued++
		r.log.Warn().Str("run_id", id.String()).Int("tasks", n).
			Msg("run was never marked enqueued (enqueuer died mid-fan-out): fan-out finished")
	}
	return errors.Join(errs...)
}

// taskState is what Redis holds for a PENDING item's task.
type taskState int

const (
	taskPresent  taskState = iota // pending, active, scheduled or retry: it will be delivered
	taskGone                      // not in Redis (or its queue is gone)
	taskStale                     // archived or completed: it will never be delivered again
	taskOrphaned                  // active while Postgres says nobody holds the item: its worker died
)

// missingTasks re-enqueues PENDING items whose task is gone from Redis or will never be
// delivered again. It looks up every such item's task, BatchSize items at a time.
func (r *Reconciler) missingTasks(ctx context.Context, rep *Report) error {
	jobs := map[string]store.Job{}
	var after store.PendingItem
	for {
		page, err := r.cfg.Store.PendingItemsAfter(ctx, r.cfg.Grace, after, r.cfg.BatchSize)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		for _, it := range page {
			if _, ok := jobs[it.JobID]; !ok {
				job, err := r.cfg.Store.GetJob(ctx, it.JobID)
				if err != nil {
					return err
				}
				jobs[it.JobID] = job
			}
		}
		states, err := r.lookup(ctx, page, jobs)
		rep.TasksChecked += len(page)
		if err != nil {
			return err
		}
		if err := r.repair(ctx, page, states, jobs, rep); err != nil {
			return err
		}
		if len(page) < r.cfg.BatchSize {
			return nil
		}
		after = page[len(page)-1]
	}
}

// lookup asks Redis for each item's task, CheckConcurrency at a time.
func (r *Reconciler) lookup(ctx context.Context, items []store.PendingItem, jobs map[string]store.Job) ([]taskState, error) {
	states := make([]taskState, len(items))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.CheckConcurrency)
	for i, it := range items {
		g.Go(func() error {
			if gctx.Err() != nil {
				return gctx.Err()
			}
			queue := jobs[it.JobID].Queue
			info, err := r.insp.GetTaskInfo(queue, it.TaskID)
			switch {
			case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
				states[i] = taskGone
			case err != nil:
				return fmt.Errorf("look up task %s in queue %s: %w", it.TaskID, queue, err)
			case info.State == asynq.TaskStateArchived || info.State == asynq.TaskStateCompleted:
				states[i] = taskStale
			case info.State == asynq.TaskStateActive:
				// A live worker claims within moments of taking a task; an active task whose
				// item stays PENDING belongs to a dead worker, and asynq would hand it back
				// only after its lease, recoverer tick and retry delay (minutes).
				states[i] = taskOrphaned
			default:
				states[i] = taskPresent
			}
			return nil
		})
	}
	return states, g.Wait()
}

// repair re-enqueues the items found gone or stale that Postgres still says are PENDING,
// deleting a stale task first (asynq refuses an id that is still stored).
func (r *Reconciler) repair(ctx context.Context, items []store.PendingItem, states []taskState, jobs map[string]store.Job, rep *Report) error {
	byRun := map[uuid.UUID][]int{}
	var order []uuid.UUID
	for i, s := range states {
		if s == taskPresent {
			continue
		}
		id := items[i].RunID
		if _, ok := byRun[id]; !ok {
			order = append(order, id)
		}
		byRun[id] = append(byRun[id], i)
	}
	for _, runID := range order {
		idx := byRun[runID]
		nos := make([]int32, len(idx))
		for k, i := range idx {
			nos[k] = items[i].ItemNo
		}
		// The Redis lookups took time: a worker may have run an item meanwhile.
		still, err := r.cfg.Store.ItemsStillPending(ctx, runID, nos)
		if err != nil {
			return err
		}
		pending := make(map[int32]bool, len(still))
		for _, no := range still {
			pending[no] = true
		}
		for _, i := range idx {
			it := items[i]
			if !pending[it.ItemNo] {
				continue
			}
			job := jobs[it.JobID]
			log := r.log.With().Str("job_id", it.JobID).Str("run_id", it.RunID.String()).
				Int32("item_no", it.ItemNo).Str("task_id", it.TaskID).Str("queue", job.Queue).Logger()
			if states[i] == taskOrphaned {
				id, err := r.cfg.Store.RegenerateItemTask(ctx, it.RunID, it.ItemNo)
				if errors.Is(err, store.ErrNotFound) {
					continue // claimed meanwhile: a live worker had it after all
				}
				if err != nil {
					return err
				}
				it.TaskID = id
			}
			if states[i] == taskStale {
				err := r.insp.DeleteTask(job.Queue, it.TaskID)
				if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
					// Most likely it became active: a worker has it after all.
					log.Warn().Err(err).Msg("could not delete the stale task of a PENDING item; leaving it")
					continue
				}
			}
			enqueued, err := r.enqueueItem(ctx, job, it)
			if err != nil {
				return err
			}
			if !enqueued {
				continue // someone else enqueued it in between
			}
			if states[i] == taskOrphaned {
				rep.TasksReplaced++
				log.Warn().Msg("PENDING item's task is stuck active under a dead worker: re-enqueued under a new task id")
			} else if states[i] == taskStale {
				rep.TasksReplaced++
				log.Warn().Msg("PENDING item's task was archived or completed in Redis: re-enqueued")
			} else {
				rep.TasksMissing++
				log.Warn().Msg("PENDING item's task is missing from Redis: re-enqueued")
			}
		}
	}
	return nil
}

// enqueueItem re-enqueues an item's task exactly as the enqueuer built it (same id, payload
// and options); false means a task with that id is already in Redis.
func (r *Reconciler) enqueueItem(ctx context.Context, job store.Job, it store.PendingItem) (bool, error) {
	return r.enq.EnqueueItem(ctx, job, it.RunID, store.CreatedItem{ItemNo: it.ItemNo, ParamHash: it.ParamHash, TaskID: it.TaskID})
}

// enqueuer builds the pass's enqueuer on a fresh asynq client. asynq's client remembers which queues it
// has registered in Redis and never registers them again, so a long-lived client would leave a
// queue rebuilt after Redis lost its data invisible to the Inspector and asynqmon.
func (r *Reconciler) enqueuer() (*enqueue.Enqueuer, func(), error) {
	client := asynq.NewClient(r.cfg.Redis)
	enq, err := enqueue.New(enqueue.Config{Store: r.cfg.Store, Client: client, Logger: r.log})
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return enq, func() { client.Close() }, nil
}

// unfinalisedRuns finalises open runs whose items are all terminal.
func (r *Reconciler) unfinalisedRuns(ctx context.Context, rep *Report) error {
	ids, err := r.cfg.Store.CompleteOpenRuns(ctx, r.cfg.Grace, r.cfg.BatchSize)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if err := r.finalise(ctx, id, rep); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// finalise finalises a run if all its items are terminal and nobody did yet.
func (r *Reconciler) finalise(ctx context.Context, runID uuid.UUID, rep *Report) error {
	ok, err := aggregate.Finalise(ctx, r.cfg.Store, runID)
	if err != nil {
		return err
	}
	if !ok {
		return nil
	}
	rep.RunsFinalised++
	ev := r.log.Info().Str("run_id", runID.String())
	if run, err := r.cfg.Store.GetRun(ctx, runID); err == nil {
		ev = ev.Str("job_id", run.JobID).Str("status", run.Status).Int32("items_succeeded", run.ItemsSucceeded).
			Int32("items_failed", run.ItemsFailed)
	}
	ev.Msg("run finalised by the reconciler")
	return nil
}
