// Package workertest runs a real enqueuer and worker inside a test, on the test's own database
// and Redis queue, with a job whose items report progress and then block until the test
// releases them: what the front ends (CLI, API, console) need to show a run with live items.
package workertest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/worker"
)

// What every blocking item reports before it blocks.
const (
	Progress = "page 3 of 9"
	Read     = 120
	Written  = 100
	Pages    = 3
	// JobID is the job whose items block.
	JobID = "blocking"
	// Lease is the worker's lease: its heartbeats, which carry progress, run a third of it apart.
	Lease = 3 * time.Second
)

// Env is an enqueuer and one worker on a test's database and Redis queue.
type Env struct {
	st      *store.Store
	enq     *enqueue.Enqueuer
	release chan struct{}
	once    sync.Once
}

// Start registers JobID on st and starts a worker for it; both stop when the test ends, after
// the blocked items are released.
func Start(t *testing.T, st *store.Store) *Env {
	t.Helper()
	q := redistest.Queue(t)
	opt := redistest.ConnOpt(t)
	e := &Env{st: st, release: make(chan struct{})}
	enq, err := enqueue.New(enqueue.Config{Store: st, Redis: opt, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("workertest: new enqueuer: %v", err)
	}
	e.enq = enq
	_, err = st.UpsertJobs(t.Context(), []store.JobSpec{{
		JobID: JobID, Kind: "blocking", SupportsParams: true, Strategy: "none", CursorPolicy: "run",
		Config: json.RawMessage(`{}`), OverlapPolicy: "allow", Queue: q, MaxAttempts: 1, TimeoutMs: 120_000,
		RetentionMs: 60_000, Enabled: true,
	}})
	if err != nil {
		t.Fatalf("workertest: upsert job %s: %v", JobID, err)
	}
	reg := etl.NewRegistry()
	reg.Register("blocking", func(ctx context.Context, it *etl.Item) error {
		it.AddRead(Read)
		it.AddWritten(Written)
		it.AddPages(Pages)
		it.SetProgress(Progress)
		select {
		case <-e.release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	w, err := worker.New(worker.Config{
		Store: st, Redis: opt, Registry: reg, Queues: []string{q}, Concurrency: 4, Prefetch: 1,
		ShutdownTimeout: time.Second, Lease: Lease, Name: "workertest", Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatalf("workertest: new worker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		e.Release()
		cancel()
		<-done
		enq.Close()
	})
	return e
}

// Trigger starts a run of JobID with n items and returns its id.
func (e *Env) Trigger(t *testing.T, n int) uuid.UUID {
	t.Helper()
	sets := make([]json.RawMessage, n)
	for i := range sets {
		sets[i] = json.RawMessage(fmt.Sprintf(`{"n":%d}`, i+1))
	}
	res, err := e.enq.Trigger(t.Context(), enqueue.Request{JobID: JobID, Params: sets})
	if err != nil {
		t.Fatalf("workertest: trigger %s: %v", JobID, err)
	}
	return res.Run.RunID
}

// Release lets every blocked item (and every later one) end with success.
func (e *Env) Release() { e.once.Do(func() { close(e.release) }) }

// Eventually polls cond every 50ms until it holds, failing the test with what after timeout.
func Eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitRun waits until the run is terminal and returns it.
func (e *Env) WaitRun(t *testing.T, runID uuid.UUID) store.Run {
	t.Helper()
	var run store.Run
	Eventually(t, 30*time.Second, "run "+runID.String()+" never ended", func() bool {
		var err error
		if run, err = e.st.GetRun(t.Context(), runID); err != nil {
			t.Fatalf("workertest: get run %s: %v", runID, err)
		}
		return run.Status.Terminal()
	})
	return run
}

// RunningWithProgress reports whether d lists item itemNo running with what its handler
// reported.
func RunningWithProgress(d store.RunDetail, itemNo int32) bool {
	for _, r := range d.Running {
		if r.ItemNo == itemNo {
			return r.Progress != nil && *r.Progress == Progress && r.RecordsRead == Read &&
				r.RecordsWritten == Written && r.PageCount == Pages
		}
	}
	return false
}
