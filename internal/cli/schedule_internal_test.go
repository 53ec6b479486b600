package cli

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/alert"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/redistest"
)

// TestControlLoopAlertsAndCounts runs the scheduler as `enqueuer schedule` builds it: a run that
// ends FAILED reaches a real webhook receiver (signed), and /metrics counts it by job and status.
func TestControlLoopAlertsAndCounts(t *testing.T) {
	t.Parallel()
	st := dbtest.Store(t)
	enq, err := enqueue.New(enqueue.Config{Store: st, Redis: redistest.ConnOpt(t), Logger: zerolog.Nop()})
	require.NoError(t, err)

	var (
		mu     sync.Mutex
		bodies []string
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if alert.Verify("s3cret", r.Header.Get(alert.SignatureHeader), body, time.Now(), time.Minute) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		bodies = append(bodies, string(body))
		mu.Unlock()
	}))
	defer hook.Close()
	se := scheduleEnv{AlertWebhookURL: hook.URL, AlertWebhookSecret: "s3cret", AlertOn: alert.DefaultOn,
		AlertInterval: 20 * time.Millisecond, RetentionEvery: time.Hour, HistoryRetention: "90d"}
	require.NoError(t, se.validate())
	reg := prometheus.NewRegistry()
	s, err := controlLoop(st, enq, se, 90*24*time.Hour, 10*time.Millisecond, reg, zerolog.Nop())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	_, err = st.Pool().Exec(t.Context(), `INSERT INTO dw_etl_jobs (job_id, kind) VALUES ('orders', 'synthetic');
		INSERT INTO dw_etl_runs (run_id, job_id, status, exclusive, ended_at, duration_ms)
		VALUES (gen_random_uuid(), 'orders', 'FAILED', false, now(), 42000)`)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(bodies) == 1 && strings.Contains(bodies[0], `"status": "FAILED"`)
	}, 20*time.Second, 10*time.Millisecond, "the webhook got the signed run_ended event")
	mfs, err := reg.Gather()
	require.NoError(t, err)
	counted := false
	for _, mf := range mfs {
		if mf.GetName() != "etlexec_runs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			counted = labels["job_id"] == "orders" && labels["status"] == "FAILED" && m.GetCounter().GetValue() == 1
		}
	}
	require.True(t, counted, "etlexec_runs_total{job_id=orders,status=FAILED} = 1")
}

func TestScheduleEnvValidate(t *testing.T) {
	t.Parallel()
	ok := scheduleEnv{AlertOn: alert.DefaultOn, AlertInterval: time.Second, RetentionEvery: time.Hour, HistoryRetention: "90d"}
	require.NoError(t, ok.validate())
	for _, tc := range []struct {
		mod  func(*scheduleEnv)
		want string
	}{
		{func(s *scheduleEnv) { s.AlertWebhookURL = "http://x" }, "ETL_ALERT_WEBHOOK_SECRET"},
		{func(s *scheduleEnv) { s.AlertSlackURL = "hooks.slack.com/x" }, "ETL_ALERT_SLACK_URL"},
		{func(s *scheduleEnv) { s.AlertOn = []string{"BROKEN"} }, "ETL_ALERT_ON"},
		{func(s *scheduleEnv) { s.AlertInterval = 0 }, "ETL_ALERT_INTERVAL"},
		{func(s *scheduleEnv) { s.HistoryRetention = "forever" }, "ETL_HISTORY_RETENTION"},
	} {
		s := ok
		tc.mod(&s)
		err := s.validate()
		require.Error(t, err)
		require.Contains(t, err.Error(), tc.want)
	}
}
