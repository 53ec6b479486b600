// Package logsink owns the zerolog writer that lands run log lines in dw_etl_run_logs. Stdout
// stays the primary sink; Postgres is best effort: Write never blocks and never fails, a line
// that cannot be buffered or stored is dropped and counted, per run, in the run's
// metrics.log_lines_dropped. Secret values are replaced with [REDACTED] before a row is
// stored, and RedactWriter does the same for the stdout path.
//
//	sink, err := logsink.New(st, logsink.Config{Logger: &stdoutOnly})
//	sink.Start(ctx)
//	defer sink.Close(shutdownCtx)
//	base := zerolog.New(zerolog.MultiLevelWriter(logsink.RedactWriter(os.Stdout, sink.Secrets), sink))
package logsink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/internal/store"
)

const (
	// BufferLinesDefault is the default Config.BufferLines.
	BufferLinesDefault = 10000
	// BatchSizeDefault is the default Config.BatchSize.
	BatchSizeDefault = 1000
	// FlushIntervalDefault is the default Config.FlushInterval.
	FlushIntervalDefault = 200 * time.Millisecond
	// FlushIntervalMax is the longest FlushInterval Validate accepts: a run's lines must be
	// visible in Postgres within about a second.
	FlushIntervalMax = time.Second
	// MetricLinesDropped is the key of dw_etl_runs.metrics counting the run's lost log lines.
	MetricLinesDropped = "log_lines_dropped"
)

// Config configures a Sink.
type Config struct {
	// BufferLines is how many lines wait between Write and the database; when the buffer is
	// full, lines are dropped and counted. Defaults to BufferLinesDefault.
	BufferLines int
	// BatchSize is the most lines written by one COPY. Defaults to BatchSizeDefault.
	BatchSize int
	// FlushInterval is how often buffered lines are written even when a batch is not full,
	// and dropped counts stored. At most FlushIntervalMax. Defaults to FlushIntervalDefault.
	FlushInterval time.Duration
	// Redact lists literal secret values (DSNs, tokens) replaced with [REDACTED] in every
	// stored message and string field. Values shorter than SecretMinLen are ignored. More can
	// be added at runtime with AddSecrets.
	Redact []string
	// Logger receives the sink's own reports (dropped lines, failed batches). It must NOT
	// write into this sink (use a stdout-only logger), or a full sink feeds on itself.
	// Nil discards them.
	Logger *zerolog.Logger
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.BufferLines == 0 {
		c.BufferLines = BufferLinesDefault
	}
	if c.BatchSize == 0 {
		c.BatchSize = BatchSizeDefault
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = FlushIntervalDefault
	}
	return c
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.BufferLines < 1:
		return fmt.Errorf("log sink: BufferLines must be at least 1, got %d", c.BufferLines)
	case c.BatchSize < 1:
		return fmt.Errorf("log sink: BatchSize must be at least 1, got %d", c.BatchSize)
	case c.FlushInterval <= 0 || c.FlushInterval > FlushIntervalMax:
		return fmt.Errorf("log sink: FlushInterval must be in (0, %s], got %s", FlushIntervalMax, c.FlushInterval)
	}
	return nil
}

// Sink is a zerolog.LevelWriter that stores lines carrying a run_id in dw_etl_run_logs. It is
// safe for concurrent use. Every line accepted by Write (one with a top-level "run_id" key and
// no LedgerEventKey) ends up counted exactly once, in Written or in Dropped.
type Sink struct {
	st  *store.Store
	cfg Config
	log zerolog.Logger

	// zerolog's field names and time format, read once: they are globals.
	timeKey, levelKey, messageKey, timeFormat string

	ch chan []byte

	// mu orders Write's send against Close: after Close no line enters ch unseen.
	mu     sync.RWMutex
	closed bool

	secretsMu sync.Mutex // serialises AddSecrets
	secrets   atomic.Pointer[secretSet]

	startOnce sync.Once
	stop      chan context.Context
	done      chan struct{}

	written atomic.Int64
	dropped atomic.Int64

	dropMu       sync.Mutex
	runDrops     map[uuid.UUID]int64 // dropped since the last store, per run
	orphanDrops  int64               // dropped since the last report, run unknown
	unstoredRuns map[uuid.UUID]int64 // metric adds to retry; owned by the writer goroutine, then by run
}

// New returns a sink writing to st. Call Start to begin writing and Close to finish.
func New(st *store.Store, cfg Config) (*Sink, error) {
	if st == nil {
		return nil, errors.New("log sink: nil store")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sink{
		st:           st,
		cfg:          cfg,
		log:          zerolog.Nop(),
		timeKey:      zerolog.TimestampFieldName,
		levelKey:     zerolog.LevelFieldName,
		messageKey:   zerolog.MessageFieldName,
		timeFormat:   zerolog.TimeFieldFormat,
		ch:           make(chan []byte, cfg.BufferLines),
		stop:         make(chan context.Context, 1),
		done:         make(chan struct{}),
		runDrops:     map[uuid.UUID]int64{},
		unstoredRuns: map[uuid.UUID]int64{},
	}
	if cfg.Logger != nil {
		s.log = *cfg.Logger
	}
	s.secrets.Store(newSecretSet(cfg.Redact))
	return s, nil
}

// AddSecrets adds values to redact from now on; values shorter than SecretMinLen are ignored.
func (s *Sink) AddSecrets(vals ...string) {
	s.secretsMu.Lock()
	defer s.secretsMu.Unlock()
	cur := s.secrets.Load()
	s.secrets.Store(newSecretSet(append(append([]string(nil), cur.vals...), vals...)))
}

// Secrets returns the current secret values (longest first). The slice is shared and must not
// be modified; it stays the same until the set changes, so RedactWriter(w, sink.Secrets)
// rebuilds its matcher only then.
func (s *Sink) Secrets() []string { return s.secrets.Load().vals }

// Written is the number of lines stored so far.
func (s *Sink) Written() int64 { return s.written.Load() }

// Dropped is the number of accepted lines lost so far: buffer full, unparsable run_id,
// rejected by the database, or still buffered when the sink stopped.
func (s *Sink) Dropped() int64 { return s.dropped.Load() }

var runIDKey = []byte(`"run_id":`)

// LedgerEventKey marks a line that restates a ledger fact (an attempt started or ended): it goes
// to stdout for log pipelines but is not stored, since dw_etl_run_attempts already holds it
// and two extra rows per item would double the ledger's per-item write cost.
const LedgerEventKey = "ledger_event"

var ledgerEventKey = []byte(`"` + LedgerEventKey + `":`)

// runIDValue returns the index just after the top-level-looking `"run_id":` key of a JSON
// line, or -1. A key inside an escaped string ("\"run_id\":") does not count.
func runIDValue(p []byte) int {
	for off := 0; ; {
		i := bytes.Index(p[off:], runIDKey)
		if i < 0 {
			return -1
		}
		i += off
		if i > 0 && (p[i-1] == '{' || p[i-1] == ',') {
			return i + len(runIDKey)
		}
		off = i + len(runIDKey)
	}
}

// lineRunID extracts the run_id of a line without decoding it, to attribute a drop.
func lineRunID(p []byte) (uuid.UUID, bool) {
	v := runIDValue(p)
	if v < 0 || v >= len(p) || p[v] != '"' {
		return uuid.UUID{}, false
	}
	end := bytes.IndexByte(p[v+1:], '"')
	if end < 0 {
		return uuid.UUID{}, false
	}
	id, err := uuid.ParseBytes(p[v+1 : v+1+end])
	return id, err == nil
}

// Write buffers a copy of p when it carries a run_id and there is room, and otherwise drops
// and counts it. It never blocks on the database and always returns len(p), nil, so stdout
// logging through a MultiLevelWriter never fails because of Postgres.
func (s *Sink) Write(p []byte) (int, error) {
	if runIDValue(p) < 0 || bytes.Contains(p, ledgerEventKey) {
		return len(p), nil // not a run's line, or one whose facts the ledger holds: stdout only
	}
	if len(s.ch) < cap(s.ch) { // cheap pre-check: no copy when obviously full
		line := bytes.Clone(p) // zerolog reuses p after Write returns
		s.mu.RLock()
		if !s.closed {
			select {
			case s.ch <- line:
				s.mu.RUnlock()
				return len(p), nil
			default:
			}
		}
		s.mu.RUnlock()
	}
	s.countDrop(lineRunID(p))
	return len(p), nil
}

// WriteLevel implements zerolog.LevelWriter; the level is read from the line itself.
func (s *Sink) WriteLevel(_ zerolog.Level, p []byte) (int, error) { return s.Write(p) }

func (s *Sink) countDrop(runID uuid.UUID, known bool) {
	s.countDrops(runID, known, 1)
}

func (s *Sink) countDrops(runID uuid.UUID, known bool, n int64) {
	if n <= 0 {
		return
	}
	s.dropMu.Lock()
	if known {
		s.runDrops[runID] += n
	} else {
		s.orphanDrops += n
	}
	s.dropped.Add(n) // under dropMu, so a stored metric never runs ahead of Dropped
	s.dropMu.Unlock()
}

// Start starts the writer goroutine; calling it again does nothing. ctx is the stop of last
// resort: when it is cancelled the writer stops at once and counts what is still buffered as
// dropped. The orderly stop is Close.
func (s *Sink) Start(ctx context.Context) {
	s.startOnce.Do(func() { go s.run(ctx) })
}

// Close stops accepting lines, writes everything buffered, stores the dropped counts and waits
// for the writer goroutine, all bounded by ctx: when ctx ends first, the writer abandons what
// is left (counted as dropped) and Close returns ctx's error. Close starts the writer if Start
// was never called. Lines written after Close are dropped and counted.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	s.mu.Unlock()
	if first {
		s.Start(context.WithoutCancel(ctx))
		s.stop <- ctx
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close log sink: %w", ctx.Err())
	}
}

// writeJob is one unit of work for the writer: rows to store (possibly none), then, when
// storeDrops is set, the dropped counts; ctx bounds both.
type writeJob struct {
	ctx        context.Context
	rows       []store.LogRow
	storeDrops bool
}

// run is the decoding goroutine: it turns lines into rows and hands a batch to the writer
// goroutine when it is full or at every tick, so decoding the next batch overlaps the COPY of
// the last one. One writer keeps the rows of a run in log_id order. When the writer falls
// behind, the hand-off blocks this goroutine, never Write: the line buffer fills and Write
// drops.
func (s *Sink) run(ctx context.Context) {
	defer close(s.done)
	jobs := make(chan writeJob, 1)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for j := range jobs {
			s.flush(j.ctx, j.rows)
			if j.storeDrops {
				s.storeDrops(j.ctx)
			}
		}
	}()
	newBatch := func() []store.LogRow { return make([]store.LogRow, 0, s.cfg.BatchSize) }

	tick := time.NewTicker(s.cfg.FlushInterval)
	defer tick.Stop()
	batch := newBatch()
	for {
		select {
		case line := <-s.ch:
			batch = s.add(batch, line)
			if len(batch) >= s.cfg.BatchSize {
				jobs <- writeJob{ctx: ctx, rows: batch}
				batch = newBatch()
			}
		case <-tick.C:
			jobs <- writeJob{ctx: ctx, rows: batch, storeDrops: true}
			batch = newBatch()
		case cctx := <-s.stop:
			// Close has set closed, so ch only drains from here on.
			for {
				select {
				case line := <-s.ch:
					batch = s.add(batch, line)
					if len(batch) >= s.cfg.BatchSize {
						jobs <- writeJob{ctx: cctx, rows: batch}
						batch = newBatch()
					}
					continue
				default:
				}
				break
			}
			jobs <- writeJob{ctx: cctx, rows: batch, storeDrops: true}
			close(jobs)
			<-writerDone
			return
		case <-ctx.Done():
			s.mu.Lock()
			s.closed = true
			s.mu.Unlock()
			close(jobs) // what is queued fails fast on ctx and is counted as dropped
			for _, r := range batch {
				s.countDrop(r.RunID, true)
			}
			for {
				select {
				case line := <-s.ch:
					s.countDrop(lineRunID(line))
					continue
				default:
				}
				break
			}
			<-writerDone
			s.reportDrops(context.Cause(ctx))
			return
		}
	}
}

// add decodes line and appends its row to batch, or drops and counts it.
func (s *Sink) add(batch []store.LogRow, line []byte) []store.LogRow {
	row, err := s.decode(line)
	if err != nil {
		s.countDrop(uuid.UUID{}, false)
		s.log.Debug().Err(err).Msg("log sink: line dropped")
		return batch
	}
	return append(batch, row)
}

// flush writes batch with COPY, falling back to one insert per row when the COPY fails.
func (s *Sink) flush(ctx context.Context, batch []store.LogRow) {
	if len(batch) == 0 {
		return
	}
	n, err := s.st.CopyLogs(ctx, batch)
	if err == nil {
		s.written.Add(n)
		return
	}
	s.log.Warn().Err(err).Int("lines", len(batch)).Msg("log sink: COPY failed; inserting lines one by one")
	// Group by run, keeping each run's order, so every failure is attributed to its run.
	var order []uuid.UUID
	byRun := map[uuid.UUID][]store.LogRow{}
	for _, r := range batch {
		if _, ok := byRun[r.RunID]; !ok {
			order = append(order, r.RunID)
		}
		byRun[r.RunID] = append(byRun[r.RunID], r)
	}
	for _, id := range order {
		rows := byRun[id]
		inserted, failed, err := s.st.InsertLogsOneByOne(ctx, rows)
		s.written.Add(inserted)
		s.countDrops(id, true, int64(len(rows))-inserted)
		if err != nil {
			s.log.Warn().Err(err).Str("run_id", id.String()).Int("lines", len(rows)).Int64("inserted", inserted).
				Msg("log sink: inserting lines one by one stopped")
		} else if failed > 0 {
			s.log.Warn().Str("run_id", id.String()).Int("failed", failed).Int64("inserted", inserted).
				Msg("log sink: database rejected lines")
		}
	}
}

// takeDrops moves the counts since the last call out from under the lock.
func (s *Sink) takeDrops() (map[uuid.UUID]int64, int64) {
	s.dropMu.Lock()
	defer s.dropMu.Unlock()
	if len(s.runDrops) == 0 && s.orphanDrops == 0 {
		return nil, 0
	}
	runs, orphans := s.runDrops, s.orphanDrops
	s.runDrops, s.orphanDrops = map[uuid.UUID]int64{}, 0
	return runs, orphans
}

// storeDrops logs the lines dropped since the last call and adds them to each run's
// metrics.log_lines_dropped; an add that fails for a reason other than a missing run is
// retried at the next tick.
func (s *Sink) storeDrops(ctx context.Context) {
	runs, orphans := s.takeDrops()
	if orphans > 0 {
		s.log.Warn().Int64("dropped", orphans).Msg("log sink: dropped lines without a usable run_id")
	}
	for id, n := range runs {
		s.log.Warn().Str("run_id", id.String()).Int64("dropped", n).Msg("log sink: dropped run log lines")
		s.unstoredRuns[id] += n
	}
	for id, n := range s.unstoredRuns {
		err := s.st.AddRunMetric(ctx, id, MetricLinesDropped, n)
		switch {
		case err == nil:
			delete(s.unstoredRuns, id)
		case errors.Is(err, store.ErrNotFound):
			delete(s.unstoredRuns, id)
			s.log.Warn().Str("run_id", id.String()).Int64("dropped", n).Msg("log sink: run not found; dropped count not stored")
		default:
			s.log.Warn().Err(err).Str("run_id", id.String()).Int64("dropped", n).Msg("log sink: store dropped count")
		}
	}
}

// reportDrops logs what could not be stored when the writer stops without a usable context.
func (s *Sink) reportDrops(cause error) {
	runs, orphans := s.takeDrops()
	for id, n := range runs {
		s.unstoredRuns[id] += n
	}
	for id, n := range s.unstoredRuns {
		s.log.Warn().AnErr("cause", cause).Str("run_id", id.String()).Int64("dropped", n).
			Msg("log sink: stopped; dropped count not stored")
	}
	if orphans > 0 {
		s.log.Warn().AnErr("cause", cause).Int64("dropped", orphans).Msg("log sink: stopped; dropped lines without a usable run_id")
	}
}

var levels = map[string]bool{"trace": true, "debug": true, "info": true, "warn": true, "error": true, "fatal": true, "panic": true}

var errNoRunID = errors.New("no usable run_id")

// decode turns a redacted JSON line into a row. Known keys fill columns; every other key, and
// any known key whose value does not fit its column, stays in Fields.
func (s *Sink) decode(line []byte) (store.LogRow, error) {
	line, _ = s.secrets.Load().redact(line)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return store.LogRow{}, fmt.Errorf("decode log line: %w", err)
	}
	var row store.LogRow

	var str string
	if raw, ok := m["run_id"]; !ok || json.Unmarshal(raw, &str) != nil {
		return row, errNoRunID
	}
	id, err := uuid.Parse(str)
	if err != nil {
		return row, fmt.Errorf("%w: %w", errNoRunID, err)
	}
	row.RunID = id
	delete(m, "run_id")

	row.TS = time.Now()
	if raw, ok := m[s.timeKey]; ok {
		if ts, ok := parseTime(raw, s.timeFormat); ok {
			row.TS = ts
			delete(m, s.timeKey)
		}
	}

	row.Level = zerolog.InfoLevel.String() // a line logged with NoLevel has no level key
	if raw, ok := m[s.levelKey]; ok {
		if json.Unmarshal(raw, &str) == nil && levels[str] {
			row.Level = str
			delete(m, s.levelKey)
		}
	}

	if raw, ok := m[s.messageKey]; ok {
		if json.Unmarshal(raw, &str) == nil {
			row.Message = noNUL(str)
			delete(m, s.messageKey)
		}
	}

	if raw, ok := m["job_id"]; ok {
		if json.Unmarshal(raw, &str) == nil {
			row.JobID = noNUL(str)
			delete(m, "job_id")
		}
	}

	if raw, ok := m["attempt_id"]; ok {
		if isNull(raw) {
			delete(m, "attempt_id")
		} else if json.Unmarshal(raw, &str) == nil {
			if a, err := uuid.Parse(str); err == nil {
				row.AttemptID = &a
				delete(m, "attempt_id")
			}
		}
	}

	if raw, ok := m["item_no"]; ok {
		var n int64
		if isNull(raw) {
			delete(m, "item_no")
		} else if json.Unmarshal(raw, &n) == nil && n >= math.MinInt32 && n <= math.MaxInt32 {
			n32 := int32(n)
			row.ItemNo = &n32
			delete(m, "item_no")
		}
	}

	if len(m) > 0 {
		fields, err := json.Marshal(m)
		if err != nil {
			return row, fmt.Errorf("encode log fields: %w", err)
		}
		row.Fields = fields
	}
	return row, nil
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// noNUL removes NUL characters, which a Postgres text column cannot hold.
func noNUL(s string) string {
	if strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(s, "\x00", "")
}

// parseTime reads zerolog's timestamp: an RFC 3339 string (any precision), a string in
// format (zerolog.TimeFieldFormat), or a Unix number in the unit format names.
func parseTime(raw json.RawMessage, format string) (time.Time, bool) {
	var str string
	if json.Unmarshal(raw, &str) == nil {
		if t, err := time.Parse(time.RFC3339Nano, str); err == nil {
			return t, true
		}
		if format != "" && !strings.HasPrefix(format, "UNIX") {
			if t, err := time.Parse(format, str); err == nil {
				return t, true
			}
		}
		return time.Time{}, false
	}
	n, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return time.Time{}, false
	}
	switch format {
	case zerolog.TimeFormatUnixMs:
		return time.UnixMilli(int64(n)), true
	case zerolog.TimeFormatUnixMicro:
		return time.UnixMicro(int64(n)), true
	case zerolog.TimeFormatUnixNano:
		return time.Unix(0, int64(n)), true
	default:
		sec, frac := math.Modf(n)
		return time.Unix(int64(sec), int64(frac*1e9)), true
	}
}
