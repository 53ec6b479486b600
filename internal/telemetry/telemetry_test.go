package telemetry_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/etlexec/etlexec/internal/telemetry"
)

// The producer's trace reaches the consumer span through the task headers.
func TestTraceCrossesTaskHeaders(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})

	ctx, span := telemetry.StartEnqueue(context.Background(), "job", "run")
	headers := telemetry.Headers(ctx)
	span.End()
	if headers["traceparent"] == "" {
		t.Fatalf("no traceparent in headers %v", headers)
	}
	var seen trace.SpanContext
	h := telemetry.Middleware(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		seen = trace.SpanContextFromContext(ctx)
		return nil
	}))
	if err := h.ProcessTask(context.Background(), asynq.NewTaskWithHeaders("etl:item", nil, headers)); err != nil {
		t.Fatal(err)
	}
	if seen.TraceID() != span.SpanContext().TraceID() {
		t.Fatalf("consumer trace %s, producer trace %s", seen.TraceID(), span.SpanContext().TraceID())
	}
	if n := len(exp.GetSpans()); n != 2 {
		t.Fatalf("want producer and consumer spans, got %d", n)
	}
}

func TestMetricsRegister(t *testing.T) {
	m := telemetry.NewMetrics(nil)
	m.ObserveAttempt("job", "SUCCESS", "NONE", 0, 3, 2)
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "etlexec_records_total" {
			found = true
		}
	}
	if !found {
		t.Fatal("etlexec_records_total not exported")
	}
}

func TestServiceName(t *testing.T) {
	t.Setenv("OTEL_SERVICE_NAME", "")
	if got := telemetry.ServiceName(); got != "etlexec-telemetry" {
		t.Errorf("ServiceName() = %q for the binary telemetry.test, want etlexec-telemetry", got)
	}
	t.Setenv("OTEL_SERVICE_NAME", "orders-worker")
	if got := telemetry.ServiceName(); got != "orders-worker" {
		t.Errorf("ServiceName() = %q, want OTEL_SERVICE_NAME", got)
	}
	shutdown, err := telemetry.SetupTracing(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = shutdown(context.Background())
}

func TestRunMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := telemetry.NewRunMetrics(reg)
	m.ObserveRunEnd("orders", "FAILED", 90*time.Second)
	m.ObserveRunEnd("orders", "FAILED", time.Second)
	m.ObserveDelivery("webhook", "retry")
	if got := testutil.ToFloat64(m.Runs.WithLabelValues("orders", "FAILED")); got != 2 {
		t.Errorf("etlexec_runs_total{orders,FAILED} = %v, want 2", got)
	}
	if n := testutil.CollectAndCount(m.Duration, "etlexec_run_duration_seconds"); n != 1 {
		t.Errorf("%d duration series, want 1", n)
	}
}
