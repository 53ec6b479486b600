package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

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
	_ = config.Load(&cfg)
	cfg.WithDefaults()
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run etlexec items from the queues until SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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

func runWorker(ctx context.Context, cmd *cobra.Command, cfg config.Worker, reg *etl.Registry) error {
	base := NewLogger(cmd.ErrOrStderr(), cfg.LogLevel, cfg.LogFormat)
	st, err := store.ConnectSized(ctx, cfg.DatabaseURL, store.PoolSizeFor(cfg.Concurrency))
	if err != nil {
		return err
	}
	defer st.Close()
	redis, err := parseRedisURL(cfg.RedisURL)
	if err != nil {
		return err
	}
	pre, err := preflight.Check(ctx, st.Pool(), redis)
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
	w, err := worker.New(worker.Config{
		Store: st, Redis: redis, Registry: reg, Queues: cfg.Queues, Concurrency: cfg.Concurrency,
		ShutdownTimeout: cfg.ShutdownTimeout, Lease: cfg.Lease, WorkerID: cfg.WorkerID, Logger: log,
		OnSecrets: logs.addSecrets, Metrics: met,
	})
	if err != nil {
		return err
	}
	// Every worker runs a reconciler; only the holder of its advisory lock acts.
	rec, err := reconcile.New(reconcile.Config{Store: st, Redis: redis,
		Interval: cfg.ReconcileInterval, Lease: cfg.Lease, Logger: log})
	if err != nil {
		return err
	}
	recCtx, stopRec := context.WithCancel(context.WithoutCancel(ctx))
	recDone := make(chan error, 1)
	go func() { recDone <- rec.Run(recCtx) }()
	defer func() { stopRec(); <-recDone; rec.Close() }()
	var srv *http.Server
	if cfg.HTTPAddr != "" {
		srv = &http.Server{Addr: cfg.HTTPAddr, Handler: opsMux(st, redis, met), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error().Err(err).Str("addr", cfg.HTTPAddr).Msg("ops http server failed")
			}
		}()
	}
	log.Info().Str("worker_id", w.ID()).Strs("queues", cfg.Queues).Int("concurrency", cfg.Concurrency).
		Strs("kinds", reg.Kinds()).Str("database_url", config.Redact(cfg.DatabaseURL)).Msg("worker starting")
	runErr := w.Run(ctx)
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	logs.close(closeCtx)
	log.Info().Msg("worker stopped")
	return runErr
}

// opsMux serves /healthz (the process answers), /readyz (Postgres and Redis answer).
func opsMux(st *store.Store, redis asynq.RedisConnOpt, met *telemetry.Metrics) *http.ServeMux {
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
