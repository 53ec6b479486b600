package worker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBatcherGroupsConcurrentRequests(t *testing.T) {
	t.Parallel()
	var calls, maxBatch, firstBatch atomic.Int64
	release := make(chan struct{})
	b := newBatcher(context.Background(), 50, 0, func(_ context.Context, reqs []int) ([]int, error) {
		if calls.Add(1) == 1 {
			firstBatch.Store(int64(len(reqs)))
		}
		if n := int64(len(reqs)); n > maxBatch.Load() {
			maxBatch.Store(n)
		}
		<-release // the first batch is slow: the rest pile up behind it
		out := make([]int, len(reqs))
		for i, r := range reqs {
			out[i] = r * 2
		}
		return out, nil
	})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			got, err := b.do(context.Background(), i)
			if err != nil || got != 2*i {
				t.Errorf("do(%d) = %d, %v", i, got, err)
			}
		})
	}
	// Wait until every request is in the blocked first batch or queued behind it: how many the
	// first batch took depends on how the goroutines were scheduled.
	require.Eventually(t, func() bool { return firstBatch.Load()+int64(len(b.ch)) == 40 }, 10*time.Second, time.Millisecond,
		"requests never queued behind the first batch")
	close(release)
	wg.Wait()
	b.close()
	if calls.Load() >= 40 {
		t.Errorf("%d flushes for 40 concurrent requests: no grouping", calls.Load())
	}
	if maxBatch.Load() < 2 {
		t.Errorf("largest batch %d", maxBatch.Load())
	}
	if _, err := b.do(context.Background(), 1); !errors.Is(err, errBatcherClosed) {
		t.Errorf("do after close = %v, want errBatcherClosed", err)
	}
}

// TestBatcherSubmitDeliversEveryResult: submitted requests are written in batches with waited
// ones, each result reaches its callback, close flushes what is queued, and a submit after
// close is answered at once.
func TestBatcherSubmitDeliversEveryResult(t *testing.T) {
	t.Parallel()
	var flushes atomic.Int64
	b := newBatcher(context.Background(), 64, time.Millisecond, func(_ context.Context, reqs []int) ([]int, error) {
		flushes.Add(1)
		out := make([]int, len(reqs))
		for i, r := range reqs {
			out[i] = r + 1
		}
		return out, nil
	})
	var got sync.Map
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		b.submit(i, func(r int, err error) {
			defer wg.Done()
			if err != nil || r != i+1 {
				t.Errorf("submit(%d) = %d, %v", i, r, err)
			}
			got.Store(i, true)
		})
	}
	if r, err := b.do(context.Background(), 1000); err != nil || r != 1001 {
		t.Errorf("do between submits = %d, %v", r, err)
	}
	b.close()
	wg.Wait()
	n := 0
	got.Range(func(any, any) bool { n++; return true })
	if n != 200 {
		t.Errorf("%d of 200 callbacks ran", n)
	}
	if flushes.Load() >= 200 {
		t.Errorf("%d flushes for 200 submits: no grouping", flushes.Load())
	}
	closed := make(chan error, 1)
	b.submit(1, func(_ int, err error) { closed <- err })
	if err := <-closed; !errors.Is(err, errBatcherClosed) {
		t.Errorf("submit after close = %v, want errBatcherClosed", err)
	}
}
