package etl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
)

// Strategy is a job's incremental load strategy (the strategy column of dw_etl_jobs).
type Strategy string

const (
	// StrategyNone loads everything every time; the item's window is empty.
	StrategyNone Strategy = "none"
	// StrategyModifiedDate loads rows modified after the stored cursor. The handler
	// reports the greatest modification time it saw with [Item.ObserveWatermark]; the
	// cursor moves to that watermark.
	StrategyModifiedDate Strategy = "modified_date"
	// StrategyLastRun loads rows modified in (cursor, logical start of this run], the same
	// open-start convention as modified_date, so a row on the boundary loads exactly once. The cursor
	// moves to the run's logical start; the handler observes nothing.
	StrategyLastRun Strategy = "last_run"
)

// ParseStrategy returns the Strategy named by s, which must be one of the constants'
// values exactly as stored in dw_etl_jobs.
func ParseStrategy(s string) (Strategy, error) {
	switch st := Strategy(s); st {
	case StrategyNone, StrategyModifiedDate, StrategyLastRun:
		return st, nil
	}
	return "", fmt.Errorf("unknown strategy %q: want %q, %q or %q", s, StrategyNone, StrategyModifiedDate, StrategyLastRun)
}

// Window is the incremental range an item loads. Start is the stored cursor when the
// run expanded its items, nil on a first load (load everything). End is the run's
// logical start for [StrategyLastRun] and nil otherwise (no upper bound).
type Window struct {
	Start *time.Time
	End   *time.Time
}

// Metrics is what a handler reported through the recorders of an [Item].
type Metrics struct {
	RecordsRead    int64
	RecordsWritten int64
	Pages          int64
	// Watermark is the greatest time passed to ObserveWatermark, nil if none was.
	Watermark *time.Time
	// CursorMeta is what the handler asked to keep with the cursor ([Item.SetCursorMeta]),
	// nil when it set nothing (the stored meta is then kept).
	CursorMeta json.RawMessage
	// Note is the handler's one-line account of the load ([Item.SetNote]), "" if none.
	Note string
	// Progress is the handler's last progress message ([Item.SetProgress]), "" if none.
	Progress string
}

// ItemSpec is everything the executor knows about one attempt of one item. Job
// authors build one only to unit-test a handler.
type ItemSpec struct {
	JobID     string
	Kind      string
	RunID     uuid.UUID
	AttemptID uuid.UUID
	// AttemptNo orders attempts within the run (increasing, gaps allowed).
	AttemptNo int64
	// ItemAttempt is 1 for an item's first attempt, 2 for its first retry, and so on.
	ItemAttempt int
	MaxAttempts int
	ItemNo      int
	// Params is the item's canonical parameter object; nil for a job without params.
	Params    json.RawMessage
	ParamHash string
	DryRun    bool
	Strategy  Strategy
	// Config is the job's configuration object (the config column of dw_etl_jobs).
	Config json.RawMessage
	// WindowStart is the cursor when the run expanded its items; nil on a first load.
	WindowStart *time.Time
	// WindowEnd is the run's logical start for StrategyLastRun, otherwise nil.
	WindowEnd *time.Time
	// CursorMeta is the metadata stored with the cursor (cursor_meta) when the run expanded
	// its items, e.g. the key that breaks ties at the cursor's time; nil on a first load.
	CursorMeta json.RawMessage
	// Logger should already carry job_id, run_id, attempt_id and item_no.
	Logger zerolog.Logger
	// Target is the transaction on the job's target database, nil when the job has no
	// target.
	Target pgx.Tx
	// Limiter paces requests to the job's named source ([SourceKey]), shared by every worker
	// and job naming it; nil when the job names none ([Item.Wait] then returns at once).
	Limiter Limiter
}

// Limiter paces requests to a shared source. The executor's limiter is one GCRA bucket per
// named source in Redis, so every worker process and every job naming the source draw from
// the same rate.
type Limiter interface {
	// Wait blocks until one request may go to the source, or ctx ends (its error is then
	// returned, wrapping ctx's).
	Wait(ctx context.Context) error
}

// unlimited is the limiter of an item whose job names no source.
type unlimited struct{}

func (unlimited) Wait(ctx context.Context) error { return ctx.Err() }

// Item is one attempt of one item as its handler sees it. The executor's values are
// reachable only through methods so a handler cannot change them; the recorders
// are safe for concurrent use by the handler's goroutines.
type Item struct {
	spec ItemSpec

	read, written, pages atomic.Int64
	watermark            atomic.Pointer[time.Time]
	cursorMeta           atomic.Pointer[json.RawMessage]
	note, progress       atomic.Pointer[string]
}

// NewItem returns the item described by spec. The spec's slices and times are
// copied, so later changes to spec do not reach the item.
func NewItem(spec ItemSpec) *Item {
	spec.Params = bytes.Clone(spec.Params)
	spec.Config = bytes.Clone(spec.Config)
	spec.WindowStart = cloneTime(spec.WindowStart)
	spec.WindowEnd = cloneTime(spec.WindowEnd)
	spec.CursorMeta = bytes.Clone(spec.CursorMeta)
	return &Item{spec: spec}
}

// JobID is the job's identifier (dw_etl_jobs.job_id).
func (it *Item) JobID() string { return it.spec.JobID }

// Kind is the job's kind, the key its handler was registered under.
func (it *Item) Kind() string { return it.spec.Kind }

// RunID identifies the run this item belongs to.
func (it *Item) RunID() uuid.UUID { return it.spec.RunID }

// AttemptID identifies this attempt.
func (it *Item) AttemptID() uuid.UUID { return it.spec.AttemptID }

// AttemptNo orders this attempt among all attempts of the run.
func (it *Item) AttemptNo() int64 { return it.spec.AttemptNo }

// ItemAttempt is 1 on the item's first attempt and counts up on each retry.
func (it *Item) ItemAttempt() int { return it.spec.ItemAttempt }

// MaxAttempts is how many attempts the item gets before it fails for good.
func (it *Item) MaxAttempts() int { return it.spec.MaxAttempts }

// ItemNo is the item's number within the run.
func (it *Item) ItemNo() int { return it.spec.ItemNo }

// ParamHash is the SHA-256 of the item's canonical params; it keys the item's cursor.
func (it *Item) ParamHash() string { return it.spec.ParamHash }

// DryRun reports whether the run is a dry run: the target transaction is rolled back
// and no cursor moves. Check it only before side effects outside [Item.Target].
func (it *Item) DryRun() bool { return it.spec.DryRun }

// Strategy is the job's incremental strategy.
func (it *Item) Strategy() Strategy { return it.spec.Strategy }

// Window is the range to load; see [Window].
func (it *Item) Window() Window {
	return Window{Start: cloneTime(it.spec.WindowStart), End: cloneTime(it.spec.WindowEnd)}
}

// CursorMeta returns a copy of the metadata stored with the item's cursor, nil on a first
// load or when none was stored.
func (it *Item) CursorMeta() json.RawMessage { return bytes.Clone(it.spec.CursorMeta) }

// Log returns the item's logger, tagged with job_id, run_id, attempt_id and item_no.
// Lines written to it are stored with the run's logs.
func (it *Item) Log() *zerolog.Logger { return &it.spec.Logger }

// Target is the transaction on the job's target database, nil when the job has none.
// Do not commit or roll it back: the executor does, together with the item's result.
func (it *Item) Target() pgx.Tx { return it.spec.Target }

// Limiter is the rate limiter of the job's named source (config key [SourceKey]); a job
// naming no source gets one that never waits. Call Wait before every request to the source.
func (it *Item) Limiter() Limiter {
	if it.spec.Limiter == nil {
		return unlimited{}
	}
	return it.spec.Limiter
}

// Wait blocks until the job's named source allows one more request (see [Item.Limiter]), or
// ctx ends.
func (it *Item) Wait(ctx context.Context) error { return it.Limiter().Wait(ctx) }

// RawParams returns a copy of the item's canonical params, nil for a job without
// params.
func (it *Item) RawParams() json.RawMessage { return bytes.Clone(it.spec.Params) }

// RawConfig returns a copy of the job's configuration.
func (it *Item) RawConfig() json.RawMessage { return bytes.Clone(it.spec.Config) }

// Params decodes the item's params into v (a pointer), rejecting unknown fields so a
// misspelt parameter fails instead of being ignored. Numbers decoded into an
// interface become json.Number, so large integers keep their digits. Empty params
// decode as {}. A failure is returned already marked as a DATA error.
func (it *Item) Params(v any) error {
	return decodeStrict("params", it.spec.Params, v)
}

// Config decodes the job's configuration into v under the same rules as
// [Item.Params], leaving out the keys the executor reads itself ([ExecutorConfigKeys]),
// so a kind's strict decoding accepts a job that names its target database.
func (it *Item) Config(v any) error {
	raw, err := KindConfig(it.spec.Config)
	if err != nil {
		return err
	}
	return decodeStrict("config", raw, v)
}

// decodeStrict decodes one JSON value into v and marks every failure as DATA: the
// input came from the job's definition or the run's params, and retrying cannot fix
// it.
func decodeStrict(what string, raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field != "" {
			return DataError(fmt.Errorf("decode %s: field %q: %w", what, ute.Field, err))
		}
		// Unknown fields and syntax errors already name the field or offset.
		return DataError(fmt.Errorf("decode %s: %w", what, err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return DataError(fmt.Errorf("decode %s: unexpected data after the value", what))
	}
	return nil
}

// AddRead adds n to the records read. Negative n is ignored so counts never go
// backwards.
func (it *Item) AddRead(n int64) { addNonNegative(&it.read, n) }

// AddWritten adds n to the records written (in a dry run: the records that would
// have been written). Negative n is ignored.
func (it *Item) AddWritten(n int64) { addNonNegative(&it.written, n) }

// AddPages adds n to the pages fetched. Negative n is ignored.
func (it *Item) AddPages(n int64) { addNonNegative(&it.pages, n) }

func addNonNegative(c *atomic.Int64, n int64) {
	if n > 0 {
		c.Add(n)
	}
}

// ObserveWatermark records t as a candidate watermark for [StrategyModifiedDate]; the
// item keeps the greatest. The zero time is ignored. Observe only rows that are part
// of what the item commits, since the cursor moves to the watermark.
func (it *Item) ObserveWatermark(t time.Time) {
	if t.IsZero() {
		return
	}
	t = t.Round(0) // drop the monotonic reading; only wall time is comparable to data
	for {
		cur := it.watermark.Load()
		if cur != nil && !t.After(*cur) {
			return
		}
		if it.watermark.CompareAndSwap(cur, &t) {
			return
		}
	}
}

// SetCursorMeta asks the executor to store meta (a JSON value) with the item's cursor when
// the cursor moves, e.g. the key of the last row read at the watermark's time. The last
// call wins; meta that is not valid JSON is ignored.
func (it *Item) SetCursorMeta(meta json.RawMessage) {
	if !json.Valid(meta) {
		return
	}
	c := json.RawMessage(bytes.Clone(meta))
	it.cursorMeta.Store(&c)
}

// SetNote records a one-line account of what the load did (rows read, rows at the boundary
// re-read, why the cursor held); it is stored as the item's cursor note. The last call wins.
func (it *Item) SetNote(note string) { it.note.Store(&note) }

// SetProgress records a short message saying where a long item is (a page, a table); the
// executor shows it with the live counters while the item runs. The last call wins.
func (it *Item) SetProgress(msg string) { it.progress.Store(&msg) }

// Metrics returns what the handler has reported so far. The executor reads it after
// the handler returns.
func (it *Item) Metrics() Metrics {
	return Metrics{
		RecordsRead:    it.read.Load(),
		RecordsWritten: it.written.Load(),
		Pages:          it.pages.Load(),
		Watermark:      cloneTime(it.watermark.Load()),
		CursorMeta:     loadRaw(&it.cursorMeta),
		Note:           loadString(&it.note),
		Progress:       loadString(&it.progress),
	}
}

func loadRaw(p *atomic.Pointer[json.RawMessage]) json.RawMessage {
	if v := p.Load(); v != nil {
		return bytes.Clone(*v)
	}
	return nil
}

func loadString(p *atomic.Pointer[string]) string {
	if v := p.Load(); v != nil {
		return *v
	}
	return ""
}

func cloneTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := *t
	return &c
}
