// Package telemetry owns etlexec's traces and metrics: the OpenTelemetry tracer provider
// (OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set), trace propagation through asynq task
// headers, the Prometheus metrics served on /metrics, and the process logger.
package telemetry

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/etlexec/etlexec/internal/runstate"
)

// TracerName is the instrumentation scope of etlexec's spans.
const TracerName = "github.com/etlexec/etlexec"

// SetupTracing installs the global tracer provider and W3C propagator. With
// OTEL_EXPORTER_OTLP_ENDPOINT set, spans are exported over OTLP/HTTP; otherwise they are
// created (so trace ids still reach logs) but not exported. The returned func flushes.
func SetupTracing(ctx context.Context) (func(context.Context) error, error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(ServiceName())))
	if err != nil {
		return nil, err
	}
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES still win: read them last.
	if res, err = resource.Merge(res, resource.Environment()); err != nil {
		return nil, err
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" {
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// ServiceName is the OpenTelemetry service.name of this process: "etlexec-" and the binary's
// name ("etlexec-enqueuer", "etlexec-worker", "etlexec-myteam-worker" for a team's own worker
// binary), unless OTEL_SERVICE_NAME sets it.
func ServiceName() string {
	if v := os.Getenv("OTEL_SERVICE_NAME"); v != "" {
		return v
	}
	name := strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
	return "etlexec-" + strings.TrimPrefix(name, "etlexec-")
}

// Headers returns the task headers carrying ctx's trace context (W3C traceparent).
func Headers(ctx context.Context) map[string]string {
	h := map[string]string{}
	otel.GetTextMapPropagator().Inject(ctx, propagation.MapCarrier(h))
	return h
}

// StartEnqueue starts the producer span of a run's fan-out.
func StartEnqueue(ctx context.Context, jobID, runID string) (context.Context, trace.Span) {
	return otel.Tracer(TracerName).Start(ctx, "etl.trigger "+jobID, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("etl.job_id", jobID), attribute.String("etl.run_id", runID)))
}

// Middleware continues the trace carried in the task headers and wraps each task in a
// consumer span, recording the error and status.
func Middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		ctx = otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier(t.Headers()))
		q, _ := asynq.GetQueueName(ctx)
		id, _ := asynq.GetTaskID(ctx)
		retry, _ := asynq.GetRetryCount(ctx)
		ctx, span := otel.Tracer(TracerName).Start(ctx, "asynq.process "+t.Type(), trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attribute.String("messaging.system", "asynq"), attribute.String("messaging.destination.name", q),
				attribute.String("messaging.message.id", id), attribute.Int("asynq.retry_count", retry)))
		defer span.End()
		err := next.ProcessTask(ctx, t)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		return err
	})
}

// Metrics are the Prometheus instruments of a worker.
type Metrics struct {
	Registry        *prometheus.Registry
	Attempts        *prometheus.CounterVec
	AttemptDuration *prometheus.HistogramVec
	Records         *prometheus.CounterVec
	FinaliseLatency prometheus.Histogram
	// AtLimit counts deliveries sent back to the queue because their job ran
	// max_running_items items already.
	AtLimit *prometheus.CounterVec
}

// NewMetrics registers etlexec's instruments, the Go/process collectors and, when insp is
// given, asynq's queue collector (queue depth and latency).
func NewMetrics(insp *asynq.Inspector) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etlexec_attempts_total", Help: "Item attempts ended, by job, status and error category.",
		}, []string{"job_id", "status", "error_category"}),
		AttemptDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "etlexec_attempt_duration_seconds", Help: "Duration of item attempts.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 10),
		}, []string{"job_id", "status"}),
		Records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etlexec_records_total", Help: "Records read and written by succeeded attempts (dry runs included).",
		}, []string{"job_id", "direction"}),
		FinaliseLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "etlexec_run_finalise_seconds", Help: "Time to finalise a run once its last item ended.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
		AtLimit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etlexec_deliveries_at_limit_total", Help: "Deliveries sent back to the queue, without an attempt, because their job ran max_running_items items already.",
		}, []string{"job_id"}),
	}
	m.Registry.MustRegister(m.Attempts, m.AttemptDuration, m.Records, m.FinaliseLatency, m.AtLimit,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if insp != nil {
		m.Registry.MustRegister(metrics.NewQueueMetricsCollector(insp))
	}
	return m
}

// ObserveAttempt records one ended attempt.
func (m *Metrics) ObserveAttempt(jobID, status, category string, d time.Duration, read, written int64) {
	if m == nil {
		return
	}
	m.Attempts.WithLabelValues(jobID, status, category).Inc()
	m.AttemptDuration.WithLabelValues(jobID, status).Observe(d.Seconds())
	if runstate.Status(status) == runstate.StatusSuccess {
		m.Records.WithLabelValues(jobID, "read").Add(float64(read))
		m.Records.WithLabelValues(jobID, "written").Add(float64(written))
	}
}

// ObserveAtLimit counts a delivery of the job sent back at its max_running_items.
func (m *Metrics) ObserveAtLimit(jobID string) {
	if m == nil {
		return
	}
	m.AtLimit.WithLabelValues(jobID).Inc()
}

// ObserveFinalise records how long a finalisation took.
func (m *Metrics) ObserveFinalise(d time.Duration) {
	if m == nil {
		return
	}
	m.FinaliseLatency.Observe(d.Seconds())
}

// RunMetrics are the Prometheus instruments of run ends, fed by the process that notices them
// (the alerter in `enqueuer schedule`), and of alert deliveries.
type RunMetrics struct {
	Runs       *prometheus.CounterVec
	Duration   *prometheus.HistogramVec
	Deliveries *prometheus.CounterVec
}

// NewRunMetrics registers the run and alert instruments in reg.
func NewRunMetrics(reg *prometheus.Registry) *RunMetrics {
	m := &RunMetrics{
		Runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etlexec_runs_total", Help: "Runs ended, by job and status (counted by the scheduler's alerter as it notices each end).",
		}, []string{"job_id", "status"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "etlexec_run_duration_seconds", Help: "Duration of ended runs, by job and status.",
			Buckets: prometheus.ExponentialBuckets(1, 2.5, 12), // 1 s … about 4 h
		}, []string{"job_id", "status"}),
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etlexec_alert_deliveries_total", Help: "Alert delivery attempts, by destination and outcome (delivered, retry, failed).",
		}, []string{"destination", "outcome"}),
	}
	reg.MustRegister(m.Runs, m.Duration, m.Deliveries)
	return m
}

// ObserveRunEnd counts one run end.
func (m *RunMetrics) ObserveRunEnd(jobID, status string, d time.Duration) {
	m.Runs.WithLabelValues(jobID, status).Inc()
	m.Duration.WithLabelValues(jobID, status).Observe(d.Seconds())
}

// ObserveDelivery counts one alert delivery attempt.
func (m *RunMetrics) ObserveDelivery(destination, outcome string) {
	m.Deliveries.WithLabelValues(destination, outcome).Inc()
}

// NewLogger is the process logger: JSON lines to w (format "json") or zerolog's console form
// ("console"), at level (info when it does not parse), each line timestamped.
func NewLogger(w io.Writer, level, format string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// ProcessLabel names this process in leases and logs: host:pid.
func ProcessLabel() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}
