package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/limits"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/task"
)

// Fleet limits (docs/operating.md, "Concurrency and rate limits"): a job's max_running_items is
// a semaphore in Redis whose slot a delivery takes before it claims its item in Postgres and
// gives back once the item's end is recorded, so the attempts the ledger shows running never
// outnumber the limit; a delivery that finds every slot taken goes back to the queue without an
// attempt. A named source's rate is a bucket in Redis that handlers wait on (etl.Item.Wait).

const (
	// limitRefresh is how long a worker trusts what it read of a run's limit or a source's
	// rate: a `jobs apply` reaches every worker within it.
	limitRefresh = 15 * time.Second
	// atLimitDelay is the least a delivery that found no free slot waits before it comes back
	// (plus up to as much again, so bounced deliveries do not return in step); asynq moves due
	// retries to pending once a second (DelayedTaskCheckInterval), so it comes back in 1-2 s.
	atLimitDelay = 500 * time.Millisecond
)

// errAtLimit marks a delivery sent back because its job runs max_running_items items already:
// not an attempt, not a failure (asynq's retry budget is not spent, see IsFailure).
var errAtLimit = errors.New("job at max_running_items")

// ttlCache keeps values read from Postgres for limitRefresh.
type ttlCache[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]ttlEntry[V]
}

type ttlEntry[V any] struct {
	v  V
	at time.Time
}

func newTTLCache[K comparable, V any]() *ttlCache[K, V] {
	return &ttlCache[K, V]{m: map[K]ttlEntry[V]{}}
}

// get returns k's value, reading it with load when absent or older than limitRefresh.
func (c *ttlCache[K, V]) get(ctx context.Context, k K, load func(context.Context, K) (V, error)) (V, error) {
	now := time.Now()
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < limitRefresh {
		return e.v, nil
	}
	v, err := load(ctx, k)
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	if len(c.m) > 10000 { // runs come and go: forget the stale ones now and then
		for k2, e2 := range c.m {
			if now.Sub(e2.at) >= limitRefresh {
				delete(c.m, k2)
			}
		}
	}
	c.m[k] = ttlEntry[V]{v: v, at: now}
	c.mu.Unlock()
	return v, nil
}

// runningSlot takes a slot of the item's job when the job has a max_running_items, before the
// item is claimed. A nil slot with a nil error means no limit applies; an error is what
// HandleItem answers asynq.
func (w *Worker) runningSlot(ctx context.Context, p task.Item) (*limits.Slot, error) {
	lim, err := w.runLimits.get(ctx, p.RunID, func(ctx context.Context, id uuid.UUID) (store.RunLimit, error) {
		var l store.RunLimit
		err := store.Retry(ctx, store.RetryBookkeeping, func(ctx context.Context) error {
			var err error
			l, err = w.cfg.Store.GetRunLimit(ctx, id)
			return err
		})
		return l, err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil // the claim says what to do with an unknown run's task
	case err != nil:
		return nil, task.RetryIn(err, infraRetryDelay)
	case lim.MaxRunning <= 0:
		return nil, nil
	}
	slot, ok, err := w.limits.TryAcquire(ctx, lim.JobID, lim.MaxRunning)
	if err != nil {
		return nil, task.RetryIn(err, infraRetryDelay)
	}
	if !ok {
		w.cfg.Metrics.ObserveAtLimit(lim.JobID)
		delay := atLimitDelay + rand.N(atLimitDelay)
		return nil, task.RetryIn(fmt.Errorf("%w: job %s runs %d items already; delivery back in %s",
			errAtLimit, lim.JobID, lim.MaxRunning, delay.Round(time.Millisecond)), delay)
	}
	return slot, nil
}

// releaseSlot gives a running slot back in the background (ends are recorded on the batcher's
// goroutine, which must not wait for Redis); Run waits for these before it closes Redis.
func (w *Worker) releaseSlot(slot *limits.Slot) {
	if slot == nil {
		return
	}
	w.releasing.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := slot.Release(ctx); err != nil {
			w.log.Warn().Err(err).Msg("could not release a running slot; it lapses within the lease")
		}
	})
}

// sourceLimiter is the limiter of the job's named source, nil when it names none.
func (w *Worker) sourceLimiter(ctx context.Context, j *job) (etl.Limiter, error) {
	if j.Source == "" {
		return nil, nil
	}
	src, err := w.sources.get(ctx, j.Source, func(ctx context.Context, name string) (store.Source, error) {
		var s store.Source
		err := store.Retry(ctx, store.RetryBookkeeping, func(ctx context.Context) error {
			var err error
			s, err = w.cfg.Store.GetSource(ctx, name)
			return err
		})
		return s, err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, etl.Permanent(etl.DataError(fmt.Errorf("job %s config %s: source %q is not defined (apply a jobs file that declares it under sources:)",
			j.ID, etl.SourceKey, j.Source)))
	}
	if err != nil {
		return nil, etl.DBError(err)
	}
	return w.limits.Source(limits.Rate{Source: src.Name, Rate: int(src.Rate), Burst: int(src.Burst), Period: src.Period}), nil
}
