package worker

import (
	"context"
	"errors"
	"sync"
	"time"
)

// batcher turns concurrent single requests into batched calls (group commit): requests that
// arrive while a batch is being written wait for the next one, so N concurrent items cost one
// statement and one commit instead of N. By default it flushes eagerly — whatever is queued
// when the previous batch returns — so a lone request pays no latency; a linger trades a little
// latency for fuller batches at high concurrency. Claims and attempt ends both go through one.
type batcher[Req, Res any] struct {
	ch     chan *call[Req, Res]
	max    int
	linger time.Duration
	flush  func(ctx context.Context, reqs []Req) ([]Res, error)
	done   chan struct{}

	// mu guards closed: senders hold it shared while they send, close takes it exclusively,
	// so nobody sends on the channel once it is closed (a handler asynq abandoned at shutdown
	// gets errBatcherClosed instead of a panic).
	mu     sync.RWMutex
	closed bool
}

// errBatcherClosed answers a request that arrives after the worker stopped its bookkeeping.
var errBatcherClosed = errors.New("worker bookkeeping stopped")

type call[Req, Res any] struct {
	req  Req
	done chan result[Res]
}

type result[Res any] struct {
	res Res
	err error
}

// newBatcher starts a batcher whose flushes run under ctx (they must land even while the
// caller's own request is being cancelled; stop it with close).
func newBatcher[Req, Res any](ctx context.Context, max int, linger time.Duration,
	flush func(ctx context.Context, reqs []Req) ([]Res, error)) *batcher[Req, Res] {
	b := &batcher[Req, Res]{ch: make(chan *call[Req, Res], max), max: max, linger: linger, flush: flush, done: make(chan struct{})}
	go b.loop(ctx)
	return b
}

// do submits one request and waits for its result. It gives up waiting for a place in the
// queue when ctx ends; once queued, the request is flushed and its result awaited regardless,
// so a bookkeeping write is never abandoned half-way.
func (b *batcher[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	c := &call[Req, Res]{req: req, done: make(chan result[Res], 1)}
	var zero Res
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return zero, errBatcherClosed
	}
	select {
	case b.ch <- c:
	case <-ctx.Done():
		b.mu.RUnlock()
		return zero, ctx.Err()
	}
	b.mu.RUnlock()
	r := <-c.done
	return r.res, r.err
}

// close stops the loop once every queued request was flushed.
func (b *batcher[Req, Res]) close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.ch)
	}
	b.mu.Unlock()
	<-b.done
}

func (b *batcher[Req, Res]) loop(ctx context.Context) {
	defer close(b.done)
	calls := make([]*call[Req, Res], 0, b.max)
	reqs := make([]Req, 0, b.max)
	for first := range b.ch {
		calls = append(calls[:0], first)
		b.fill(&calls)
		reqs = reqs[:0]
		for _, c := range calls {
			reqs = append(reqs, c.req)
		}
		res, err := b.flush(ctx, reqs)
		for i, c := range calls {
			if err != nil {
				c.done <- result[Res]{err: err}
				continue
			}
			c.done <- result[Res]{res: res[i]}
		}
	}
}

// fill adds queued requests to calls: what is there now, or what arrives within the linger.
func (b *batcher[Req, Res]) fill(calls *[]*call[Req, Res]) {
	var timeout <-chan time.Time
	if b.linger > 0 {
		t := time.NewTimer(b.linger)
		defer t.Stop()
		timeout = t.C
	}
	for len(*calls) < b.max {
		if timeout == nil {
			select {
			case c, ok := <-b.ch:
				if !ok {
					return
				}
				*calls = append(*calls, c)
			default:
				return
			}
			continue
		}
		select {
		case c, ok := <-b.ch:
			if !ok {
				return
			}
			*calls = append(*calls, c)
		case <-timeout:
			return
		}
	}
}
