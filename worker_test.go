package etlexec_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/etlexec/etlexec"
	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/redistest"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

// syncBuffer collects the worker's log lines; the worker writes from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type greetParams struct {
	Name string `json:"name"`
}

// An embedded worker, built through the SDK only, runs a team's own kind to SUCCESS, and
// Shutdown leaves none of its goroutines behind. Not parallel: goleak compares the process's
// goroutines, so no other test of this package may run beside it.
func TestEmbeddedWorkerRunsACustomKind(t *testing.T) {
	ctx := context.Background()

	// The ledger and the queue, as the enqueuer side of a deployment sees them.
	dbURL := dbtest.URL(t)
	queue := redistest.Queue(t)
	pool, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	st := store.New(pool)
	enq, err := enqueue.New(enqueue.Config{Store: st, Redis: redistest.ConnOpt(t), Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(func() { enq.Close() })
	_, err = st.UpsertJobs(ctx, []store.JobSpec{{
		JobID: "greetings", Kind: "greet", SupportsParams: true, Strategy: "none", CursorPolicy: "run",
		Config: json.RawMessage(`{}`), OverlapPolicy: "allow", Queue: queue, MaxAttempts: 3,
		TimeoutMs: 10000, RetentionMs: 60000, Enabled: true,
	}})
	require.NoError(t, err)

	// Everything running now is the test's; the worker must leave nothing beyond it.
	before := goleak.IgnoreCurrent()

	var logs syncBuffer
	w, err := etlexec.NewWorker(etlexec.Config{
		DatabaseURL: dbURL, RedisURL: redistest.URL(), Queues: []string{queue}, Concurrency: 2,
		ShutdownTimeout: 5 * time.Second, Lease: 5 * time.Second, WorkerName: "sdk-test",
		HTTPAddr: "127.0.0.1:0", LogOutput: &logs, LogLevel: "debug",
		SkipBuiltinKinds: true,
	})
	require.NoError(t, err)
	var greeted sync.Map
	w.Register("greet", etl.Handle(func(ctx context.Context, it *etl.Item, p greetParams) error {
		if p.Name == "" {
			return etl.DataError(errors.New("no name"))
		}
		greeted.Store(p.Name, true)
		it.AddRead(1)
		it.AddWritten(1)
		return nil
	}))
	var wrapped atomic.Int64
	w.Use(func(next etl.HandlerFunc) etl.HandlerFunc {
		return func(ctx context.Context, it *etl.Item) error {
			wrapped.Add(1)
			return next(ctx, it)
		}
	})
	require.Equal(t, []string{"greet"}, w.Kinds())
	require.NoError(t, w.Start(ctx))
	require.ErrorIs(t, w.Start(ctx), etlexec.ErrStarted)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = w.Shutdown(context.Background())
		}
	})

	res, err := enq.Trigger(ctx, enqueue.Request{JobID: "greetings", Params: []json.RawMessage{
		json.RawMessage(`{"name":"ada"}`), json.RawMessage(`{"name":"grace"}`)}})
	require.NoError(t, err)
	run := waitTerminal(t, st, res.Run)
	require.Equal(t, runstate.StatusSuccess, run.Status, "worker log:\n%s", logs.String())
	require.EqualValues(t, 2, run.ItemsSucceeded)
	require.EqualValues(t, 2, run.RecordsWritten)
	_, ada := greeted.Load("ada")
	_, grace := greeted.Load("grace")
	require.True(t, ada && grace, "both items reached the typed handler")
	require.EqualValues(t, 2, wrapped.Load(), "the middleware saw every attempt")

	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, w.Shutdown(sctx))
	stopped = true
	require.NoError(t, w.Shutdown(sctx), "a second Shutdown returns the first's result")
	require.Contains(t, logs.String(), `"message":"worker stopped"`)

	// The worker started an asynq server, a heartbeat, batchers, handler runners, a reconciler
	// and its lease keeper, a run-log sink, an HTTP server and a pool; none may outlive Shutdown.
	goleak.VerifyNone(t, before)
}

// waitTerminal polls the run until it ends, for at most 30 seconds.
func waitTerminal(t *testing.T, st *store.Store, run store.Run) store.Run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := st.GetRun(ctx, run.RunID)
		require.NoError(t, err)
		if runstate.Status(got.Status).Terminal() {
			return got
		}
		select {
		case <-ctx.Done():
			t.Fatalf("run %s still %s after 30s", run.RunID, got.Status)
		case <-tick.C:
		}
	}
}

func TestNewWorkerRefusesABadConfig(t *testing.T) {
	t.Parallel()
	_, err := etlexec.NewWorker(etlexec.Config{Concurrency: -1, Lease: time.Millisecond})
	require.ErrorContains(t, err, "ETL_CONCURRENCY")
	require.ErrorContains(t, err, "ETL_LEASE")

	kinds := etl.NewRegistry()
	kinds.Register("synthetic", func(context.Context, *etl.Item) error { return nil })
	_, err = etlexec.NewWorker(etlexec.Config{Kinds: kinds})
	require.ErrorContains(t, err, "built in")
	w, err := etlexec.NewWorker(etlexec.Config{Kinds: kinds, SkipBuiltinKinds: true})
	require.NoError(t, err)
	require.Equal(t, []string{"synthetic"}, w.Kinds())
	require.ErrorIs(t, w.Shutdown(context.Background()), etlexec.ErrNotStarted)
}
