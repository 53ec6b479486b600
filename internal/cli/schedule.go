package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/etlexec/etlexec/internal/alert"
	"github.com/etlexec/etlexec/internal/config"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/preflight"
	"github.com/etlexec/etlexec/internal/retention"
	"github.com/etlexec/etlexec/internal/schedule"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/telemetry"
)

func init() { register(scheduleCmd) }

// scheduleHTTPAddrDefault is where `enqueuer schedule` serves /healthz and /readyz unless
// ETL_HTTP_ADDR or --http-addr says otherwise.
const scheduleHTTPAddrDefault = ":9091"

// scheduleEnv is the control loop's environment; flags override it.
type scheduleEnv struct {
	// HistoryRetention is the global history retention of the daily pass ("90d"; 0 keeps).
	HistoryRetention string `env:"ETL_HISTORY_RETENTION"`
	// RetentionEvery is the period of the retention pass.
	RetentionEvery time.Duration `env:"ETL_RETENTION_EVERY"`
	// AlertWebhookURL receives signed JSON run events; AlertWebhookSecret signs them.
	AlertWebhookURL    string `env:"ETL_ALERT_WEBHOOK_URL"`
	AlertWebhookSecret string `env:"ETL_ALERT_WEBHOOK_SECRET"`
	// AlertSlackURL receives Slack-compatible messages (an incoming webhook).
	AlertSlackURL string `env:"ETL_ALERT_SLACK_URL"`
	// AlertOn are the run end statuses that notify for jobs without alert_on.
	AlertOn []string `env:"ETL_ALERT_ON" envSeparator:","`
	// AlertInterval is the alerter's period.
	AlertInterval time.Duration `env:"ETL_ALERT_INTERVAL"`
	// ConsoleURL links notifications to the console (https://etl.example.com).
	ConsoleURL string `env:"ETL_CONSOLE_URL"`
}

func (se *scheduleEnv) validate() error {
	var errs []error
	for _, u := range []struct{ name, v string }{{"ETL_ALERT_WEBHOOK_URL", se.AlertWebhookURL}, {"ETL_ALERT_SLACK_URL", se.AlertSlackURL},
		{"ETL_CONSOLE_URL", se.ConsoleURL}} {
		if u.v != "" && !strings.HasPrefix(u.v, "http://") && !strings.HasPrefix(u.v, "https://") {
			errs = append(errs, fmt.Errorf("%s/--%s: %q must be an http:// or https:// URL", u.name,
				strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(u.name, "ETL_")), "_", "-"), config.Redact(u.v)))
		}
	}
	if se.AlertWebhookURL != "" && se.AlertWebhookSecret == "" {
		errs = append(errs, errors.New("ETL_ALERT_WEBHOOK_SECRET: required with ETL_ALERT_WEBHOOK_URL (receivers verify the HMAC signature)"))
	}
	for _, st := range se.AlertOn {
		if !slices.Contains(store.RunStatuses[2:], strings.ToUpper(st)) {
			errs = append(errs, fmt.Errorf("ETL_ALERT_ON/--alert-on: %q is not a run end status (want %s)", st, strings.Join(store.RunStatuses[2:], ",")))
		}
	}
	if se.AlertInterval <= 0 {
		errs = append(errs, fmt.Errorf("ETL_ALERT_INTERVAL/--alert-interval: want a positive duration, got %s", se.AlertInterval))
	}
	if se.RetentionEvery <= 0 {
		errs = append(errs, fmt.Errorf("ETL_RETENTION_EVERY/--retention-every: want a positive duration, got %s", se.RetentionEvery))
	}
	if _, err := globalRetention("ETL_HISTORY_RETENTION/--history-retention", se.HistoryRetention); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (se *scheduleEnv) destinations() []alert.Destination {
	var ds []alert.Destination
	if se.AlertWebhookURL != "" {
		ds = append(ds, alert.Destination{Name: "webhook", URL: se.AlertWebhookURL, Format: alert.FormatJSON, Secret: se.AlertWebhookSecret})
	}
	if se.AlertSlackURL != "" {
		ds = append(ds, alert.Destination{Name: "slack", URL: se.AlertSlackURL, Format: alert.FormatSlack})
	}
	return ds
}

func scheduleCmd(e *env) *cobra.Command {
	var (
		interval      time.Duration
		httpAddr      string
		skipPreflight bool
		se            scheduleEnv
	)
	httpAddr = os.Getenv("ETL_HTTP_ADDR")
	if httpAddr == "" {
		httpAddr = scheduleHTTPAddrDefault
	}
	envErr := config.Load(&se)
	if se.HistoryRetention == "" {
		se.HistoryRetention = retentionDefault()
	}
	if se.RetentionEvery == 0 {
		se.RetentionEvery = retention.EveryDefault
	}
	if se.AlertInterval == 0 {
		se.AlertInterval = alert.IntervalDefault
	}
	if se.AlertOn == nil {
		se.AlertOn = alert.DefaultOn
	}
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Fire cron schedules, send run alerts and prune old history until SIGTERM",
		Long: `The control loop. Run several replicas for availability: one is active (a Postgres advisory
lock). Schedules are evaluated in UTC unless the spec starts with CRON_TZ=.

Schedules: one run (trigger "schedule") per due cron tick of every enabled, unpaused job; a
tick fires exactly once even if two replicas race (a unique index on the job and the tick).
Ticks missed while no scheduler ran follow the job's catchup policy: once (default; only the
latest fires), skip (only an on-time tick fires; a gap is recorded as one SKIPPED run) or each
(every one, oldest first, one at a time, at most catchup_limit). A paused job's ticks do not
fire and are not caught up after resume.

Alerts (every --alert-interval): a run that ends in one of its job's alert_on statuses
(default --alert-on) or is still open after its expected_duration is sent to
ETL_ALERT_WEBHOOK_URL (JSON, X-Etlexec-Signature HMAC-SHA256 with ETL_ALERT_WEBHOOK_SECRET)
and/or ETL_ALERT_SLACK_URL (a Slack-compatible message), retried with backoff; deliveries and
attempts are recorded in Postgres. /metrics carries etlexec_runs_total{job_id,status} and
etlexec_run_duration_seconds from the ends the alerter notices.

Retention (every --retention-every, default daily, shared across replicas and restarts): the
` + "`enqueuer prune`" + ` pass with --history-retention, then the run-log partitions.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if envErr != nil {
				return fmt.Errorf("configuration: %w", envErr)
			}
			if err := se.validate(); err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			global, _ := globalRetention("--history-retention", se.HistoryRetention)
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
			shutdownTracing, err := telemetry.SetupTracing(ctx)
			if err != nil {
				return fmt.Errorf("tracing: %w", err)
			}
			defer shutdownTracing(context.WithoutCancel(ctx)) //nolint:errcheck
			enq, err := newEnqueuer(redis, enqueue.Config{Store: st, Logger: e.log, Headers: telemetry.Headers})
			if err != nil {
				return err
			}
			defer enq.Close()
			met := telemetry.NewMetrics(nil)
			s, err := controlLoop(st, enq, se, global, interval, met.Registry, e.log)
			if err != nil {
				return err
			}
			var srv *http.Server
			if httpAddr != "" {
				srv = &http.Server{Addr: httpAddr, Handler: healthMux(st, redis, met), ReadHeaderTimeout: 5 * time.Second}
				go func() {
					if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
						e.log.Error().Err(err).Str("addr", httpAddr).Msg("health http server failed")
					}
				}()
			}
			e.log.Info().Dur("interval", interval).Str("http_addr", httpAddr).Int("alert_destinations", len(se.destinations())).
				Str("history_retention", se.HistoryRetention).Msg("scheduler starting")
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
	f.StringVar(&httpAddr, "http-addr", httpAddr, "address for /metrics, /healthz and /readyz; empty disables (env ETL_HTTP_ADDR)")
	f.BoolVar(&skipPreflight, "skip-preflight", false, "start even if Redis may evict keys or Postgres commits asynchronously")
	f.StringVar(&se.HistoryRetention, "history-retention", se.HistoryRetention, "history kept for jobs without their own: 90d, 720h; 0 keeps (env ETL_HISTORY_RETENTION)")
	f.DurationVar(&se.RetentionEvery, "retention-every", se.RetentionEvery, "period of the retention pass (env ETL_RETENTION_EVERY)")
	f.StringVar(&se.AlertWebhookURL, "alert-webhook-url", se.AlertWebhookURL, "signed JSON run events go here (env ETL_ALERT_WEBHOOK_URL; secret in ETL_ALERT_WEBHOOK_SECRET)")
	f.StringVar(&se.AlertSlackURL, "alert-slack-url", se.AlertSlackURL, "Slack-compatible incoming webhook (env ETL_ALERT_SLACK_URL)")
	f.StringSliceVar(&se.AlertOn, "alert-on", se.AlertOn, "run end statuses that notify for jobs without alert_on (env ETL_ALERT_ON)")
	f.DurationVar(&se.AlertInterval, "alert-interval", se.AlertInterval, "period of the alerter (env ETL_ALERT_INTERVAL)")
	f.StringVar(&se.ConsoleURL, "console-url", se.ConsoleURL, "console base URL linked from notifications (env ETL_CONSOLE_URL)")
	return cmd
}

// controlLoop builds the scheduler of `enqueuer schedule` with its tasks: the alerter (whose
// notices of run ends feed the run metrics registered in reg) and the retention pass.
func controlLoop(st *store.Store, enq *enqueue.Enqueuer, se scheduleEnv, global, interval time.Duration,
	reg *prometheus.Registry, log zerolog.Logger) (*schedule.Scheduler, error) {
	runMet := telemetry.NewRunMetrics(reg)
	on := make([]string, len(se.AlertOn))
	for i, s := range se.AlertOn {
		on[i] = strings.ToUpper(s)
	}
	al, err := alert.New(alert.Config{Store: st, Destinations: se.destinations(), DefaultOn: on, ConsoleURL: se.ConsoleURL,
		OnRunEnd: runMet.ObserveRunEnd, OnDelivery: runMet.ObserveDelivery, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	pruner, err := retention.New(retention.Config{Store: st, Global: global, Every: se.RetentionEvery, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	return schedule.New(schedule.Config{Store: st, Enqueuer: enq, Interval: interval, Name: telemetry.ProcessLabel(), Logger: log, Tasks: []schedule.Task{
		{Name: "alerts", Every: se.AlertInterval, Run: func(ctx context.Context) error { _, err := al.Pass(ctx); return err }},
		{Name: "retention", Every: time.Minute, Run: func(ctx context.Context) error { _, err := pruner.Daily(ctx); return err }},
	}})
}
