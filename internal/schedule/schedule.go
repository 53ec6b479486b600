// Package schedule fires the cron schedules of enabled jobs: for each job whose next tick is
// due it triggers one run (trigger "schedule", scheduled_for = the tick) through the enqueuer.
//
// A tick fires exactly once however many schedulers run: the partial unique index
// dw_etl_runs_schedule_tick_idx on (job_id, scheduled_for) lets one insert win, and the losers
// count the tick as fired elsewhere. Run additionally elects one active replica with a Postgres
// advisory lock, only to avoid wasted work.
//
// The state is the record: a job's last tick is the latest scheduled_for among its runs (a job
// that never fired counts from when its definition last changed, or was last resumed). A
// paused job's ticks do not fire, and are not caught up when it is resumed.
//
// Ticks missed while nothing was scheduling follow the job's catch-up policy:
//   - once (the default): the most recent due tick fires; the others are reported.
//   - skip: only a tick at most Grace old fires; a gap of older ticks is recorded as one
//     SKIPPED run at its latest tick (so the gap is visible in the history) and nothing runs.
//   - each: every missed tick fires, oldest first, one at a time (the next once the job has no
//     active run, whatever its overlap policy); when more than catchup_limit fell due, the
//     oldest beyond the limit are recorded as one SKIPPED run and only the newest limit run.
//
// Leadership also runs the control loop's periodic Tasks (the alerter, the retention pass).
//
// Specs are read with jobdef.CronParser and evaluated in UTC unless they carry CRON_TZ=.
package schedule

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/robfig/cron/v3"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/jobdef"
	"github.com/etlexec/etlexec/internal/store"
)

// Config configures a Scheduler.
type Config struct {
	// Store is etlexec's database. Required.
	Store *store.Store
	// Enqueuer triggers the runs. Required.
	Enqueuer *enqueue.Enqueuer
	// Interval is the time between passes: the most a tick fires late. Defaults to
	// IntervalDefault.
	Interval time.Duration
	// Lease is the leadership lease's TTL: a frozen or vanished scheduler is replaced within
	// about this long. Defaults to LeaseDefault.
	Lease time.Duration
	// Name labels this replica in dw_etl_leases.
	Name string
	// Now is the clock ticks fall due by. Defaults to time.Now; tests inject a fake.
	Now func() time.Time
	// Grace is how late a tick may be seen and still count as on time (catch-up policy skip).
	// Defaults to GraceDefault.
	Grace time.Duration
	// Tasks run while this scheduler is the leader, each every Task.Every, one at a time per
	// task and beside the passes (a slow task never delays a tick).
	Tasks []Task
	// Logger receives one line per fired, skipped or failed tick and per missed-tick gap.
	Logger zerolog.Logger
}

// Task is periodic work of the active scheduler (the alerter, the retention pass).
type Task struct {
	Name  string
	Every time.Duration
	Run   func(ctx context.Context) error
}

// GraceDefault is the default Config.Grace.
const GraceDefault = time.Minute

// IntervalDefault is the default Config.Interval.
const IntervalDefault = time.Second

// LeaseDefault is the default Config.Lease.
const LeaseDefault = 30 * time.Second

// LockName names the leadership lease whose holder is the active scheduler.
const LockName = "scheduler"

// TriggerSchedule is the trigger recorded on scheduled runs.
const TriggerSchedule = "schedule"

// Report counts what one pass did.
type Report struct {
	// Jobs counts enabled jobs with a schedule.
	Jobs int
	// Fired counts runs this scheduler created for due ticks.
	Fired int
	// Skipped counts due ticks recorded as SKIPPED runs by the job's overlap policy.
	Skipped int
	// AlreadyFired counts due ticks another scheduler fired first.
	AlreadyFired int
	// Missed lists, per job, the ticks that fell due while nothing scheduled and were not
	// replayed; MissedTicks is their total.
	Missed      []Missed
	MissedTicks int
	// Errors counts jobs whose spec or trigger failed (each is logged).
	Errors int
	// Paused counts jobs with a schedule that are paused (their ticks do not fire).
	Paused int
	// CaughtUp counts missed ticks fired under catch-up policy each; Waiting counts jobs whose
	// next catch-up tick waits for their active run.
	CaughtUp, Waiting int
	// GapsSkipped counts gaps of missed ticks recorded as one SKIPPED run (policies skip, and
	// each beyond its limit).
	GapsSkipped int
}

// Missed is a gap of ticks of one job that were not replayed.
type Missed struct {
	JobID string
	// Count ticks, from First to Last inclusive, were skipped in favour of Fired.
	Count       int
	First, Last time.Time
	Fired       time.Time
}

// Scheduler fires cron ticks.
type Scheduler struct {
	cfg  Config
	log  zerolog.Logger
	lock *store.Lease

	mu       sync.Mutex
	inflight map[string]bool // jobs whose trigger has not returned (overlap policy queue waits)
	wg       sync.WaitGroup

	taskMu   sync.Mutex
	taskLast map[string]time.Time
	taskBusy map[string]bool
}

// New builds a Scheduler.
func New(cfg Config) (*Scheduler, error) {
	if cfg.Store == nil || cfg.Enqueuer == nil {
		return nil, errors.New("schedule config: Store and Enqueuer are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = IntervalDefault
	}
	if cfg.Lease <= 0 {
		cfg.Lease = LeaseDefault
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Grace <= 0 {
		cfg.Grace = GraceDefault
	}
	for _, t := range cfg.Tasks {
		if t.Name == "" || t.Every <= 0 || t.Run == nil {
			return nil, fmt.Errorf("schedule config: task %q needs a name, a positive Every and a Run", t.Name)
		}
	}
	return &Scheduler{
		cfg:      cfg,
		log:      cfg.Logger.With().Str("component", "scheduler").Logger(),
		lock:     cfg.Store.Lease(LockName, cfg.Name, cfg.Lease),
		inflight: map[string]bool{},
		taskLast: map[string]time.Time{},
		taskBusy: map[string]bool{},
	}, nil
}

// runTasks starts each task that is due and not still running from its last start.
func (s *Scheduler) runTasks(ctx context.Context) {
	now := time.Now()
	s.taskMu.Lock()
	defer s.taskMu.Unlock()
	for _, task := range s.cfg.Tasks {
		if s.taskBusy[task.Name] || (!s.taskLast[task.Name].IsZero() && now.Sub(s.taskLast[task.Name]) < task.Every) {
			continue
		}
		s.taskBusy[task.Name], s.taskLast[task.Name] = true, now
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := task.Run(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn().Err(err).Str("task", task.Name).Msg("control task failed; retrying at its next period")
			}
			s.taskMu.Lock()
			s.taskBusy[task.Name] = false
			s.taskMu.Unlock()
		}()
	}
}

// Leader reports whether this scheduler held the leadership lock at its last attempt.
func (s *Scheduler) Leader() bool { return s.lock.Held() }

// Run makes a pass every Interval while ctx lives and this scheduler is the leader (it tries
// to become the leader before each pass). A trigger that waits (overlap policy queue) does not
// hold up other jobs. When ctx ends, Run waits for triggers in flight (their ctx is
// cancelled too), gives leadership up, and returns nil.
func (s *Scheduler) Run(ctx context.Context) error {
	defer func() {
		s.wg.Wait()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := s.lock.Release(rctx); err != nil {
			s.log.Warn().Err(err).Msg("release scheduler leadership")
		}
	}()
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	wasLeader := false
	for {
		leader, err := s.lock.TryAcquire(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn().Err(err).Msg("scheduler leadership check failed")
		case leader && !wasLeader:
			s.log.Info().Dur("interval", s.cfg.Interval).Msg("scheduler is the leader")
		case !leader && wasLeader:
			s.log.Warn().Msg("scheduler lost leadership")
		}
		wasLeader = leader
		if leader {
			if _, _, err := s.pass(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("schedule pass failed; retrying next interval")
			}
			s.runTasks(ctx)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick makes one pass at Now() and waits for the triggers it started. It does not take
// leadership: several schedulers may tick at once and each tick still fires once.
func (s *Scheduler) Tick(ctx context.Context) (Report, error) {
	rep, p, err := s.pass(ctx)
	p.wait(&rep)
	return rep, err
}

// pending collects the outcomes of one pass's triggers.
type pending struct {
	wg  sync.WaitGroup
	mu  sync.Mutex
	out []outcome
}

type outcome int

const (
	outFired outcome = iota
	outSkipped
	outTaken
	outFailed
)

func (p *pending) wait(rep *Report) {
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range p.out {
		switch o {
		case outFired:
			rep.Fired++
		case outSkipped:
			rep.Skipped++
		case outTaken:
			rep.AlreadyFired++
		case outFailed:
			rep.Errors++
		}
	}
}

// pass starts one trigger per job with a due tick (unless one is still in flight for it),
// as the job's pause state and catch-up policy say.
func (s *Scheduler) pass(ctx context.Context) (Report, *pending, error) {
	p := &pending{}
	jobs, err := s.cfg.Store.ScheduledJobTicks(ctx)
	if err != nil {
		return Report{}, p, err
	}
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.JobID
	}
	controls, err := s.cfg.Store.JobControls(ctx, ids)
	if err != nil {
		return Report{}, p, err
	}
	now := s.cfg.Now().UTC()
	rep := Report{Jobs: len(jobs)}
	for _, job := range jobs {
		log := s.log.With().Str("job_id", job.JobID).Logger()
		c := controls[job.JobID]
		if c.Paused {
			rep.Paused++
			continue
		}
		spec, err := jobdef.CronParser.Parse(job.Schedule)
		if err != nil {
			rep.Errors++
			log.Error().Err(err).Str("schedule", job.Schedule).Msg("job schedule is not a cron spec; not scheduling it")
			continue
		}
		base := job.UpdatedAt
		if job.LastScheduledFor != nil {
			base = *job.LastScheduledFor
		}
		if c.ResumedAt != nil && c.ResumedAt.After(base) {
			base = *c.ResumedAt // ticks that fell due while paused are not caught up
		}
		limit := int(c.CatchupLimit)
		if limit < 1 {
			limit = store.CatchupLimitDefault
		}
		d := dueTicks(spec, base.UTC(), now, limit)
		if d.Count == 0 {
			continue
		}
		if !s.begin(job.JobID) {
			continue // its previous trigger is still waiting (overlap policy queue)
		}
		act := s.plan(ctx, c.CatchupPolicy, d, now, limit, job.JobID, &rep, log)
		if act.tick.IsZero() {
			s.end(job.JobID)
			continue
		}
		p.wg.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer p.wg.Done()
			defer s.end(job.JobID)
			var o outcome
			if act.skipReason != "" {
				o = s.skipGap(ctx, job.JobID, act.tick, act.skipReason, log)
			} else {
				o = s.fire(ctx, job.JobID, act.tick, log)
			}
			p.mu.Lock()
			p.out = append(p.out, o)
			p.mu.Unlock()
		}()
	}
	return rep, p, nil
}

// action is what a pass does for one job: fire tick, or record the gap up to tick as SKIPPED.
type action struct {
	tick       time.Time
	skipReason string
}

// plan applies the catch-up policy to a job's due ticks.
func (s *Scheduler) plan(ctx context.Context, policy string, d due, now time.Time, limit int, jobID string, rep *Report, log zerolog.Logger) action {
	missed := func(count int, first, last, fired time.Time, how string) {
		m := Missed{JobID: jobID, Count: count, First: first, Last: last, Fired: fired}
		rep.Missed = append(rep.Missed, m)
		rep.MissedTicks += m.Count
		log.Warn().Int("missed_ticks", m.Count).Time("first_missed", m.First).Time("last_missed", m.Last).
			Time("scheduled_for", m.Fired).Str("catchup", policy).
			Msgf("missed %d ticks of job %s between %s and %s; %s", m.Count, jobID, m.First.Format(time.RFC3339), m.Last.Format(time.RFC3339), how)
	}
	switch policy {
	case store.CatchupSkip:
		if now.Sub(d.Latest) <= s.cfg.Grace {
			if d.Count > 1 {
				missed(d.Count-1, d.First, d.BeforeLatest, d.Latest, "not replayed (catchup skip)")
			}
			return action{tick: d.Latest}
		}
		missed(d.Count, d.First, d.Latest, d.Latest, "recorded as one SKIPPED run (catchup skip)")
		rep.GapsSkipped++
		return action{tick: d.Latest, skipReason: fmt.Sprintf("skipped: %d missed ticks from %s not caught up (catchup skip)",
			d.Count, d.First.Format(time.RFC3339))}
	case store.CatchupEach:
		if d.Count > limit {
			dropped := d.Count - limit
			missed(dropped, d.First, d.Tail[len(d.Tail)-limit-1], d.Tail[len(d.Tail)-limit], fmt.Sprintf("beyond catchup_limit %d: recorded as one SKIPPED run", limit))
			rep.GapsSkipped++
			return action{tick: d.Tail[len(d.Tail)-limit-1], skipReason: fmt.Sprintf("skipped: %d missed ticks from %s beyond catchup_limit %d",
				dropped, d.First.Format(time.RFC3339), limit)}
		}
		if d.Count > 1 || now.Sub(d.First) > s.cfg.Grace {
			// One catch-up run at a time, oldest first: the next waits for the job's active run.
			if _, err := s.cfg.Store.ActiveRun(ctx, jobID); err == nil {
				rep.Waiting++
				return action{}
			}
			rep.CaughtUp++
			log.Info().Int("due_ticks", d.Count).Time("scheduled_for", d.First).Msg("catching up a missed tick (catchup each)")
		}
		return action{tick: d.First}
	default: // once
		if d.Count > 1 {
			missed(d.Count-1, d.First, d.BeforeLatest, d.Latest, "not replayed")
		}
		return action{tick: d.Latest}
	}
}

// skipGap records a gap of missed ticks as one SKIPPED run at tick, which the next pass counts
// from.
func (s *Scheduler) skipGap(ctx context.Context, jobID string, tick time.Time, reason string, log zerolog.Logger) outcome {
	id, err := uuid.NewV7()
	if err == nil {
		_, err = s.cfg.Store.CreateSkippedRun(ctx, store.NewRun{RunID: id, JobID: jobID, Trigger: TriggerSchedule,
			ScheduledFor: &tick, LogicalStart: &tick}, reason)
	}
	switch {
	case store.IsTickTaken(err):
		return outTaken
	case err != nil:
		log.Error().Err(err).Time("scheduled_for", tick).Msg("record skipped ticks failed; retried next pass")
		return outFailed
	}
	log.Info().Str("run_id", id.String()).Time("scheduled_for", tick).Str("reason", reason).Msg("missed ticks recorded as skipped")
	return outSkipped
}

func (s *Scheduler) begin(jobID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[jobID] {
		return false
	}
	s.inflight[jobID] = true
	return true
}

func (s *Scheduler) end(jobID string) {
	s.mu.Lock()
	delete(s.inflight, jobID)
	s.mu.Unlock()
}

// fire triggers the run of one tick.
func (s *Scheduler) fire(ctx context.Context, jobID string, tick time.Time, log zerolog.Logger) outcome {
	log = log.With().Time("scheduled_for", tick).Logger()
	res, err := s.cfg.Enqueuer.Trigger(ctx, enqueue.Request{JobID: jobID, Trigger: TriggerSchedule, ScheduledFor: &tick})
	switch {
	case store.IsTickTaken(err):
		log.Debug().Msg("tick already fired by another scheduler")
		return outTaken
	case err != nil && res.Run.RunID != uuid.Nil:
		// The run is recorded; the reconciler finishes its fan-out.
		log.Warn().Err(err).Str("run_id", res.Run.RunID.String()).Msg("scheduled run recorded but not fully enqueued")
		return outFired
	case err != nil && ctx.Err() != nil:
		log.Info().Err(err).Msg("scheduled trigger interrupted by shutdown; the tick fires on the next start while it is the latest")
		return outFailed
	case err != nil:
		log.Error().Err(err).Msg("scheduled trigger failed; the tick is retried next pass while it is the latest")
		return outFailed
	case res.Skipped:
		log.Info().Str("run_id", res.Run.RunID.String()).Str("reason", derefString(res.Run.ErrorMessage)).
			Msg("scheduled run skipped by overlap policy")
		return outSkipped
	default:
		log.Info().Str("run_id", res.Run.RunID.String()).Int("items", res.Items).Msg("scheduled run triggered")
		return outFired
	}
}

func derefString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// due describes the ticks of a schedule in (base, now].
type due struct {
	Count int
	// Latest is the most recent tick; First and BeforeLatest are the first and the one before
	// the latest (Count > 1).
	Latest, First, BeforeLatest time.Time
	// Tail holds the last (keep+1) ticks, oldest first.
	Tail []time.Time
}

// dueTicks walks a schedule's ticks after base up to now, keeping the last keep+1. Its cost is
// linear in the ticks missed, which an every-minute schedule down for a year keeps near half a
// million cheap steps.
func dueTicks(spec cron.Schedule, base, now time.Time, keep int) due {
	var d due
	for t := spec.Next(base); !t.IsZero() && !t.After(now); t = spec.Next(t) {
		if d.Count == 0 {
			d.First = t
		}
		d.BeforeLatest = d.Latest
		d.Latest = t
		d.Count++
		d.Tail = append(d.Tail, t)
		if len(d.Tail) > keep+1 {
			d.Tail = d.Tail[1:]
		}
	}
	return d
}
