package worker

import "sync"

// runners reuses goroutines for handler calls: a handler runs on a goroutine of its own (so a
// worker can give up on one that ignores cancellation), and a reused goroutine keeps the stack
// it grew, where a new one per call would grow it again every time.
type runners struct {
	mu      sync.Mutex
	idle    []chan func()
	stopped bool
}

// run calls f on an idle runner goroutine, or a new one.
func (r *runners) run(f func()) {
	r.mu.Lock()
	if n := len(r.idle); n > 0 {
		ch := r.idle[n-1]
		r.idle = r.idle[:n-1]
		r.mu.Unlock()
		ch <- f
		return
	}
	r.mu.Unlock()
	ch := make(chan func(), 1)
	ch <- f
	go r.loop(ch)
}

func (r *runners) loop(ch chan func()) {
	for f := range ch {
		f()
		r.mu.Lock()
		if r.stopped {
			r.mu.Unlock()
			return
		}
		r.idle = append(r.idle, ch)
		r.mu.Unlock()
	}
}

// stop ends the idle runner goroutines now and each busy one when its call returns (a handler
// the worker abandoned may still be running), so a stopped worker leaves none behind.
func (r *runners) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	for _, ch := range r.idle {
		close(ch)
	}
	r.idle = nil
}
