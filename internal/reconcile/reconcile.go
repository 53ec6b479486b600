// Package reconcile repairs what crashes leave between Postgres (the record) and Redis
// (delivery). One replica at a time — the holder of the "reconciler" lease on the database
// clock — makes a pass every Interval (and at the next run deadline) that:
//
//   - declares dead the workers whose liveness lease lapsed, ends their sessions (so a frozen
//     process holds no lock and cannot commit late) and closes their attempts: "worker lost",
//     the item back to PENDING under a new task generation, or failed (runstate.LostAttempt);
//   - ends the runs past their run_timeout: unclaimed items fail at once, claimed ones once
//     their worker had the deadline plus a grace to record them;
//   - finishes the fan-out of runs whose enqueuer died (their fan-out lease lapsed);
//   - checks each queue's epoch marker in Redis: when Redis lost its data the marker is gone,
//     and every item waiting for a delivery is enqueued again; when Redis holds fewer tasks
//     than the counters say should wait (eviction), the queue's tasks are rebuilt;
//   - replaces item tasks left active with no lease or under a dead worker;
//   - finalises runs whose counters say every item settled.
//
// A pass reads counters and leases, never every pending item: its steady-state cost does not
// grow with the items waiting. Every repair is safe against a live worker racing it: statements
// are guarded on the item's claim and row lock, and a task enqueued twice is a duplicate delivery
// the claim turns into a no-op.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/dispatch"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

// Config configures a Reconciler.
type Config struct {
	// Store is etlexec's database. Required.
	Store *store.Store
	// Redis is where tasks are checked and re-enqueued. Required.
	Redis asynq.RedisConnOpt
	// Interval is the time between passes. Defaults to IntervalDefault.
	Interval time.Duration
	// Lease is the leadership lease's TTL: a frozen or vanished leader is replaced within
	// about this long plus one Interval. Defaults to LeaseDefault.
	Lease time.Duration
	// TimeoutGrace is how long after a run's deadline its workers may still record the
	// attempts they were running before the reconciler closes them. Defaults to
	// TimeoutGraceDefault.
	TimeoutGrace time.Duration
	// BatchSize bounds the rows one statement reads or changes. Defaults to BatchSizeDefault.
	BatchSize int
	// ActiveScan bounds the active tasks read per queue and pass. Defaults to ActiveScanDefault.
	ActiveScan int
	// Name labels this replica in dw_etl_leases.
	Name string
	// Logger receives one line per pass that changed something and one per repair.
	Logger zerolog.Logger
}

// Named defaults of Config.
const (
	IntervalDefault     = 30 * time.Second
	LeaseDefault        = 30 * time.Second
	TimeoutGraceDefault = 10 * time.Second
	BatchSizeDefault    = 1000
	ActiveScanDefault   = 5000
)

// LeaseName names the leadership lease.
const LeaseName = "reconciler"

// MsgRunTimeout is the message of items a run timeout ended.
const MsgRunTimeout = "run timeout"

// ErrNotLeader is returned by Once when another reconciler holds the leadership lease.
var ErrNotLeader = errors.New("another reconciler is the leader")

// Report counts what one pass did.
type Report struct {
	// WorkersDead counts workers declared dead; SessionsEnded their sessions ended.
	WorkersDead   int
	SessionsEnded int
	// AttemptsLost counts attempts closed "worker lost"; ItemsRetried their items put back to
	// PENDING, ItemsFailed those failed (out of lost attempts, or suspects).
	AttemptsLost int
	ItemsRetried int
	ItemsFailed  int
	// RunsTimedOut counts runs past their deadline whose open items were failed; ItemsTimedOut
	// counts those items.
	RunsTimedOut  int
	ItemsTimedOut int
	// RunsEnqueued counts runs whose fan-out this pass finished.
	RunsEnqueued int
	// QueuesRepaired counts queues whose tasks were rebuilt (Redis lost data or evicted).
	QueuesRepaired int
	// TasksEnqueued counts tasks handed to Redis by any repair; TasksPresent those already there.
	TasksEnqueued int
	TasksPresent  int
	// TasksReplaced counts active tasks replaced (no lease, or a dead worker's).
	TasksReplaced int
	// RunsFinalised counts runs this pass finalised.
	RunsFinalised int
}

// Acted reports whether the pass changed anything.
func (r Report) Acted() bool {
	r.TasksPresent = 0
	return r != Report{}
}

// Reconciler runs reconciliation passes.
type Reconciler struct {
	cfg   Config
	log   zerolog.Logger
	lease *store.Lease
	// deficits counts consecutive passes in which a queue held fewer waiting tasks than its
	// counters say it should.
	deficits map[string]int
}

// New builds a Reconciler.
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
	if cfg.TimeoutGrace <= 0 {
		cfg.TimeoutGrace = TimeoutGraceDefault
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = BatchSizeDefault
	}
	if cfg.ActiveScan <= 0 {
		cfg.ActiveScan = ActiveScanDefault
	}
	return &Reconciler{
		cfg:      cfg,
		log:      cfg.Logger.With().Str("component", "reconciler").Logger(),
		lease:    cfg.Store.Lease(LeaseName, cfg.Name, cfg.Lease),
		deficits: map[string]int{},
	}, nil
}

// Close gives up leadership.
func (r *Reconciler) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.lease.Release(ctx)
}

// Leader reports whether this reconciler holds the leadership lease now.
func (r *Reconciler) Leader() bool { return r.lease.Held() }

// Run keeps the leadership lease (renewed a third of its TTL apart, on its own goroutine, so a
// long pass never lets it lapse) and makes a pass every Interval, and at the earliest run
// deadline, while ctx lives and it leads. It gives leadership up when it returns; it returns
// nil when ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	keepDone := make(chan struct{})
	go func() {
		defer close(keepDone)
		r.lease.Keep(ctx, func(held bool, err error) {
			switch {
			case held && err == nil:
				r.log.Info().Dur("interval", r.cfg.Interval).Dur("lease", r.cfg.Lease).Msg("reconciler is the leader")
			case !held && err == nil:
				r.log.Info().Msg("reconciler is not the leader")
			default:
				r.log.Warn().Err(err).Bool("leader", held).Msg("reconciler lease renewal failed")
			}
		})
	}()
	defer func() { <-keepDone }()
	for {
		if _, err := r.Once(ctx); err != nil && !errors.Is(err, ErrNotLeader) && ctx.Err() == nil {
			r.log.Warn().Err(err).Msg("reconcile pass failed; retrying next interval")
		}
		wait := r.nextWait(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// nextWait is the time until the next pass: Interval, or sooner when an open run's deadline
// comes first (a non-leader checks leadership at least every third of the lease).
func (r *Reconciler) nextWait(ctx context.Context) time.Duration {
	wait := r.cfg.Interval
	if !r.lease.Held() {
		return min(wait, r.cfg.Lease/3)
	}
	d, err := r.cfg.Store.NextRunDeadline(ctx)
	if err != nil || d == nil {
		return wait
	}
	now, err := r.cfg.Store.Now(ctx)
	if err != nil {
		return wait
	}
	return max(min(wait, d.Sub(now)+50*time.Millisecond), 100*time.Millisecond)
}

// Once makes one pass if this reconciler holds (or can take) the leadership lease; otherwise
// it returns ErrNotLeader. A failing step does not stop the others; their errors are joined.
func (r *Reconciler) Once(ctx context.Context) (Report, error) {
	if !r.lease.Held() {
		held, err := r.lease.TryAcquire(ctx)
		if err != nil {
			return Report{}, err
		}
		if !held {
			return Report{}, ErrNotLeader
		}
	}
	// A fresh dispatcher each pass: asynq's client never registers a queue twice, so a long-
	// lived one would leave a queue rebuilt after Redis lost its data invisible to asynqmon.
	d, err := dispatch.New(dispatch.Config{Redis: r.cfg.Redis})
	if err != nil {
		return Report{}, err
	}
	defer d.Close()
	p := &pass{r: r, d: d, jobs: map[string]store.Job{}}
	start := time.Now()
	var errs []error
	for _, step := range []struct {
		name string
		fn   func(context.Context) error
	}{
		// Dead workers first: their items need new tasks, which the Redis checks then count.
		{"dead workers", p.deadWorkers},
		{"run timeouts", p.runTimeouts},
		{"unenqueued runs", p.unenqueuedRuns},
		{"redis", p.redis},
		{"active tasks", p.activeTasks},
		{"unfinalised runs", p.unfinalisedRuns},
	} {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		if !r.lease.Held() {
			errs = append(errs, ErrNotLeader) // lost the lease mid-pass: stop acting
			break
		}
		if err := step.fn(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", step.name, err))
		}
	}
	rep := p.rep
	ev := r.log.Debug()
	if rep.Acted() {
		ev = r.log.Info()
	}
	ev.Int("workers_dead", rep.WorkersDead).Int("sessions_ended", rep.SessionsEnded).
		Int("attempts_lost", rep.AttemptsLost).Int("items_retried", rep.ItemsRetried).Int("items_failed", rep.ItemsFailed).
		Int("runs_timed_out", rep.RunsTimedOut).Int("items_timed_out", rep.ItemsTimedOut).
		Int("runs_enqueued", rep.RunsEnqueued).Int("queues_repaired", rep.QueuesRepaired).
		Int("tasks_enqueued", rep.TasksEnqueued).Int("tasks_present", rep.TasksPresent).
		Int("tasks_replaced", rep.TasksReplaced).Int("runs_finalised", rep.RunsFinalised).
		Int("errors", len(errs)).Dur("elapsed", time.Since(start)).Msg("reconcile pass")
	return rep, errors.Join(errs...)
}

// pass is one reconciliation pass.
type pass struct {
	r    *Reconciler
	d    *dispatch.Dispatcher
	rep  Report
	jobs map[string]store.Job
}

func (p *pass) job(ctx context.Context, id string) (store.Job, error) {
	if j, ok := p.jobs[id]; ok {
		return j, nil
	}
	j, err := p.r.cfg.Store.GetJob(ctx, id)
	if err != nil {
		return store.Job{}, err
	}
	p.jobs[id] = j
	return j, nil
}

// send enqueues items of one run.
func (p *pass) send(ctx context.Context, runID uuid.UUID, items []store.ItemTask) error {
	if len(items) == 0 {
		return nil
	}
	run, err := p.r.cfg.Store.GetRun(ctx, runID)
	if err != nil {
		return err
	}
	job, err := p.job(ctx, run.JobID)
	if err != nil {
		return err
	}
	sent, err := p.d.Send(ctx, job, items)
	p.rep.TasksEnqueued += sent.New
	p.rep.TasksPresent += sent.Present
	return err
}

// deadWorkers declares dead the workers whose lease lapsed, ends their sessions, closes their
// attempts and gives the items that go on a new task.
func (p *pass) deadWorkers(ctx context.Context) error {
	st := p.r.cfg.Store
	dead, err := st.DeadWorkers(ctx, p.r.cfg.BatchSize)
	if err != nil {
		return err
	}
	var errs []error
	ended := map[uuid.UUID]bool{}
	for _, w := range dead {
		ok, err := st.DeclareWorkerDead(ctx, w.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue // it renewed its lease meanwhile
		}
		log := p.r.log.With().Str("worker_id", w.ID.String()).Str("worker", w.Name).Logger()
		if !w.Stopped {
			p.rep.WorkersDead++
			n, err := st.TerminateBackends(ctx, w.AppName)
			if err != nil {
				log.Warn().Err(err).Msg("could not end the dead worker's sessions; a late commit of theirs is refused by the claim guard, but their row locks stay until the server notices")
			}
			p.rep.SessionsEnded += n
			log.Warn().Int("sessions_ended", n).Msg("worker declared dead: its liveness lease lapsed")
		}
		for {
			lost, err := st.CloseLostAttempts(ctx, w.ID, p.r.cfg.BatchSize)
			if err != nil {
				errs = append(errs, err)
				break
			}
			retry := map[uuid.UUID][]store.ItemTask{}
			for _, l := range lost {
				p.rep.AttemptsLost++
				if l.Outcome.Retry {
					p.rep.ItemsRetried++
					retry[l.RunID] = append(retry[l.RunID], store.ItemTask{RunID: l.RunID, ItemNo: l.ItemNo, Generation: l.Generation})
				} else {
					p.rep.ItemsFailed++
					ended[l.RunID] = true
				}
				log.Warn().Str("run_id", l.RunID.String()).Int32("item_no", l.ItemNo).Str("attempt_id", l.AttemptID.String()).
					Bool("retry", l.Outcome.Retry).Bool("solo_next", l.Outcome.SoloNext).Msg(l.Outcome.Message)
			}
			for runID, items := range retry {
				if err := p.send(ctx, runID, items); err != nil {
					errs = append(errs, err) // the Redis checks find them
				}
			}
			if len(lost) < p.r.cfg.BatchSize {
				break
			}
		}
		if n, err := st.CloseOrphanAttempts(ctx, w.ID); err != nil {
			errs = append(errs, err)
		} else if n > 0 {
			p.rep.AttemptsLost += int(n)
			log.Warn().Int64("attempts", n).Msg("closed the dead worker's attempts that no item names (worker lost)")
		}
	}
	for runID := range ended {
		if err := p.finalise(ctx, runID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// runTimeouts fails the open items of runs past their deadline and finalises them.
func (p *pass) runTimeouts(ctx context.Context) error {
	st := p.r.cfg.Store
	runs, err := st.TimedOutRuns(ctx, p.r.cfg.BatchSize)
	if err != nil {
		return err
	}
	var errs []error
	for _, run := range runs {
		total := 0
		for after := int32(0); ; {
			page, err := st.OpenItems(ctx, run.RunID, after, p.r.cfg.BatchSize)
			if err != nil {
				errs = append(errs, err)
				break
			}
			if len(page) == 0 {
				break
			}
			nos := make([]int32, len(page))
			for i, it := range page {
				nos[i] = it.ItemNo
			}
			settled, err := st.SettleItems(ctx, store.ReconcilerShard, run.RunID, nos, runstate.StatusFailed, etl.CategorySystem, MsgRunTimeout)
			if err != nil {
				errs = append(errs, err)
				break
			}
			total += len(settled)
			after = page[len(page)-1].ItemNo
			if len(page) < p.r.cfg.BatchSize {
				break
			}
		}
		for {
			n, err := st.CloseTimedOutClaims(ctx, run.RunID, p.r.cfg.TimeoutGrace, MsgRunTimeout, p.r.cfg.BatchSize)
			total += n
			if err != nil {
				errs = append(errs, err)
				break
			}
			if n < p.r.cfg.BatchSize {
				break
			}
		}
		if total > 0 {
			p.rep.RunsTimedOut++
			p.rep.ItemsTimedOut += total
			p.r.log.Warn().Str("job_id", run.JobID).Str("run_id", run.RunID.String()).Time("deadline", run.Deadline).
				Int("items_failed", total).Msg("run timed out; its open items failed")
		}
		if err := p.finalise(ctx, run.RunID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unenqueuedRuns finishes the fan-out of runs whose fan-out lease lapsed before they were
// marked enqueued (their enqueuer died, or a rerun's enqueue failed).
func (p *pass) unenqueuedRuns(ctx context.Context) error {
	st := p.r.cfg.Store
	ids, err := st.UnenqueuedRuns(ctx, p.r.cfg.BatchSize)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		took, err := st.TakeFanout(ctx, id, store.FanoutLeaseDefault, false)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !took {
			continue // someone else is fanning it out
		}
		n, err := p.fanout(ctx, id)
		if err != nil {
			errs = append(errs, fmt.Errorf("fan out run %s: %w", id, err))
			continue
		}
		if err := st.MarkRunEnqueued(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		p.rep.RunsEnqueued++
		p.r.log.Warn().Str("run_id", id.String()).Int("tasks", n).
			Msg("run was never marked enqueued (its enqueuer died mid-fan-out): fan-out finished")
		if err := p.finalise(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// fanout enqueues every unclaimed PENDING item of a run, renewing its fan-out lease per page.
func (p *pass) fanout(ctx context.Context, runID uuid.UUID) (int, error) {
	st := p.r.cfg.Store
	total := 0
	for after := int32(0); ; {
		page, err := st.OpenItems(ctx, runID, after, p.r.cfg.BatchSize)
		if err != nil {
			return total, err
		}
		if len(page) == 0 {
			return total, nil
		}
		if err := p.send(ctx, runID, page); err != nil {
			return total, err
		}
		total += len(page)
		if _, err := st.TakeFanout(ctx, runID, store.FanoutLeaseDefault, true); err != nil {
			return total, err
		}
		after = page[len(page)-1].ItemNo
	}
}

// redis checks each queue with open runs: its epoch marker (Redis lost data) and its waiting
// tasks against the counters (eviction).
func (p *pass) redis(ctx context.Context) error {
	st := p.r.cfg.Store
	counts, err := st.OpenRunCounts(ctx)
	if err != nil {
		return err
	}
	// Redis should hold a task for every item not settled: waiting ones pending, scheduled or
	// retrying, claimed ones active.
	open := map[string]int64{}
	for _, c := range counts {
		open[c.Queue] += c.Items - c.Settled
	}
	var errs []error
	for queue, want := range open {
		stored, err := st.RedisEpoch(ctx, queue)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		have, err := p.d.Epoch(ctx, queue)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if stored == "" || have != stored {
			// Redis lost its data (or never had our marker): mark it first, so a loss during the
			// repair is seen next pass, then enqueue every waiting item again.
			if err := p.markEpoch(ctx, queue); err != nil {
				errs = append(errs, err)
				continue
			}
			if stored != "" {
				p.r.log.Warn().Str("queue", queue).Int64("open_items", want).Msg("Redis lost this queue's data (its epoch marker is gone): re-enqueueing its waiting items from Postgres")
			}
			if err := p.repairQueue(ctx, queue, false); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		sizes, err := p.d.QueueSizes(queue)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if int64(sizes.Waiting+sizes.Active) >= want {
			delete(p.r.deficits, queue)
			continue
		}
		// Fewer tasks than open items: tasks were evicted (or are on their way in). Rebuild once
		// the deficit persists across two passes.
		p.r.deficits[queue]++
		if p.r.deficits[queue] < 2 {
			continue
		}
		delete(p.r.deficits, queue)
		p.r.log.Warn().Str("queue", queue).Int64("open_items", want).Int("redis_tasks", sizes.Waiting+sizes.Active).
			Msg("Redis holds fewer tasks than the queue has open items (evicted?): rebuilding its waiting items' tasks under new generations")
		if err := p.repairQueue(ctx, queue, true); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *pass) markEpoch(ctx context.Context, queue string) error {
	return p.d.MarkEpoch(ctx, p.r.cfg.Store, queue)
}

// repairQueue enqueues the queue's waiting items in bounded batches; with regenerate each item
// first moves to a new task generation, so a task Redis half-lost (an id that still conflicts)
// is replaced rather than trusted.
func (p *pass) repairQueue(ctx context.Context, queue string, regenerate bool) error {
	st := p.r.cfg.Store
	p.rep.QueuesRepaired++
	var after store.ItemTask
	var errs []error
	for {
		page, err := st.DeliverableItems(ctx, queue, after, p.r.cfg.BatchSize)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		if len(page) == 0 {
			return errors.Join(errs...)
		}
		after = page[len(page)-1]
		byRun := map[uuid.UUID][]store.ItemTask{}
		for _, it := range page {
			if regenerate {
				next, err := st.NextItemGeneration(ctx, it.RunID, it.ItemNo)
				if errors.Is(err, store.ErrNotFound) {
					continue // claimed or settled meanwhile
				}
				if err != nil {
					errs = append(errs, err)
					continue
				}
				it = next
			}
			byRun[it.RunID] = append(byRun[it.RunID], it)
		}
		for runID, items := range byRun {
			// One run's failure (its job's options, say) must not stop the others' repair.
			if err := p.send(ctx, runID, items); err != nil {
				errs = append(errs, err)
				p.r.log.Warn().Err(err).Str("queue", queue).Str("run_id", runID.String()).Msg("could not re-enqueue a run's tasks; carrying on")
			}
		}
		if len(page) < p.r.cfg.BatchSize {
			return errors.Join(errs...)
		}
	}
}

// activeTasks replaces item tasks asynq holds as active that nothing will run: those with no
// lease at all (asynq #1144) and those whose lease expired while their item waits unclaimed
// (the worker died between dequeue and claim). Tasks of items that settled or moved on are
// removed; tasks of items still waiting are replaced under a new generation.
func (p *pass) activeTasks(ctx context.Context) error {
	counts, err := p.r.cfg.Store.OpenRunCounts(ctx)
	if err != nil {
		return err
	}
	queues := map[string]bool{}
	for _, c := range counts {
		queues[c.Queue] = true
	}
	var errs []error
	for queue := range queues {
		active, err := p.d.ActiveTasks(ctx, queue, p.r.cfg.ActiveScan)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var suspect []dispatch.ActiveTask
		var refs []store.ItemTask
		for _, a := range active {
			if a.NoLease || a.Orphaned {
				suspect = append(suspect, a)
				refs = append(refs, store.ItemTask{RunID: a.Item.RunID, ItemNo: a.Item.ItemNo})
			}
		}
		if len(suspect) == 0 {
			continue
		}
		states, err := p.r.cfg.Store.ItemStates(ctx, refs)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		byKey := map[store.ItemTask]store.ItemState{}
		for _, s := range states {
			byKey[store.ItemTask{RunID: s.RunID, ItemNo: s.ItemNo}] = s
		}
		for _, a := range suspect {
			s, ok := byKey[store.ItemTask{RunID: a.Item.RunID, ItemNo: a.Item.ItemNo}]
			waiting := ok && s.Status == runstate.StatusPending && !s.Claimed && s.Generation == a.Item.Generation
			if ok && s.Claimed && s.Generation == a.Item.Generation {
				continue // a worker holds it; if that worker dies, the dead-worker step acts
			}
			if a.NoLease {
				if _, err := p.d.RemoveStuck(ctx, queue, a.ID); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			if !waiting {
				if a.NoLease {
					p.rep.TasksReplaced++
					p.r.log.Warn().Str("queue", queue).Str("task_id", a.ID).Msg("removed a task left active with no lease whose item is settled")
				}
				continue
			}
			next, err := p.r.cfg.Store.NextItemGeneration(ctx, a.Item.RunID, a.Item.ItemNo)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if err := p.send(ctx, next.RunID, []store.ItemTask{next}); err != nil {
				errs = append(errs, err)
				continue
			}
			p.rep.TasksReplaced++
			p.r.log.Warn().Str("queue", queue).Str("task_id", a.ID).Bool("no_lease", a.NoLease).
				Msg("a waiting item's task is stuck active (dead worker or lost lease): replaced under a new task id")
		}
	}
	return errors.Join(errs...)
}

// unfinalisedRuns finalises open runs whose counters say every item settled.
func (p *pass) unfinalisedRuns(ctx context.Context) error {
	ids, err := p.r.cfg.Store.CompleteOpenRuns(ctx, p.r.cfg.BatchSize)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if err := p.finalise(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// finalise finalises a run if all its items settled and nobody did yet.
func (p *pass) finalise(ctx context.Context, runID uuid.UUID) error {
	res, err := p.r.cfg.Store.FinaliseRun(ctx, runID)
	if err != nil || !res.Done {
		return err
	}
	p.rep.RunsFinalised++
	p.r.log.Info().Str("run_id", runID.String()).Str("status", string(res.Status)).
		Int64("items_succeeded", res.Counters.Succeeded).Int64("items_failed", res.Counters.Failed).
		Msg("run finalised by the reconciler")
	return nil
}
