package logsink_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/logsink"
	"github.com/etlexec/etlexec/internal/store"
)

type testBundle struct {
	st        *store.Store
	jobID     string
	runID     uuid.UUID
	attemptID uuid.UUID
	reports   *syncBuffer // the sink's own logger
}

// setup gives the test its own database holding a job, a run, an item and an attempt
// (inserted with plain SQL: the log table's foreign keys need them).
func setup(t *testing.T) *testBundle {
	t.Helper()
	b := &testBundle{st: dbtest.Store(t), jobID: "sink_job", runID: uuid.Must(uuid.NewV7()),
		attemptID: uuid.Must(uuid.NewV7()), reports: &syncBuffer{}}
	ctx := t.Context()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO dw_etl_jobs (job_id, kind) VALUES ($1, 'synthetic')`, []any{b.jobID}},
		{`INSERT INTO dw_etl_runs (run_id, job_id) VALUES ($1, $2)`, []any{b.runID, b.jobID}},
		{`INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash) VALUES ($1, 1, '{}', 'h1')`, []any{b.runID}},
		{`INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt) VALUES ($1, $2, 1, 1)`, []any{b.attemptID, b.runID}},
	} {
		_, err := b.st.Pool().Exec(ctx, q.sql, q.args...)
		require.NoError(t, err, q.sql)
	}
	return b
}

// newSink starts a sink reporting to b.reports; it is closed when the test ends if the test
// did not close it.
func (b *testBundle) newSink(t *testing.T, cfg logsink.Config) *logsink.Sink {
	t.Helper()
	report := zerolog.New(b.reports)
	cfg.Logger = &report
	sink, err := logsink.New(b.st, cfg)
	require.NoError(t, err)
	sink.Start(t.Context())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sink.Close(ctx)
	})
	return sink
}

// runLogger is what the executor builds: a context logger carrying the run's keys.
func (b *testBundle) runLogger(w zerolog.LevelWriter) zerolog.Logger {
	return zerolog.New(w).With().Timestamp().Str("job_id", b.jobID).Str("run_id", b.runID.String()).
		Str("attempt_id", b.attemptID.String()).Int("item_no", 1).Logger()
}

func closeSink(t *testing.T, sink *logsink.Sink) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	require.NoError(t, sink.Close(ctx))
}

func (b *testBundle) count(t require.TestingT) int {
	var n int
	require.NoError(t, b.st.Pool().QueryRow(context.Background(),
		`SELECT count(*) FROM dw_etl_run_logs WHERE run_id = $1`, b.runID).Scan(&n))
	return n
}

func (b *testBundle) droppedMetric(t *testing.T) int64 {
	t.Helper()
	var n *int64
	require.NoError(t, b.st.Pool().QueryRow(context.Background(),
		`SELECT (metrics->>'log_lines_dropped')::bigint FROM dw_etl_runs WHERE run_id = $1`, b.runID).Scan(&n))
	if n == nil {
		return 0
	}
	return *n
}

type storedLine struct {
	TS        time.Time
	AttemptID *uuid.UUID
	JobID     string
	ItemNo    *int32
	Level     string
	Message   string
	Fields    map[string]any
}

func (b *testBundle) lines(t *testing.T) []storedLine {
	t.Helper()
	rows, err := b.st.Pool().Query(context.Background(), `SELECT ts, attempt_id, job_id, item_no, level, message, fields
		FROM dw_etl_run_logs WHERE run_id = $1 ORDER BY log_id`, b.runID)
	require.NoError(t, err)
	defer rows.Close()
	var out []storedLine
	for rows.Next() {
		var l storedLine
		var fields []byte
		require.NoError(t, rows.Scan(&l.TS, &l.AttemptID, &l.JobID, &l.ItemNo, &l.Level, &l.Message, &fields))
		require.NoError(t, json.Unmarshal(fields, &l.Fields))
		out = append(out, l)
	}
	require.NoError(t, rows.Err())
	return out
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func ptr[T any](v T) *T { return &v }

func TestSink(t *testing.T) {
	t.Parallel()

	t.Run("LinesLandInTheirColumns", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sink := b.newSink(t, logsink.Config{})
		ts := time.Now().UTC().Truncate(time.Microsecond)
		// A line with an exact timestamp, written as zerolog would.
		fmt.Fprintf(sink, `{"level":"warn","job_id":%q,"run_id":%q,"attempt_id":%q,"item_no":1,"rows":42,"page":{"n":3},"time":%q,"message":"page loaded"}`+"\n",
			b.jobID, b.runID, b.attemptID, ts.Format(time.RFC3339Nano))
		// Through a real logger, as the executor logs; and a line without attempt or item.
		runLog := b.runLogger(sink)
		runLog.Error().Str("task_id", "t-1").Msg("boom")
		bare := zerolog.New(sink)
		bare.Debug().Str("run_id", b.runID.String()).Str("job_id", b.jobID).Str("attempt_id", "not-a-uuid").Msg("bare")
		closeSink(t, sink)

		got := b.lines(t)
		require.Len(t, got, 3)
		require.True(t, ts.Equal(got[0].TS), "ts %s, want %s", got[0].TS, ts)
		require.WithinDuration(t, time.Now(), got[1].TS, time.Minute)
		require.WithinDuration(t, time.Now(), got[2].TS, time.Minute)
		for i := range got {
			got[i].TS = time.Time{}
		}
		want := []storedLine{
			{AttemptID: &b.attemptID, JobID: b.jobID, ItemNo: ptr[int32](1), Level: "warn", Message: "page loaded",
				Fields: map[string]any{"rows": 42.0, "page": map[string]any{"n": 3.0}}},
			{AttemptID: &b.attemptID, JobID: b.jobID, ItemNo: ptr[int32](1), Level: "error", Message: "boom",
				Fields: map[string]any{"task_id": "t-1"}},
			{JobID: b.jobID, Level: "debug", Message: "bare", Fields: map[string]any{"attempt_id": "not-a-uuid"}},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("stored lines (-want +got):\n%s", diff)
		}
		require.EqualValues(t, 3, sink.Written())
		require.Zero(t, sink.Dropped())
	})

	t.Run("LinesWithoutRunIDAreNotStored", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sink := b.newSink(t, logsink.Config{})
		plain := zerolog.New(sink)
		plain.Info().Str("job_id", b.jobID).Msg("enqueuer started")
		plain.Info().Str("parent_run_id", b.runID.String()).Msg("not a run key")
		plain.Info().Str("note", `{"run_id":"x"}`).Msg(`quoted "run_id":"x" in text`)
		runLog := b.runLogger(sink)
		runLog.Info().Msg("the one run line")
		runLog.Info().Str(logsink.LedgerEventKey, "attempt_started").Msg("a ledger fact, stdout only")
		closeSink(t, sink)

		var total int
		require.NoError(t, b.st.Pool().QueryRow(t.Context(), `SELECT count(*) FROM dw_etl_run_logs`).Scan(&total))
		require.Equal(t, 1, total)
		require.EqualValues(t, 1, sink.Written())
		require.Zero(t, sink.Dropped())
	})

	t.Run("FlushesWithinIntervalWithoutClose", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sink := b.newSink(t, logsink.Config{FlushInterval: 100 * time.Millisecond})
		start := time.Now()
		log := b.runLogger(sink)
		log.Info().Msg("soon visible")
		require.EventuallyWithT(t, func(c *assert.CollectT) { assert.Equal(c, 1, b.count(c)) }, time.Second, 10*time.Millisecond, "line stored")
		t.Logf("visible after %s", time.Since(start))
	})

	t.Run("CloseFlushesTheRest", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sink := b.newSink(t, logsink.Config{FlushInterval: logsink.FlushIntervalMax, BatchSize: 1000})
		log := b.runLogger(sink)
		for i := range 1500 {
			log.Info().Int("i", i).Msg("line")
		}
		closeSink(t, sink)
		require.Equal(t, 1500, b.count(t))
		require.EqualValues(t, 1500, sink.Written())

		// After Close, lines are dropped and counted, never blocked on.
		log.Info().Msg("late")
		require.EqualValues(t, 1, sink.Dropped())
	})

	t.Run("NoisyProducerNeverBlocks", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sink := b.newSink(t, logsink.Config{BufferLines: 1000})
		const producers, perProducer = 8, 25000
		log := b.runLogger(zerolog.MultiLevelWriter(sink))
		start := time.Now()
		var wg sync.WaitGroup
		for p := range producers {
			wg.Go(func() {
				for i := range perProducer {
					log.Info().Int("producer", p).Int("i", i).Msg("noise")
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		closeSink(t, sink)
		sent := int64(producers * perProducer)
		t.Logf("%d lines written in %s (%.0f lines/s); stored %d, dropped %d",
			sent, elapsed, float64(sent)/elapsed.Seconds(), sink.Written(), sink.Dropped())
		require.Less(t, elapsed, 5*time.Second, "Write must not wait for Postgres")
		require.Equal(t, sent, sink.Written()+sink.Dropped())
		require.EqualValues(t, sink.Written(), b.count(t))
		require.Equal(t, sink.Dropped(), b.droppedMetric(t))
		require.Contains(t, b.reports.String(), "dropped run log lines")
	})

	t.Run("BadRowDoesNotLoseTheBatch", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sink := b.newSink(t, logsink.Config{FlushInterval: logsink.FlushIntervalMax})
		log := b.runLogger(sink)
		for i := range 10 {
			if i == 4 {
				// A time no partition holds: the COPY of the batch fails on it.
				fmt.Fprintf(sink, `{"level":"info","run_id":%q,"job_id":%q,"time":"2001-01-01T00:00:00Z","message":"too old"}`+"\n", b.runID, b.jobID)
				continue
			}
			log.Info().Int("i", i).Msg("good")
		}
		// And a line whose run_id is not a uuid: dropped before the database.
		bad := zerolog.New(sink)
		bad.Info().Str("run_id", "nope").Msg("bad run id")
		closeSink(t, sink)

		require.Equal(t, 9, b.count(t))
		require.EqualValues(t, 9, sink.Written())
		require.EqualValues(t, 2, sink.Dropped())
		require.EqualValues(t, 1, b.droppedMetric(t), "the unattributable line counts in Dropped only")
		require.Contains(t, b.reports.String(), "COPY failed")
	})

	t.Run("SecretsAreRedactedInRowsAndOnStdout", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const dsn = "postgres://etl:hunter2pw@db.internal:5432/dw?sslmode=require&x=1"
		const token = "tok_9f8e7d6c5b4a"
		const quoted = `pa"ss\word`
		sink := b.newSink(t, logsink.Config{Redact: []string{dsn}})
		sink.AddSecrets(token, quoted, "abc") // "abc" is too short to redact
		require.NotContains(t, sink.Secrets(), "abc")

		var stdout syncBuffer
		log := b.runLogger(zerolog.MultiLevelWriter(logsink.RedactWriter(&stdout, sink.Secrets), sink))
		log.Info().Str("dsn", dsn).Strs("args", []string{"--token=" + token, "abc"}).
			Interface("nested", map[string]any{"auth": "Bearer " + token, quoted: 1}).
			Msg("connecting to " + dsn + " with " + quoted)
		closeSink(t, sink)

		got := b.lines(t)
		require.Len(t, got, 1)
		require.Equal(t, "connecting to [REDACTED] with [REDACTED]", got[0].Message)
		want := map[string]any{
			"dsn":    "[REDACTED]",
			"args":   []any{"--token=[REDACTED]", "abc"},
			"nested": map[string]any{"auth": "Bearer [REDACTED]", "[REDACTED]": 1.0},
		}
		if diff := cmp.Diff(want, got[0].Fields); diff != "" {
			t.Fatalf("fields (-want +got):\n%s", diff)
		}

		out := stdout.String()
		for _, secret := range []string{"hunter2pw", token, "ss\\\\word"} {
			require.NotContains(t, out, secret)
		}
		require.True(t, json.Valid([]byte(out)), "stdout line stays JSON: %s", out)
		var line map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &line))
		require.Equal(t, "connecting to [REDACTED] with [REDACTED]", line["message"])
		require.Equal(t, "[REDACTED]", line["dsn"])
	})

	t.Run("StartContextCancelledCountsTheRest", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sink, err := logsink.New(b.st, logsink.Config{FlushInterval: logsink.FlushIntervalMax})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		log := b.runLogger(sink)
		for range 10 {
			log.Info().Msg("before start")
		}
		cancel()
		sink.Start(ctx)
		closeSink(t, sink)
		require.Equal(t, int64(10), sink.Written()+sink.Dropped())
	})
}

func TestSinkConfig(t *testing.T) {
	t.Parallel()
	got := logsink.Config{}.WithDefaults()
	want := logsink.Config{BufferLines: logsink.BufferLinesDefault, BatchSize: logsink.BatchSizeDefault,
		FlushInterval: logsink.FlushIntervalDefault}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("defaults (-want +got):\n%s", diff)
	}
	require.NoError(t, got.Validate())

	for name, tc := range map[string]struct {
		cfg  logsink.Config
		want string
	}{
		"NegativeBuffer":    {logsink.Config{BufferLines: -1}, "BufferLines"},
		"NegativeBatch":     {logsink.Config{BatchSize: -1}, "BatchSize"},
		"IntervalTooLong":   {logsink.Config{FlushInterval: 2 * time.Second}, "FlushInterval"},
		"NegativeInterval":  {logsink.Config{FlushInterval: -time.Second}, "FlushInterval"},
		"MaxIntervalIsFine": {logsink.Config{FlushInterval: logsink.FlushIntervalMax}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.WithDefaults().Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := logsink.New(nil, logsink.Config{})
	require.Error(t, err)
}

func TestRedactWriterLog(t *testing.T) {
	t.Parallel()
	secrets := func() []string { return []string{"true", "s3cret-value", "abc"} }
	for name, tc := range map[string]struct{ in, want string }{
		"SecretSpellingJSONSyntaxKeepsJSON": {`{"ok":true,"msg":"it is true"}`, `{"ok":true,"msg":"it is [REDACTED]"}`},
		"ShortValuesIgnored":                {`{"msg":"abc"}`, `{"msg":"abc"}`},
		"EscapedLiteral":                    {`{"msg":"say \"s3cret-value\"\n"}`, `{"msg":"say \"[REDACTED]\"\n"}`},
		"KeysToo":                           {`{"s3cret-value":1}`, `{"[REDACTED]":1}`},
		"ConsoleText":                       {"INF connecting dsn=s3cret-value\n", "INF connecting dsn=[REDACTED]\n"},
		"NothingToDo":                       {`{"msg":"fine"}`, `{"msg":"fine"}`},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			n, err := logsink.RedactWriter(&out, secrets).Write([]byte(tc.in))
			require.NoError(t, err)
			require.Equal(t, len(tc.in), n)
			require.Equal(t, tc.want, out.String())
		})
	}
}

// TestSinkLogThroughput measures how fast lines reach Postgres when nothing is dropped. It is
// not parallel, so the number means something.
func TestSinkLogThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("throughput measurement")
	}
	b := setup(t)
	const lines = 100000
	sink := b.newSink(t, logsink.Config{BufferLines: lines})
	log := b.runLogger(sink)
	start := time.Now()
	for i := range lines {
		log.Info().Int("i", i).Str("table", "orders").Msg("row batch loaded")
	}
	closeSink(t, sink)
	elapsed := time.Since(start)
	require.EqualValues(t, lines, sink.Written())
	require.Zero(t, sink.Dropped())
	t.Logf("stored %d lines in %s: %.0f lines/s", lines, elapsed, float64(lines)/elapsed.Seconds())
	require.False(t, strings.Contains(b.reports.String(), "COPY failed"))
}
