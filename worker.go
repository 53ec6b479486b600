package etlexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/config"
	"github.com/etlexec/etlexec/internal/health"
	"github.com/etlexec/etlexec/internal/kinds"
	"github.com/etlexec/etlexec/internal/logsink"
	"github.com/etlexec/etlexec/internal/preflight"
	"github.com/etlexec/etlexec/internal/reconcile"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/telemetry"
	"github.com/etlexec/etlexec/internal/worker"
)

// Bounds of the shutdown steps after the items have drained; each is also bounded by the
// context given to Shutdown.
const (
	httpShutdownTimeout    = 5 * time.Second
	tracingShutdownTimeout = 5 * time.Second
	logFlushTimeout        = 10 * time.Second
	// runShutdownSlack is what Run gives Shutdown beyond the items' drain.
	runShutdownSlack = 30 * time.Second
)

var (
	// ErrStarted is returned by Start on a worker that was started before.
	ErrStarted = errors.New("etlexec: worker already started")
	// ErrNotStarted is returned by Shutdown on a worker that was never started.
	ErrNotStarted = errors.New("etlexec: worker not started")
)

// Worker is one worker process's worth of etlexec: it runs the items of the kinds it knows
// from the queues it consumes, records every attempt in Postgres, reconciles Postgres with
// Redis while it holds the reconciler lease, and serves its operations endpoints. Build it
// with NewWorker, register kinds and middleware, then either Run it (a main) or Start it and
// Shutdown it later (a service that embeds it). A Worker runs once.
type Worker struct {
	cfg Config
	reg *etl.Registry
	mws []etl.Middleware

	mu      sync.Mutex
	started bool

	// Set by Start.
	id    uuid.UUID
	base  zerolog.Logger // stdout only: reports about the log sink itself, and the last line
	log   zerolog.Logger // stdout and the run-log sink
	steps []step         // what Start started, in start order; Shutdown stops them in reverse

	// done is closed when the executor stops, on its own (runErr says why) or at Shutdown.
	done   chan struct{}
	runErr error

	stopping     chan struct{} // closed when Shutdown begins
	shutdownOnce sync.Once
	shutdownErr  error
}

// step is one started piece of the process and how to stop it.
type step struct {
	name string
	stop func(ctx context.Context) error
}

// NewWorker checks cfg and builds a worker holding the built-in kinds (unless
// cfg.SkipBuiltinKinds) and cfg.Kinds. It connects to nothing: Start does.
func NewWorker(cfg Config) (*Worker, error) {
	cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	reg := etl.NewRegistry()
	if !cfg.SkipBuiltinKinds {
		reg = kinds.Builtin()
	}
	if cfg.Kinds != nil {
		for _, kind := range cfg.Kinds.Kinds() {
			if _, dup := reg.Lookup(kind); dup {
				return nil, fmt.Errorf("etlexec: kind %q is built in; set SkipBuiltinKinds to replace it", kind)
			}
			h, _ := cfg.Kinds.Lookup(kind)
			reg.Register(kind, h)
		}
	}
	return &Worker{cfg: cfg, reg: reg, mws: append([]etl.Middleware(nil), cfg.Middleware...),
		done: make(chan struct{}), stopping: make(chan struct{})}, nil
}

// Register adds the handler of kind, as [etl.Registry.Register] does (and panics as it does:
// empty kind, nil handler, a kind registered twice). Call it before Start.
func (w *Worker) Register(kind string, h etl.HandlerFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		panic("etlexec: Register of kind " + kind + " after Start")
	}
	w.reg.Register(kind, h)
}

// Use appends middleware that wraps every kind's handler, the first outermost. Call it before
// Start.
func (w *Worker) Use(mws ...etl.Middleware) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		panic("etlexec: Use after Start")
	}
	for _, mw := range mws {
		if mw == nil {
			panic("etlexec: Use with nil middleware")
		}
	}
	w.mws = append(w.mws, mws...)
}

// Kinds lists the kinds this worker runs, sorted.
func (w *Worker) Kinds() []string { return w.reg.Kinds() }

// Run starts the worker, runs it until ctx is done (or the executor fails), then shuts it down
// in the order Shutdown documents and returns. It is what a worker main calls with a context
// that SIGTERM cancels.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.Start(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-w.done:
	case <-w.stopping:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.ShutdownTimeout+runShutdownSlack)
	defer cancel()
	return w.Shutdown(sctx)
}

// Start connects the worker and starts its pieces, in this order, each needing the ones
// before it:
//
//  1. the store: one bounded pool on etlexec's database for bookkeeping and the handlers'
//     target transactions, its sessions named after this process so a reconciler can end
//     them if it dies;
//  2. the preflight checks (Redis must not evict, Postgres must be usable), which refuse to
//     start on infrastructure that loses work;
//  3. the run-log sink, which lands the lines of runs in dw_etl_run_logs;
//  4. tracing (unless SkipTracingSetup);
//  5. the asynq inspector the metrics and /readyz read queues through;
//  6. the reconciler, on its own goroutine (only the holder of its lease acts);
//  7. the HTTP endpoint, when HTTPAddr is set (its listener is bound here, so a taken port
//     fails Start);
//  8. the executor: it registers its liveness lease and starts consuming items.
//
// When a step fails, Start stops the ones before it and returns the error. ctx bounds the
// connecting; its cancellation does not stop a started worker (Shutdown does), its values are
// kept.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return ErrStarted
	}
	w.started = true
	reg := w.registry()
	w.mu.Unlock()
	if err := w.start(ctx, reg); err != nil {
		w.shutdownOnce.Do(func() {
			close(w.stopping)
			_ = w.stop(context.WithoutCancel(ctx))
			w.shutdownErr = err
		})
		return err
	}
	return nil
}

// registry is what the executor looks kinds up in: every handler wrapped in the middleware.
func (w *Worker) registry() *etl.Registry {
	if len(w.mws) == 0 {
		return w.reg
	}
	reg := etl.NewRegistry()
	for _, kind := range w.reg.Kinds() {
		h, _ := w.reg.Lookup(kind)
		reg.Register(kind, etl.Chain(h, w.mws...))
	}
	return reg
}

func (w *Worker) start(ctx context.Context, reg *etl.Registry) error {
	cfg := w.cfg
	w.base = telemetry.NewLogger(cfg.LogOutput, cfg.LogLevel, cfg.LogFormat)
	w.log = w.base
	id, err := uuid.NewV7()
	if err != nil {
		return err
	}
	w.id = id
	redis, err := asynq.ParseRedisURI(cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}

	// 1. The store. One pool serves the bookkeeping and the handlers' target transactions on
	// etlexec's own database (which lift its session bounds with SET LOCAL): a server near
	// max_connections then lends an idle bookkeeping session to a handler instead of refusing
	// a second pool.
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{AppName: worker.AppName(id), Bounded: true,
		MaxConns: int32(cfg.Concurrency + 8)})
	if err != nil {
		return err
	}
	w.push("store", func(context.Context) error { st.Close(); return nil })

	// 2. Preflight.
	pre, err := preflight.Check(ctx, st.Pool(), redis, preflight.Options{AllowEviction: cfg.AllowRedisEviction})
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	for _, warn := range pre.Warnings {
		w.base.Warn().Msg(warn)
	}

	// 3. The run-log sink; from here on w.log tees into it.
	sink, err := logsink.New(st, logsink.Config{Logger: &w.base})
	if err != nil {
		return err
	}
	sink.Start(context.WithoutCancel(ctx))
	w.log = runLogger(cfg.LogOutput, cfg.LogLevel, cfg.LogFormat, sink)
	w.push("log sink", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, logFlushTimeout)
		defer cancel()
		err := sink.Close(ctx)
		w.base.Info().Int64("log_lines_written", sink.Written()).Int64("log_lines_dropped", sink.Dropped()).
			Msg("run logs flushed")
		w.base.Info().Msg("worker stopped")
		return err
	})

	// 4. Tracing.
	if !cfg.SkipTracingSetup {
		shutdownTracing, err := telemetry.SetupTracing(ctx)
		if err != nil {
			return fmt.Errorf("tracing: %w", err)
		}
		w.push("tracing", func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, tracingShutdownTimeout)
			defer cancel()
			return shutdownTracing(ctx)
		})
	}

	// 5. The inspector and the metrics.
	insp := asynq.NewInspector(redis)
	w.push("inspector", func(context.Context) error { return insp.Close() })
	met := telemetry.NewMetrics(insp)

	wc := cfg.worker()
	queues, weights, err := wc.QueueWeights()
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	exec, err := worker.New(worker.Config{
		Store: st, Redis: redis, Registry: reg, Queues: queues, Weights: weights, StrictPriority: cfg.StrictPriority,
		Concurrency: cfg.Concurrency,
		Prefetch:    cfg.Prefetch, ShutdownTimeout: cfg.ShutdownTimeout, Lease: cfg.Lease, ID: id,
		Name: cfg.WorkerName, Linger: cfg.Linger, Logger: w.log, OnSecrets: sink.AddSecrets, Metrics: met,
	})
	if err != nil {
		return err
	}

	// 6. The reconciler: every worker runs one; only the holder of its lease acts.
	rec, err := reconcile.New(reconcile.Config{Store: st, Redis: redis, Interval: cfg.ReconcileInterval,
		Lease: cfg.Lease, Name: telemetry.ProcessLabel(), Logger: w.log})
	if err != nil {
		return err
	}
	recCtx, stopRec := context.WithCancel(context.WithoutCancel(ctx))
	recDone := make(chan error, 1)
	go func() { recDone <- rec.Run(recCtx) }()
	w.push("reconciler", func(context.Context) error {
		stopRec()
		return errors.Join(<-recDone, rec.Close())
	})

	// 7. The HTTP endpoint.
	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("ETL_HTTP_ADDR: %w", err)
		}
		srv := &http.Server{Handler: health.Mux(st.Pool(), insp, met.Registry), ReadHeaderTimeout: 5 * time.Second}
		httpDone := make(chan struct{})
		go func() {
			defer close(httpDone)
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				w.log.Error().Err(err).Str("addr", ln.Addr().String()).Msg("ops http server failed")
			}
		}()
		w.push("http", func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, httpShutdownTimeout)
			defer cancel()
			err := srv.Shutdown(ctx)
			if err != nil {
				err = errors.Join(err, srv.Close())
			}
			<-httpDone
			return err
		})
	}

	// 8. The executor.
	w.log.Info().Str("worker_id", exec.ID().String()).Str("worker", cfg.WorkerName).Strs("queues", cfg.Queues).Bool("strict_priority", cfg.StrictPriority).
		Int("concurrency", cfg.Concurrency).Dur("lease", cfg.Lease).Strs("kinds", reg.Kinds()).
		Str("database_url", config.Redact(cfg.DatabaseURL)).Msg("worker starting")
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(w.done)
		if err := exec.Run(runCtx); err != nil {
			w.runErr = fmt.Errorf("worker: %w", err)
			w.log.Error().Err(err).Msg("worker stopped on its own")
		}
	}()
	w.push("executor", func(context.Context) error {
		stopRun()
		<-w.done
		return w.runErr
	})
	return nil
}

// push records a started step.
func (w *Worker) push(name string, stop func(ctx context.Context) error) {
	w.steps = append(w.steps, step{name: name, stop: stop})
}

// Shutdown stops the worker in the reverse of Start's order and waits for every goroutine it
// started:
//
//  1. the executor stops fetching, lets in-flight items finish within ShutdownTimeout, cancels
//     the rest, writes their attempt ends, waits for the run finalisations they started and
//     ends its liveness lease (so other workers and the reconciler see it gone at once);
//  2. the HTTP endpoint closes (a probe answers until the items are done);
//  3. the reconciler stops and gives up its lease;
//  4. the inspector closes;
//  5. tracing flushes its spans;
//  6. the run-log sink writes what it holds (the items' last lines included);
//  7. the pool closes.
//
// The items' drain is bounded by ShutdownTimeout, not by ctx; ctx bounds the flushes after it.
// Shutdown returns the joined errors of the steps, the executor's included when it had stopped
// on its own (it could not register or reach Redis); calling it again returns the same. Do not
// call it while Start is still running.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	started := w.started
	w.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	w.shutdownOnce.Do(func() {
		close(w.stopping)
		w.shutdownErr = w.stop(ctx)
	})
	return w.shutdownErr
}

// stop runs the started steps' stops in reverse order.
func (w *Worker) stop(ctx context.Context) error {
	var errs []error
	for i := len(w.steps) - 1; i >= 0; i-- {
		s := w.steps[i]
		w.base.Debug().Str("step", s.name).Msg("worker shutdown step")
		if err := s.stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", s.name, err))
		}
	}
	w.steps = nil
	return errors.Join(errs...)
}

// runLogger is the worker's logger: every line goes to out (secrets scrubbed), and lines that
// belong to a run also land in dw_etl_run_logs through the bounded, non-blocking sink.
func runLogger(out io.Writer, level, format string, sink *logsink.Sink) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	var primary io.Writer = logsink.RedactWriter(out, sink.Secrets)
	if format == "console" {
		primary = zerolog.ConsoleWriter{Out: primary}
	}
	return zerolog.New(zerolog.MultiLevelWriter(primary, sink)).Level(lvl).With().Timestamp().Logger()
}
