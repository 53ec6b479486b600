package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/config"
	"github.com/etlexec/etlexec/internal/kinds"
	"github.com/etlexec/etlexec/internal/preflight"
	"github.com/etlexec/etlexec/internal/reconcile"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/telemetry"
	"github.com/etlexec/etlexec/internal/worker"
)

// Worker is the root command of a worker binary running the built-in kinds plus whatever
// extra registers.
func Worker(extra func(*etl.Registry)) *cobra.Command {
	var cfg config.Worker
	loadErr := config.Load(&cfg) // reported in RunE, where it ends the process
	cfg.WithDefaults()
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run etlexec items from the queues until SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if loadErr != nil {
				return fmt.Errorf("configuration: %w", loadErr)
			}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			reg := kinds.Builtin()
			if extra != nil {
				extra(reg)
			}
			return runWorker(cmd.Context(), cmd, cfg, reg)
		},
	}
	config.BindWorker(cmd.Flags(), &cfg)
	return cmd
}

// runWorker assembles a worker process. Start order: the stores (ledger sessions bounded, all
// sessions named after the process so a reconciler can end them), the preflight checks, the
// run-log sink, tracing, the worker, the reconciler, the HTTP endpoint. Stop order is the
// reverse, each step waiting for the one before: the worker drains its items and ends its
// liveness lease, the HTTP endpoint closes, the reconciler gives up its lease, tracing flushes,
// the log sink flushes, the pools close.
func runWorker(ctx context.Context, cmd *cobra.Command, cfg config.Worker, reg *etl.Registry) error {
	base := NewLogger(cmd.ErrOrStderr(), cfg.LogLevel, cfg.LogFormat)
	id, err := uuid.NewV7()
	if err != nil {
		return err
	}
	app := worker.AppName(id)
	// One pool serves the bookkeeping and the handlers' target transactions on etlexec's own
	// database (which lift its session bounds with SET LOCAL): a server near max_connections
	// then lends an idle bookkeeping session to a handler instead of refusing a second pool.
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{AppName: app, Bounded: true, MaxConns: int32(cfg.Concurrency + 8)})
	if err != nil {
		return err
	}
	defer st.Close()
	redis, err := parseRedisURL(cfg.RedisURL)
	if err != nil {
		return err
	}
	pre, err := preflight.Check(ctx, st.Pool(), redis, preflight.Options{AllowEviction: cfg.AllowRedisEviction})
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	for _, warn := range pre.Warnings {
		base.Warn().Msg(warn)
	}
	logs, err := newRunLogs(ctx, st, cmd.ErrOrStderr(), cfg.LogLevel, cfg.LogFormat, base)
	if err != nil {
		return err
	}
	log := logs.logger
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		logs.close(closeCtx)
		log.Info().Msg("worker stopped")
	}()
	shutdownTracing, err := telemetry.SetupTracing(ctx)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdownTracing(sctx)
	}()
	insp := asynq.NewInspector(redis)
	defer insp.Close()
	met := telemetry.NewMetrics(insp)
	queues, weights, err := cfg.QueueWeights()
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	w, err := worker.New(worker.Config{
		Store: st, Redis: redis, Registry: reg, Queues: queues, Weights: weights, StrictPriority: cfg.StrictPriority,
		Concurrency: cfg.Concurrency, Prefetch: cfg.Prefetch,
		ShutdownTimeout: cfg.ShutdownTimeout, Lease: cfg.Lease, ID: id, Name: cfg.WorkerID, Linger: cfg.Linger,
		Logger: log, OnSecrets: logs.addSecrets, Metrics: met,
	})
	if err != nil {
		return err
	}
	// Every worker runs a reconciler; only the holder of its lease acts.
	rec, err := reconcile.New(reconcile.Config{Store: st, Redis: redis, Interval: cfg.ReconcileInterval,
		Lease: cfg.Lease, Name: processLabel(), Logger: log})
	if err != nil {
		return err
	}
	recCtx, stopRec := context.WithCancel(context.WithoutCancel(ctx))
	recDone := make(chan error, 1)
	go func() { recDone <- rec.Run(recCtx) }()
	defer func() { stopRec(); <-recDone; _ = rec.Close() }()
	if cfg.HTTPAddr != "" {
		srv := &http.Server{Addr: cfg.HTTPAddr, Handler: healthMux(st, redis, met), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error().Err(err).Str("addr", cfg.HTTPAddr).Msg("ops http server failed")
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}
	log.Info().Str("worker_id", w.ID().String()).Str("worker", cfg.WorkerID).Strs("queues", cfg.Queues).Bool("strict_priority", cfg.StrictPriority).
		Int("concurrency", cfg.Concurrency).Dur("lease", cfg.Lease).Strs("kinds", reg.Kinds()).
		Str("database_url", config.Redact(cfg.DatabaseURL)).Msg("worker starting")
	return w.Run(ctx)
}

// processLabel names this process in leases and logs: host:pid.
func processLabel() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}

// healthMux serves /metrics, /healthz (the process answers) and /readyz (Postgres and Redis
// answer), for the worker and the scheduler alike.
func healthMux(st *store.Store, redis asynq.RedisConnOpt, met *telemetry.Metrics) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(met.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	insp := asynq.NewInspector(redis)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := st.Pool().Ping(ctx); err != nil {
			http.Error(w, "postgres: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if _, err := insp.Queues(); err != nil {
			http.Error(w, "redis: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// runLogs wires stdout (always) and, once available, the Postgres run-log sink.
type runLogs struct {
	logger     zerolog.Logger
	addSecrets func(vals ...string)
	close      func(ctx context.Context)
}
