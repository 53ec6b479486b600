package schedule_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/schedule"
)

func (b *bundle) catchup(t *testing.T, id, policy string, limit int) {
	t.Helper()
	_, err := b.st.Pool().Exec(t.Context(), `UPDATE dw_etl_jobs SET catchup_policy = $2, catchup_limit = $3 WHERE job_id = $1`, id, policy, limit)
	require.NoError(t, err)
}

func (b *bundle) finishRuns(t *testing.T, id string) {
	t.Helper()
	_, err := b.st.Pool().Exec(t.Context(), `UPDATE dw_etl_runs SET status = 'SUCCESS', ended_at = now() WHERE job_id = $1 AND status IN ('PENDING', 'RUNNING')`, id)
	require.NoError(t, err)
}

func statuses(runs []tickRun) []string {
	out := make([]string, len(runs))
	for i, r := range runs {
		out[i] = r.Status
	}
	return out
}

func TestPausedJobDoesNotFireNorCatchUp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "every5", "*/5 * * * *", "allow")
	s := b.scheduler(t)
	_, err := b.st.PauseJob(t.Context(), "every5", "test", "maintenance")
	require.NoError(t, err)

	b.clock.set(at("00:31:00"))
	rep, err := s.Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, schedule.Report{Jobs: 1, Paused: 1}, rep)
	require.Empty(t, b.runs(t, "every5"))

	// Resumed at 00:31 (the database clock is real time, so set resumed_at to the fake clock):
	// the ticks 00:05 … 00:30 fell due while paused and stay unfired.
	_, err = b.st.ResumeJob(t.Context(), "every5")
	require.NoError(t, err)
	_, err = b.st.Pool().Exec(t.Context(), `UPDATE dw_etl_jobs SET resumed_at = $1`, at("00:31:00"))
	require.NoError(t, err)
	rep, err = s.Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, schedule.Report{Jobs: 1}, rep)
	b.clock.set(at("00:35:00"))
	rep, err = s.Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, rep.Fired)
	require.Equal(t, []time.Time{at("00:35:00")}, ticks(b.runs(t, "every5")))
}

func TestCatchupSkip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "every5", "*/5 * * * *", "allow")
	b.catchup(t, "every5", "skip", 10)
	s := b.scheduler(t)

	// Down from 00:00 to 00:23: ticks 00:05 … 00:20 are all late; one SKIPPED run records the gap.
	b.clock.set(at("00:23:00"))
	rep, err := s.Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, rep.GapsSkipped)
	require.Equal(t, 4, rep.MissedTicks)
	require.Zero(t, rep.Fired)
	runs := b.runs(t, "every5")
	require.Equal(t, []time.Time{at("00:20:00")}, ticks(runs))
	require.Equal(t, []string{"SKIPPED"}, statuses(runs))

	// On time again: 00:25 seen at 00:25:30 fires.
	b.clock.set(at("00:25:30"))
	rep, err = s.Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, rep.Fired)
	require.Equal(t, []time.Time{at("00:20:00"), at("00:25:00")}, ticks(b.runs(t, "every5")))
}

func TestCatchupEachRunsMissedTicksInOrderWithALimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "every5", "*/5 * * * *", "skip")
	b.catchup(t, "every5", "each", 3)
	s := b.scheduler(t)

	// 00:05 … 00:30 fell due (6 ticks, all late at 00:33); the limit keeps the newest 3 (00:20,
	// 00:25, 00:30) and records 00:05 … 00:15 as one SKIPPED run at 00:15.
	b.clock.set(at("00:33:00"))
	rep, err := s.Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, rep.GapsSkipped)
	require.Equal(t, 3, rep.MissedTicks)

	var fired []time.Time
	for range 3 {
		rep, err = s.Tick(t.Context())
		require.NoError(t, err)
		require.Equal(t, 1, rep.Fired, "%+v", rep)
		// The next catch-up tick waits while this run is active (overlap policy skip would
		// otherwise record it SKIPPED).
		rep, err = s.Tick(t.Context())
		require.NoError(t, err)
		runs := b.runs(t, "every5")
		fired = append(fired, runs[len(runs)-1].ScheduledFor)
		if len(fired) < 3 {
			require.Equal(t, 1, rep.Waiting, "%+v %+v", rep, b.runs(t, "every5"))
			require.Zero(t, rep.Fired)
		}
		b.finishRuns(t, "every5")
	}
	require.Equal(t, []time.Time{at("00:20:00"), at("00:25:00"), at("00:30:00")}, fired)
	runs := b.runs(t, "every5")
	require.Equal(t, []string{"SKIPPED", "SUCCESS", "SUCCESS", "SUCCESS"}, statuses(runs))
	rep, err = s.Tick(t.Context())
	require.NoError(t, err)
	require.Equal(t, schedule.Report{Jobs: 1}, rep, "caught up")
}

func TestTasksRunWhileLeader(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var n atomic.Int32
	s, err := schedule.New(schedule.Config{Store: b.st, Enqueuer: b.enq, Now: b.clock.now, Interval: 10 * time.Millisecond,
		Tasks: []schedule.Task{{Name: "count", Every: time.Millisecond, Run: func(context.Context) error { n.Add(1); return nil }}}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	require.Eventually(t, func() bool { return n.Load() >= 3 }, 10*time.Second, 5*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	_, err = schedule.New(schedule.Config{Store: b.st, Enqueuer: b.enq, Tasks: []schedule.Task{{Name: "bad"}}})
	require.Error(t, err)
}
