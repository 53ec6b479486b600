// Package health owns the operations endpoints of a long-running etlexec process (worker,
// scheduler, `enqueuer serve`): /healthz (the process answers), /readyz (its dependencies
// answer) and, for the worker and the scheduler, /metrics.
package health

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyTimeout bounds all the dependency checks of one /readyz request.
const ReadyTimeout = 2 * time.Second

// Check is one dependency /readyz asks, named in the answer when it fails.
type Check struct {
	Name string
	Ping func(ctx context.Context) error
}

// Postgres checks that pool answers a ping.
func Postgres(pool *pgxpool.Pool) Check {
	return Check{Name: "postgres", Ping: pool.Ping}
}

// Redis checks that Redis answers, through ping (an asynq inspector's or a go-redis client's).
func Redis(ping func(ctx context.Context) error) Check {
	return Check{Name: "redis", Ping: ping}
}

// InspectorPing asks Redis for asynq's queues: what a worker needs Redis for.
func InspectorPing(insp *asynq.Inspector) func(context.Context) error {
	return func(context.Context) error {
		_, err := insp.Queues()
		return err
	}
}

// Live answers /healthz: the process serves requests.
func Live(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }

// Ready answers /readyz: 200 "ready" when every check passes within ReadyTimeout, else 503
// naming the first check that failed and why.
func Ready(checks ...Check) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), ReadyTimeout)
		defer cancel()
		for _, c := range checks {
			if err := c.Ping(ctx); err != nil {
				http.Error(w, c.Name+": "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	}
}

// Mux serves the worker's and the scheduler's endpoints: /metrics from reg, /healthz, and
// /readyz pinging pool and asking Redis for its queues through insp. The caller owns pool and
// insp (and closes them after the server).
func Mux(pool *pgxpool.Pool, insp *asynq.Inspector, reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", Live)
	mux.Handle("GET /readyz", Ready(Postgres(pool), Redis(InspectorPing(insp))))
	return mux
}
