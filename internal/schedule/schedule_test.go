package schedule_test

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/schedule"
	"github.com/etlexec/etlexec/internal/store"
)

// clock is a fake clock shared by the schedulers of a test.
type clock struct{ t atomic.Pointer[time.Time] }

func (c *clock) set(t time.Time) { c.t.Store(&t) }
func (c *clock) now() time.Time  { return *c.t.Load() }

type bundle struct {
	st    *store.Store
	enq   *enqueue.Enqueuer
	queue string
	clock *clock
}

// t0 is when the test jobs were (re)defined.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(hhmmss string) time.Time {
	d, err := time.Parse("15:04:05", hhmmss)
	if err != nil {
		panic(err)
	}
	return t0.Add(time.Duration(d.Hour())*time.Hour + time.Duration(d.Minute())*time.Minute + time.Duration(d.Second())*time.Second)
}

func setup(t *testing.T) *bundle {
	t.Helper()
	st := dbtest.Store(t)
	enq, err := enqueue.New(enqueue.Config{Store: st, Redis: redistest.ConnOpt(t), Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { enq.Close() })
	b := &bundle{st: st, enq: enq, queue: redistest.Queue(t), clock: &clock{}}
	b.clock.set(t0)
	return b
}

// job defines a scheduled job as of t0.
func (b *bundle) job(t *testing.T, id, spec, overlap string) {
	t.Helper()
	_, err := b.st.UpsertJobs(t.Context(), []store.JobSpec{{
		JobID: id, Kind: "test", Strategy: "none", CursorPolicy: "run", Config: json.RawMessage(`{}`),
		Schedule: &spec, OverlapPolicy: overlap, Queue: b.queue, MaxAttempts: 1, TimeoutMs: 10000,
		RetentionMs: 60000, Enabled: true,
	}})
	require.NoError(t, err)
	_, err = b.st.Pool().Exec(t.Context(), `UPDATE dw_etl_jobs SET updated_at = $2 WHERE job_id = $1`, id, t0)
	require.NoError(t, err)
}

func (b *bundle) scheduler(t *testing.T) *schedule.Scheduler {
	t.Helper()
	s, err := schedule.New(schedule.Config{Store: b.st, Enqueuer: b.enq, Now: b.clock.now, Interval: 10 * time.Millisecond, Logger: zerolog.Nop()})
	require.NoError(t, err)
	return s
}

type tickRun struct {
	ScheduledFor time.Time
	Status       string
	Trigger      string
}

func (b *bundle) runs(t *testing.T, jobID string) []tickRun {
	t.Helper()
	rows, err := b.st.Pool().Query(t.Context(), `SELECT scheduled_for, status, trigger FROM dw_etl_runs
		WHERE job_id = $1 ORDER BY scheduled_for`, jobID)
	require.NoError(t, err)
	defer rows.Close()
	var out []tickRun
	for rows.Next() {
		var r tickRun
		require.NoError(t, rows.Scan(&r.ScheduledFor, &r.Status, &r.Trigger))
		r.ScheduledFor = r.ScheduledFor.UTC()
		out = append(out, r)
	}
	require.NoError(t, rows.Err())
	return out
}

func ticks(runs []tickRun) []time.Time {
	out := make([]time.Time, len(runs))
	for i, r := range runs {
		out[i] = r.ScheduledFor
	}
	return out
}

func TestConcurrentSchedulersFireEachTickOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "every5", "*/5 * * * *", "allow")
	s1, s2 := b.scheduler(t), b.scheduler(t)

	tickAll := func() schedule.Report {
		var (
			mu  sync.Mutex
			sum schedule.Report
			wg  sync.WaitGroup
		)
		for i := range 8 {
			s := s1
			if i%2 == 1 {
				s = s2
			}
			wg.Go(func() {
				rep, err := s.Tick(context.Background())
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				sum.Fired += rep.Fired
				sum.AlreadyFired += rep.AlreadyFired
				sum.Errors += rep.Errors
				mu.Unlock()
			})
		}
		wg.Wait()
		t.Logf("fired %d, already fired elsewhere %d", sum.Fired, sum.AlreadyFired)
		return sum
	}

	b.clock.set(at("00:04:59"))
	require.Zero(t, tickAll().Fired, "no tick due yet")

	b.clock.set(at("00:05:30"))
	sum := tickAll()
	require.Equal(t, 1, sum.Fired)
	require.Zero(t, sum.Errors)

	b.clock.set(at("00:10:00"))
	sum = tickAll()
	require.Equal(t, 1, sum.Fired)
	require.Zero(t, sum.Errors)

	runs := b.runs(t, "every5")
	require.Equal(t, []time.Time{at("00:05:00"), at("00:10:00")}, ticks(runs))
	for _, r := range runs {
		require.Equal(t, schedule.TriggerSchedule, r.Trigger)
	}
}

func TestMissedTicksAreReportedNotReplayed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "every5", "*/5 * * * *", "allow")
	s := b.scheduler(t)

	b.clock.set(at("00:05:30"))
	rep, err := s.Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, schedule.Report{Jobs: 1, Fired: 1}, rep)

	// Everything was down from 00:06 to 00:31: ticks 00:10 … 00:30 fell due.
	b.clock.set(at("00:31:00"))
	rep, err = s.Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, schedule.Report{Jobs: 1, Fired: 1, MissedTicks: 4, Missed: []schedule.Missed{{
		JobID: "every5", Count: 4, First: at("00:10:00"), Last: at("00:25:00"), Fired: at("00:30:00"),
	}}}, rep)
	require.Equal(t, []time.Time{at("00:05:00"), at("00:30:00")}, ticks(b.runs(t, "every5")))

	rep, err = s.Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, schedule.Report{Jobs: 1}, rep, "nothing more is due")
}

func TestFirstTickCountsFromTheDefinition(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "hourly", "@hourly", "allow")
	_, err := b.st.Pool().Exec(t.Context(), `UPDATE dw_etl_jobs SET updated_at = $1`, at("00:20:00"))
	require.NoError(t, err)
	s := b.scheduler(t)

	b.clock.set(at("00:59:59"))
	rep, err := s.Tick(t.Context())
	require.NoError(t, err)
	require.Zero(t, rep.Fired, "00:00 passed before the job existed")

	b.clock.set(at("01:00:01"))
	rep, err = s.Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, schedule.Report{Jobs: 1, Fired: 1}, rep)
	require.Equal(t, []time.Time{at("01:00:00")}, ticks(b.runs(t, "hourly")))
}

func TestOverlapSkipConsumesTheTick(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "skip", "*/5 * * * *", "skip")
	s := b.scheduler(t)

	b.clock.set(at("00:05:00"))
	rep, err := s.Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, rep.Fired)

	// No worker runs here: the 00:05 run is still active at 00:10.
	b.clock.set(at("00:10:00"))
	rep, err = s.Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, schedule.Report{Jobs: 1, Skipped: 1}, rep)
	runs := b.runs(t, "skip")
	require.Equal(t, []time.Time{at("00:05:00"), at("00:10:00")}, ticks(runs))
	require.Equal(t, "SKIPPED", runs[1].Status)

	rep, err = s.Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, schedule.Report{Jobs: 1}, rep)
}

func TestBadSpecIsReportedAndOthersFire(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "good", "*/5 * * * *", "allow")
	b.job(t, "bad", "*/5 * * * *", "allow")
	_, err := b.st.Pool().Exec(t.Context(), `UPDATE dw_etl_jobs SET schedule = 'every tuesday' WHERE job_id = 'bad'`)
	require.NoError(t, err)

	b.clock.set(at("00:05:00"))
	rep, err := b.scheduler(t).Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, schedule.Report{Jobs: 2, Fired: 1, Errors: 1}, rep)
}

func TestRunElectsOneLeader(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "every5", "*/5 * * * *", "allow")
	b.clock.set(at("00:05:00"))
	s1, s2 := b.scheduler(t), b.scheduler(t)

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for _, s := range []*schedule.Scheduler{s1, s2} {
		wg.Go(func() {
			if err := s.Run(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	require.Eventually(t, func() bool {
		return len(b.runs(t, "every5")) == 1 && s1.Leader() != s2.Leader()
	}, 10*time.Second, 10*time.Millisecond)
	cancel()
	wg.Wait()
	require.Len(t, b.runs(t, "every5"), 1)
}
