package limits_test

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/limits"
	"github.com/etlexec/etlexec/internal/redistest"
)

// newLimits returns n Limits, each with its own Redis client (as n worker processes have), in
// a key namespace of this test's own.
func newLimits(t *testing.T, n int, lease time.Duration) ([]*limits.Limits, redis.UniversalClient) {
	t.Helper()
	prefix := "etlexec:{" + redistest.Queue(t) + "}"
	var out []*limits.Limits
	var rdb redis.UniversalClient
	for range n {
		c, ok := redistest.ConnOpt(t).MakeRedisClient().(redis.UniversalClient)
		require.True(t, ok)
		t.Cleanup(func() { _ = c.Close() })
		l, err := limits.New(limits.Config{Redis: c, Prefix: prefix, Lease: lease})
		require.NoError(t, err)
		out = append(out, l)
		rdb = c
	}
	return out, rdb
}

func TestSemaphore(t *testing.T) {
	t.Parallel()
	ctx := t.Context()

	t.Run("SharedAcrossProcesses", func(t *testing.T) {
		t.Parallel()
		ls, _ := newLimits(t, 3, 30*time.Second)
		s1, ok, err := ls[0].TryAcquire(ctx, "job", 2)
		require.NoError(t, err)
		require.True(t, ok)
		_, ok, err = ls[1].TryAcquire(ctx, "job", 2)
		require.NoError(t, err)
		require.True(t, ok)
		_, ok, err = ls[2].TryAcquire(ctx, "job", 2)
		require.NoError(t, err)
		require.False(t, ok, "a third holder of a limit of 2")
		_, ok, err = ls[2].TryAcquire(ctx, "other_job", 2)
		require.NoError(t, err)
		require.True(t, ok, "jobs have semaphores of their own")

		require.NoError(t, s1.Release(ctx))
		require.NoError(t, s1.Release(ctx), "a second release does nothing")
		_, ok, err = ls[2].TryAcquire(ctx, "job", 2)
		require.NoError(t, err)
		require.True(t, ok, "the released slot is free")
		require.Equal(t, 0, ls[0].Held())
		require.Equal(t, 2, ls[2].Held())
	})

	t.Run("LeaseLapsesWithoutRenewal", func(t *testing.T) {
		t.Parallel()
		ls, _ := newLimits(t, 2, time.Second)
		_, ok, err := ls[0].TryAcquire(ctx, "job", 1)
		require.NoError(t, err)
		require.True(t, ok)
		start := time.Now()
		require.Eventually(t, func() bool {
			_, ok, err := ls[1].TryAcquire(ctx, "job", 1)
			require.NoError(t, err)
			return ok
		}, 5*time.Second, 50*time.Millisecond, "a dead holder's slot comes back after its lease")
		require.GreaterOrEqual(t, time.Since(start), 900*time.Millisecond, "not before the lease ends")
	})

	t.Run("RenewedSlotHolds", func(t *testing.T) {
		t.Parallel()
		ls, _ := newLimits(t, 2, time.Second)
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- ls[0].Run(rctx) }()
		defer func() { stop(); <-done }()
		_, ok, err := ls[0].TryAcquire(ctx, "job", 1)
		require.NoError(t, err)
		require.True(t, ok)
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
			_, ok, err := ls[1].TryAcquire(ctx, "job", 1)
			require.NoError(t, err)
			require.False(t, ok, "a renewed slot is never given to another holder")
			time.Sleep(100 * time.Millisecond) // polling interval of a check over 3 leases
		}
	})

	t.Run("LostKeysComeBackAtRenewal", func(t *testing.T) {
		t.Parallel()
		ls, rdb := newLimits(t, 2, 30*time.Second)
		_, ok, err := ls[0].TryAcquire(ctx, "job", 1)
		require.NoError(t, err)
		require.True(t, ok)
		require.NoError(t, rdb.Del(ctx, ls[0].RunningKey("job")).Err())
		require.NoError(t, ls[0].Renew(ctx))
		n, err := rdb.ZCard(ctx, ls[0].RunningKey("job")).Result()
		require.NoError(t, err)
		require.EqualValues(t, 1, n, "the holder's renewal puts its slot back")
		_, ok, err = ls[1].TryAcquire(ctx, "job", 1)
		require.NoError(t, err)
		require.False(t, ok)
	})
}

func TestSourceRate(t *testing.T) {
	t.Parallel()
	const (
		rate  = 20
		burst = 3
		total = 45
	)
	ls, _ := newLimits(t, 3, 30*time.Second)
	r := limits.Rate{Source: "crm_api", Rate: rate, Burst: burst, Period: time.Second}
	var (
		mu    sync.Mutex
		times []time.Time
		wg    sync.WaitGroup
	)
	start := time.Now()
	for i := range total {
		wg.Go(func() {
			require.NoError(t, ls[i%len(ls)].Source(r).Wait(t.Context()))
			mu.Lock()
			times = append(times, time.Now())
			mu.Unlock()
		})
	}
	wg.Wait()
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	require.LessOrEqual(t, maxInWindow(times, time.Second), rate+burst, "requests in the busiest second")
	// 45 requests at 20/s with 3 at once take about (45-3)/20 s.
	require.Greater(t, time.Since(start), 1800*time.Millisecond)

	t.Run("DeadlineBeforeNextRequest", func(t *testing.T) {
		slow := limits.Rate{Source: "slow_api", Rate: 1, Burst: 1, Period: time.Hour}
		require.NoError(t, ls[0].Source(slow).Wait(t.Context()))
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		begun := time.Now()
		err := ls[1].Source(slow).Wait(ctx)
		require.ErrorIs(t, err, limits.ErrRateWait)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Less(t, time.Since(begun), 500*time.Millisecond, "no wait for a request that cannot come in time")
	})
}

// maxInWindow is the most timestamps (sorted) within any window of length w.
func maxInWindow(ts []time.Time, w time.Duration) int {
	best, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) >= w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}
