package cli

import (
	"fmt"
	"net/http"

	"github.com/hibiken/asynq"
	"github.com/spf13/cobra"

	"github.com/etlexec/etlexec"
	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/config"
	"github.com/etlexec/etlexec/internal/health"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/telemetry"
)

// Worker is the root command of a worker binary running the built-in kinds plus whatever
// extra registers. It is a main of the etlexec SDK: the environment and flags become an
// etlexec.Config, and the process is an etlexec.Worker run until ctx ends.
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
			// Validated here, after the flags: the SDK would read an explicit --concurrency 0
			// as "the default" where the command refuses it.
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			sdk := sdkConfig(cfg)
			sdk.LogOutput = cmd.ErrOrStderr()
			if extra != nil {
				sdk.Kinds = etl.NewRegistry()
				extra(sdk.Kinds)
			}
			w, err := etlexec.NewWorker(sdk)
			if err != nil {
				return err
			}
			return w.Run(cmd.Context())
		},
	}
	config.BindWorker(cmd.Flags(), &cfg)
	return cmd
}

// sdkConfig is the worker's environment and flags as the SDK takes them (every field of
// config.Worker; TestSDKConfigCarriesEveryField keeps it so).
func sdkConfig(w config.Worker) etlexec.Config {
	return etlexec.Config{
		DatabaseURL: w.DatabaseURL, RedisURL: w.RedisURL, LogLevel: w.LogLevel, LogFormat: w.LogFormat,
		AllowRedisEviction: w.AllowRedisEviction, Queues: w.Queues, StrictPriority: w.StrictPriority, Concurrency: w.Concurrency,
		Prefetch: w.Prefetch, ShutdownTimeout: w.ShutdownTimeout, HTTPAddr: w.HTTPAddr, WorkerName: w.WorkerID,
		Lease: w.Lease, ReconcileInterval: w.ReconcileInterval, Linger: w.Linger,
	}
}

// healthMux serves /metrics, /healthz and /readyz for the scheduler (the worker's are the
// SDK's).
func healthMux(st *store.Store, redis asynq.RedisConnOpt, met *telemetry.Metrics) *http.ServeMux {
	return health.Mux(st.Pool(), asynq.NewInspector(redis), met.Registry)
}
