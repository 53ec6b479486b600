// Package testfactory inserts the ledger rows tests start from — a job, an enqueued run of
// items, a registered worker — through store, with a default for every option left nil or
// zero, so a test names only what it is about:
//
//	run := testfactory.Run(ctx, t, st, &testfactory.RunOpts{Items: 4, Job: &testfactory.JobOpts{MaxAttempts: new(int32(2))}})
//	w := testfactory.Worker(ctx, t, st, nil)
//
// It is imported by tests only (the shape of riverqueue/river's internal testfactory).
package testfactory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/etlexec/etlexec/internal/store"
)

// JobOpts are a job definition's fields; nil takes the default named beside each.
type JobOpts struct {
	ID             *string // "job_" and a random suffix
	Kind           *string // "test"
	Queue          *string // "etl"
	MaxAttempts    *int32  // 1
	Timeout        *time.Duration
	RunTimeout     *time.Duration // none
	Schedule       *string        // none
	SupportsParams *bool          // true
	Enabled        *bool          // true
}

// TimeoutDefault is an item's timeout when JobOpts.Timeout is nil.
const TimeoutDefault = 10 * time.Second

// Job upserts a job definition and returns what it wrote.
func Job(ctx context.Context, tb testing.TB, st *store.Store, opts *JobOpts) store.JobSpec {
	tb.Helper()
	if opts == nil {
		opts = &JobOpts{}
	}
	j := store.JobSpec{
		JobID: valOr(opts.ID, "job_"+randomHex(4)), Kind: valOr(opts.Kind, "test"),
		SupportsParams: valOr(opts.SupportsParams, true), Strategy: "none", CursorPolicy: "run",
		Config: json.RawMessage(`{}`), Schedule: opts.Schedule, OverlapPolicy: "allow",
		Queue: valOr(opts.Queue, "etl"), MaxAttempts: valOr(opts.MaxAttempts, 1),
		TimeoutMs: valOr(opts.Timeout, TimeoutDefault).Milliseconds(), Enabled: valOr(opts.Enabled, true),
	}
	if opts.RunTimeout != nil {
		j.RunTimeoutMs = new(opts.RunTimeout.Milliseconds())
	}
	if _, err := st.UpsertJobs(ctx, []store.JobSpec{j}); err != nil {
		tb.Fatalf("testfactory: upsert job %q: %v", j.JobID, err)
	}
	return j
}

// RunOpts describe a run; zero values take the defaults named beside each.
type RunOpts struct {
	// JobID is the run's job, which must exist; when empty, Job(Job) creates one.
	JobID string
	Job   *JobOpts
	RunID *uuid.UUID // a new UUIDv7
	// Items is the number of items, 1 when zero; item n has params {"i":n} and param hash
	// "h%03d" of n.
	Items   int
	Trigger *string // "manual"
	// NotEnqueued leaves the run as a trigger that died mid fan-out leaves it: items
	// written, enqueued_at unset.
	NotEnqueued bool
}

// Run creates a run of items (enqueued unless opts.NotEnqueued) and returns it as stored.
func Run(ctx context.Context, tb testing.TB, st *store.Store, opts *RunOpts) store.Run {
	tb.Helper()
	if opts == nil {
		opts = &RunOpts{}
	}
	jobID := opts.JobID
	if jobID == "" {
		jobID = Job(ctx, tb, st, opts.Job).JobID
	}
	runID := valOr(opts.RunID, uuid.Must(uuid.NewV7()))
	items := make([]store.NewItem, max(opts.Items, 1))
	for i := range items {
		items[i] = store.NewItem{Params: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i+1)), ParamHash: fmt.Sprintf("h%03d", i+1)}
	}
	nr := store.NewRun{RunID: runID, JobID: jobID, Trigger: valOr(opts.Trigger, "manual"), Strategy: "none"}
	if _, err := st.CreateRun(ctx, nr, items, 0); err != nil {
		tb.Fatalf("testfactory: create run of %s: %v", jobID, err)
	}
	if !opts.NotEnqueued {
		if err := st.MarkRunEnqueued(ctx, runID); err != nil {
			tb.Fatalf("testfactory: %v", err)
		}
	}
	run, err := st.GetRun(ctx, runID)
	if err != nil {
		tb.Fatalf("testfactory: %v", err)
	}
	return run
}

// WorkerOpts describe a worker process; nil takes the default named beside each.
type WorkerOpts struct {
	ID      *uuid.UUID     // a new UUIDv7
	Name    *string        // "w-" and the id's first 8 characters
	Lease   *time.Duration // a minute
	AppName *string        // none
	Shard   *int16         // 7: the progress shard the returned ref writes its ends to
}

// Worker registers a live worker process and returns the ref its claims and ends carry.
func Worker(ctx context.Context, tb testing.TB, st *store.Store, opts *WorkerOpts) store.WorkerRef {
	tb.Helper()
	if opts == nil {
		opts = &WorkerOpts{}
	}
	id := valOr(opts.ID, uuid.Must(uuid.NewV7()))
	name := valOr(opts.Name, "w-"+id.String()[:8])
	info := store.WorkerInfo{ID: id, Name: name, Lease: valOr(opts.Lease, time.Minute), AppName: valOr(opts.AppName, "")}
	if err := st.RegisterWorker(ctx, info); err != nil {
		tb.Fatalf("testfactory: register worker %s: %v", name, err)
	}
	return store.WorkerRef{ID: id, Name: name, Shard: valOr(opts.Shard, 7)}
}

func valOr[T any](p *T, def T) T {
	if p != nil {
		return *p
	}
	return def
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
