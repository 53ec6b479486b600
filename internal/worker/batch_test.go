package worker

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBatcherGroupsConcurrentRequests(t *testing.T) {
	t.Parallel()
	var calls, maxBatch atomic.Int64
	release := make(chan struct{})
	b := newBatcher(context.Background(), 50, 0, func(_ context.Context, reqs []int) ([]int, error) {
		calls.Add(1)
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
	// Wait until the requests are queued behind the blocked first batch.
	deadline := time.Now().Add(5 * time.Second)
	for len(b.ch) < 30 && time.Now().Before(deadline) {
		runtime.Gosched()
	}
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
