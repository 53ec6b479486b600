package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/preflight"
	"github.com/etlexec/etlexec/internal/schedule"
	"github.com/etlexec/etlexec/internal/telemetry"
)

func init() { register(scheduleCmd) }

// scheduleHTTPAddrDefault is where `enqueuer schedule` serves /healthz and /readyz unless
// ETL_HTTP_ADDR or --http-addr says otherwise.
const scheduleHTTPAddrDefault = ":9091"

func scheduleCmd(e *env) *cobra.Command {
	var (
		interval      time.Duration
		httpAddr      string
		skipPreflight bool
	)
	httpAddr = os.Getenv("ETL_HTTP_ADDR")
	if httpAddr == "" {
		httpAddr = scheduleHTTPAddrDefault
	}
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Fire the cron schedules of enabled jobs until SIGTERM",
		Long: `Trigger one run (trigger "schedule") for each due cron tick of every enabled job with a
schedule. Run several replicas for availability: one is active (a Postgres advisory lock), and a
tick fires exactly once even if two race (a unique index on the job and the tick). Ticks missed
while no scheduler ran are logged and not replayed: only the most recent due tick fires.
Schedules are evaluated in UTC unless the spec starts with CRON_TZ=.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, redis, err := e.connect(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			if !skipPreflight {
				res, err := preflight.Check(ctx, st.Pool(), redis, preflight.Options{AllowEviction: e.cfg.AllowRedisEviction})
				for _, w := range res.Warnings {
					e.log.Warn().Str("check", "preflight").Msg(w)
				}
				if err != nil {
					return fmt.Errorf("preflight (--skip-preflight to override): %w", err)
				}
			}
			enq, err := newEnqueuer(redis, enqueue.Config{Store: st, Logger: e.log})
			if err != nil {
				return err
			}
			defer enq.Close()
			s, err := schedule.New(schedule.Config{Store: st, Enqueuer: enq, Interval: interval, Name: processLabel(), Logger: e.log})
			if err != nil {
				return err
			}
			var srv *http.Server
			if httpAddr != "" {
				srv = &http.Server{Addr: httpAddr, Handler: healthMux(st, redis, telemetry.NewMetrics(nil)), ReadHeaderTimeout: 5 * time.Second}
				go func() {
					if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
						e.log.Error().Err(err).Str("addr", httpAddr).Msg("health http server failed")
					}
				}()
			}
			e.log.Info().Dur("interval", interval).Str("http_addr", httpAddr).Msg("scheduler starting")
			runErr := s.Run(ctx)
			if srv != nil {
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = srv.Shutdown(sctx)
				cancel()
			}
			e.log.Info().Msg("scheduler stopped")
			return runErr
		},
	}
	f := cmd.Flags()
	f.DurationVar(&interval, "interval", schedule.IntervalDefault, "time between passes: the most a tick fires late")
	f.StringVar(&httpAddr, "http-addr", httpAddr, "address for /healthz and /readyz; empty disables (env ETL_HTTP_ADDR)")
	f.BoolVar(&skipPreflight, "skip-preflight", false, "start even if Redis may evict keys or Postgres commits asynchronously")
	return cmd
}

// scheduleMux serves /healthz (the process answers) and /readyz (Postgres and Redis answer).
