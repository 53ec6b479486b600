// Package schedule fires the cron schedules of enabled jobs: for each job whose next tick is
// due it triggers one run (trigger "schedule", scheduled_for = the tick) through the enqueuer.
//
// A tick fires exactly once however many schedulers run: the partial unique index
// dw_etl_runs_schedule_tick_idx on (job_id, scheduled_for) lets one insert win, and the losers
// count the tick as fired elsewhere. Run additionally elects one active replica with a Postgres
// advisory lock, only to avoid wasted work.
//
// The state is the record: a job's last tick is the latest scheduled_for among its runs (a job
// that never fired counts from when its definition last changed). Ticks missed while nothing
// was scheduling are reported, not replayed: only the most recent due tick fires.
//
// Specs are read with jobdef.CronParser and evaluated in UTC unless they carry CRON_TZ=.
package schedule

import (
	"context"
	"errors"
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
	// Logger receives one line per fired, skipped or failed tick and per missed-tick gap.
	Logger zerolog.Logger
}

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
	return &Scheduler{
		cfg:      cfg,
		log:      cfg.Logger.With().Str("component", "scheduler").Logger(),
		lock:     cfg.Store.Lease(LockName, cfg.Name, cfg.Lease),
		inflight: map[string]bool{},
	}, nil
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

// pass starts one trigger per job with a due tick (unless one is still in flight for it).
func (s *Scheduler) pass(ctx context.Context) (Report, *pending, error) {
	p := &pending{}
	jobs, err := s.cfg.Store.ScheduledJobTicks(ctx)
	if err != nil {
		return Report{}, p, err
	}
	now := s.cfg.Now().UTC()
	rep := Report{Jobs: len(jobs)}
	for _, job := range jobs {
		log := s.log.With().Str("job_id", job.JobID).Logger()
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
		d := dueTicks(spec, base.UTC(), now)
		if d.Count == 0 {
			continue
		}
		if !s.begin(job.JobID) {
			continue // its previous trigger is still waiting (overlap policy queue)
		}
		if d.Count > 1 {
			m := Missed{JobID: job.JobID, Count: d.Count - 1, First: d.First, Last: d.BeforeLatest, Fired: d.Latest}
			rep.Missed = append(rep.Missed, m)
			rep.MissedTicks += m.Count
			log.Warn().Int("missed_ticks", m.Count).Time("first_missed", m.First).Time("last_missed", m.Last).
				Time("scheduled_for", m.Fired).
				Msgf("missed %d ticks of job %s between %s and %s; not replayed", m.Count, job.JobID,
					m.First.Format(time.RFC3339), m.Last.Format(time.RFC3339))
		}
		p.wg.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer p.wg.Done()
			defer s.end(job.JobID)
			o := s.fire(ctx, job.JobID, d.Latest, log)
			p.mu.Lock()
			p.out = append(p.out, o)
			p.mu.Unlock()
		}()
	}
	return rep, p, nil
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
	// Latest is the tick to fire; First and BeforeLatest bound the ticks skipped (Count > 1).
	Latest, First, BeforeLatest time.Time
}

// dueTicks walks a schedule's ticks after base up to now. Its cost is linear in the ticks
// missed, which an every-minute schedule down for a year keeps near half a million cheap steps.
func dueTicks(spec cron.Schedule, base, now time.Time) due {
	var d due
	for t := spec.Next(base); !t.IsZero() && !t.After(now); t = spec.Next(t) {
		if d.Count == 1 {
			d.First = d.Latest
		}
		d.BeforeLatest = d.Latest
		d.Latest = t
		d.Count++
	}
	return d
}
