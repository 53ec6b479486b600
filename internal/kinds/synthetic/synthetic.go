// Package synthetic owns the built-in "synthetic" kind: a source that is a pure function
// of the item's params, with knobs for latency, failures, panics and hangs, used by the
// demo, tests and benchmarks. It uses only the etl SDK, exactly as a team's own kind would.
//
// The source holds `records` rows for one entity key; row i (0-based) has
// modified_at = base + i*step_seconds. Which rows an item reads depends on the job's
// strategy:
//
//   - none: every row;
//   - modified_date: rows with modified_at > Window().Start (all when nil); the handler
//     observes the greatest modified_at it loaded as the watermark, so a second run
//     reads nothing until `records` grows;
//   - last_run: rows with modified_at in (Window().Start, Window().End], either bound
//     absent when nil.
//
// Rows are read page by page; when the item has a target, each page is upserted into
// the configured table (created on first use) inside the target transaction, or, with
// `append`, inserted with plain INSERTs into a table that allows duplicates, so that a page
// written twice shows as duplicate rows. `crash` SIGKILLs the worker process as the handler
// starts, as an out-of-memory kill would.
package synthetic

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/etlexec/etlexec/etl"
)

// Kind is the kind name the handler is registered under (dw_etl_jobs.kind).
const Kind = "synthetic"

// DefaultTargetTable is the target table when the job's config names none.
const DefaultTargetTable = "etl_synthetic_target"

// Parameter defaults and limits.
const (
	RecordsDefault     = 100
	PageSizeDefault    = 100
	StepSecondsDefault = 60
	BaseDefault        = "2026-01-01T00:00:00Z"

	// MaxRecords keeps seq within the target's int column.
	MaxRecords = math.MaxInt32
	// MaxPageSize bounds the rows held in memory for one page.
	MaxPageSize = 1_000_000
	// keyFromHashLen is how much of the param hash makes the default key.
	keyFromHashLen = 16
)

// ErrInjected is the cause of every failure the fail_* params inject; errors.Is finds it.
var ErrInjected = errors.New("synthetic: injected failure")

// hangIgnoringContext is how long hang_ignore_ctx sleeps.
const hangIgnoringContext = time.Hour

// lastRow is the latest modified_at a source row may have: the greatest instant in
// RFC 3339's four-digit years, safely inside Postgres's timestamptz range.
var lastRow = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// Register adds the synthetic kind to r and declares its config, so jobs apply refuses an
// unknown key.
func Register(r *etl.Registry) {
	r.Register(Kind, Handler)
	etl.DeclareConfig[config](r, Kind)
}

// params are the item's params; fields absent from the JSON keep the defaults set by
// defaultParams.
type params struct {
	Records         int     `json:"records"`
	PageSize        int     `json:"page_size"`
	PageLatencyMS   int     `json:"page_latency_ms"`
	FailProbability float64 `json:"fail_probability"`
	FailCategory    string  `json:"fail_category"`
	FailAttempts    int     `json:"fail_attempts"`
	RetryAfterMS    int     `json:"retry_after_ms"`
	Panic           bool    `json:"panic"`
	Hang            bool    `json:"hang"`
	HangIgnoreCtx   bool    `json:"hang_ignore_ctx"`
	Noop            bool    `json:"noop"`
	Append          bool    `json:"append"`
	Crash           bool    `json:"crash"`
	Key             string  `json:"key"`
	Base            string  `json:"base"`
	StepSeconds     int     `json:"step_seconds"`

	// Derived by validate.
	category etl.Category
	base     time.Time
}

func defaultParams(it *etl.Item) params {
	key := it.ParamHash()
	if len(key) > keyFromHashLen {
		key = key[:keyFromHashLen]
	}
	if key == "" {
		key = Kind
	}
	return params{
		Records:      RecordsDefault,
		PageSize:     PageSizeDefault,
		FailCategory: string(etl.CategoryAPI),
		Key:          key,
		Base:         BaseDefault,
		StepSeconds:  StepSecondsDefault,
	}
}

// validate checks the ranges and fills the derived fields. Errors are not yet marked.
func (p *params) validate() error {
	switch {
	case p.Records < 0 || p.Records > MaxRecords:
		return fmt.Errorf("records %d: want 0..%d", p.Records, MaxRecords)
	case p.PageSize < 1 || p.PageSize > MaxPageSize:
		return fmt.Errorf("page_size %d: want 1..%d", p.PageSize, MaxPageSize)
	case p.PageLatencyMS < 0:
		return fmt.Errorf("page_latency_ms %d: want >= 0", p.PageLatencyMS)
	case math.IsNaN(p.FailProbability) || p.FailProbability < 0 || p.FailProbability > 1:
		return fmt.Errorf("fail_probability %v: want 0..1", p.FailProbability)
	case p.FailAttempts < 0:
		return fmt.Errorf("fail_attempts %d: want >= 0", p.FailAttempts)
	case p.RetryAfterMS < 0:
		return fmt.Errorf("retry_after_ms %d: want >= 0", p.RetryAfterMS)
	case p.Key == "":
		return errors.New("key: want a non-empty string")
	case p.StepSeconds < 1 || p.StepSeconds > math.MaxInt32:
		return fmt.Errorf("step_seconds %d: want 1..%d", p.StepSeconds, math.MaxInt32)
	}
	c, err := etl.ParseCategory(p.FailCategory)
	if err != nil || c == etl.CategoryNone {
		return fmt.Errorf("fail_category %q: want API, DB, DATA or SYSTEM", p.FailCategory)
	}
	p.category = c
	base, err := time.Parse(time.RFC3339Nano, p.Base)
	if err != nil {
		return fmt.Errorf("base: %w", err)
	}
	p.base = base.UTC()
	if p.Records > 0 {
		// Both factors are below 2^31, so the product cannot overflow.
		span := int64(p.Records-1) * int64(p.StepSeconds)
		if p.base.After(lastRow) || span > lastRow.Unix()-p.base.Unix() {
			return fmt.Errorf("base %s + %d rows × %ds runs past %s", p.Base, p.Records, p.StepSeconds, lastRow.Format(time.RFC3339))
		}
	}
	return nil
}

// modifiedAt is the modified_at of source row i. It counts in Unix seconds because
// the span can exceed what a time.Duration holds (292 years).
func (p *params) modifiedAt(i int) time.Time {
	return time.Unix(p.base.Unix()+int64(i)*int64(p.StepSeconds), int64(p.base.Nanosecond())).UTC()
}

// rowsAfter returns the first row whose modified_at is after t, in [0, Records].
func (p *params) rowsAfter(t time.Time) int {
	return sort.Search(p.Records, func(i int) bool { return p.modifiedAt(i).After(t) })
}

// rowRange returns the rows [lo, hi) the item reads for its strategy and window.
func (p *params) rowRange(it *etl.Item) (lo, hi int, err error) {
	w := it.Window()
	switch s := it.Strategy(); s {
	case etl.StrategyNone, "":
		return 0, p.Records, nil
	case etl.StrategyModifiedDate:
		lo, hi = 0, p.Records
	case etl.StrategyLastRun:
		lo, hi = 0, p.Records
		if w.End != nil {
			hi = p.rowsAfter(*w.End) // modified_at <= End
		}
	default:
		return 0, 0, etl.DataError(fmt.Errorf("synthetic: unknown strategy %q", s))
	}
	if w.Start != nil {
		lo = p.rowsAfter(*w.Start) // modified_at > Start
	}
	return lo, max(lo, hi), nil
}

// config is the job's config.
type config struct {
	TargetTable string `json:"target_table"`
}

// targetIdent splits the configured table name on '.' into an identifier to quote.
func (c config) targetIdent() (pgx.Identifier, error) {
	parts := strings.Split(c.TargetTable, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf("target_table %q: want table or schema.table", c.TargetTable)
	}
	for _, part := range parts {
		switch {
		case part == "":
			return nil, fmt.Errorf("target_table %q: empty name", c.TargetTable)
		case len(part) > 63:
			// Postgres would silently truncate it to 63 bytes.
			return nil, fmt.Errorf("target_table %q: name longer than 63 bytes", c.TargetTable)
		case strings.ContainsRune(part, 0):
			return nil, fmt.Errorf("target_table %q: contains a NUL byte", c.TargetTable)
		}
	}
	return pgx.Identifier(parts), nil
}

// Handler runs one attempt of one synthetic item; see the package documentation.
//
// Injected faults (fail_*, panic) fire after the first page has been read and written,
// so an attempt leaves partial work in the target transaction for the executor to roll
// back; with no rows to read they fire before returning.
func Handler(ctx context.Context, it *etl.Item) error {
	p := defaultParams(it)
	if err := it.Params(&p); err != nil {
		return err
	}
	if err := p.validate(); err != nil {
		return etl.DataError(fmt.Errorf("synthetic params: %w", err))
	}
	cfg := config{TargetTable: DefaultTargetTable}
	if err := it.Config(&cfg); err != nil {
		return err
	}
	table, err := cfg.targetIdent()
	if err != nil {
		return etl.DataError(fmt.Errorf("synthetic config: %w", err))
	}
	if p.Crash {
		it.Log().Warn().Msg("synthetic: crash requested: SIGKILL to this process")
		// The whole process dies at once, as the kernel's OOM killer would do it: no deferred
		// call, no attempt end, no goodbye to Redis.
		if err := syscall.Kill(os.Getpid(), syscall.SIGKILL); err != nil {
			return etl.SystemError(fmt.Errorf("synthetic: crash: %w", err))
		}
		<-ctx.Done() // not reached: the kernel ends the process as the kill returns
		return ctx.Err()
	}
	if p.Noop {
		return nil
	}
	if p.HangIgnoreCtx {
		time.Sleep(hangIgnoringContext) // deliberately deaf to ctx: the hang-past-timeout fault
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("synthetic: after hanging %s: %w", hangIgnoringContext, err)
		}
	}
	if p.Hang {
		<-ctx.Done()
		return fmt.Errorf("synthetic: hang: %w", ctx.Err())
	}
	lo, hi, err := p.rowRange(it)
	if err != nil {
		return err
	}

	l := loader{it: it, p: &p, table: table}
	faulted := false
	for start := lo; start < hi; start += p.PageSize {
		if err := l.page(ctx, start, min(start+p.PageSize, hi)); err != nil {
			return err
		}
		if !faulted {
			faulted = true
			if err := p.fault(it); err != nil {
				return err
			}
		}
	}
	if !faulted {
		if err := p.fault(it); err != nil {
			return err
		}
	}
	m := it.Metrics()
	it.Log().Debug().Int64("records_read", m.RecordsRead).Int64("records_written", m.RecordsWritten).
		Int64("pages", m.Pages).Msg("synthetic item loaded")
	return nil
}

// fault panics or returns the injected failure when the params ask for one on this
// attempt, and returns nil otherwise.
func (p *params) fault(it *etl.Item) error {
	if p.Panic {
		panic(fmt.Sprintf("synthetic: injected panic (item %d, attempt %d)", it.ItemNo(), it.ItemAttempt()))
	}
	var err error
	switch {
	case it.ItemAttempt() <= p.FailAttempts:
		err = fmt.Errorf("attempt %d of fail_attempts %d: %w", it.ItemAttempt(), p.FailAttempts, ErrInjected)
	case p.FailProbability > 0 && draw(it.ParamHash(), it.ItemAttempt()) < p.FailProbability:
		err = fmt.Errorf("attempt %d with fail_probability %v: %w", it.ItemAttempt(), p.FailProbability, ErrInjected)
	default:
		return nil
	}
	switch p.category {
	case etl.CategoryDB:
		return etl.DBError(err)
	case etl.CategoryData:
		return etl.DataError(err)
	case etl.CategorySystem:
		return etl.SystemError(err)
	}
	if p.RetryAfterMS > 0 {
		return etl.RetryAfter(err, time.Duration(p.RetryAfterMS)*time.Millisecond)
	}
	return etl.APIError(err)
}

// draw returns a number in [0, 1) that depends only on the param hash and the item
// attempt, so a given attempt of a given item always makes the same decision.
func draw(paramHash string, itemAttempt int) float64 {
	h := sha256.Sum256([]byte(paramHash + "\x00" + strconv.Itoa(itemAttempt)))
	return float64(binary.BigEndian.Uint64(h[:8])>>11) / (1 << 53)
}

// loader reads pages of one item and writes them to its target.
type loader struct {
	it       *etl.Item
	p        *params
	table    pgx.Identifier
	prepared bool // the target table is known to exist in this transaction
}

// page reads source rows [from, to) and writes them to the target, if any.
func (l *loader) page(ctx context.Context, from, to int) error {
	if err := l.wait(ctx); err != nil {
		return fmt.Errorf("synthetic: read rows %d..%d: %w", from, to-1, err)
	}
	n := to - from
	keys := make([]string, n)
	seqs := make([]int32, n)
	times := make([]time.Time, n)
	payloads := make([]string, n)
	for j := range n {
		i := from + j
		keys[j] = l.p.Key
		seqs[j] = int32(i) // i < MaxRecords
		times[j] = l.p.modifiedAt(i)
		payloads[j] = fmt.Sprintf("%s #%d", l.p.Key, i)
	}
	l.it.AddRead(int64(n))
	l.it.AddPages(1)

	if tx := l.it.Target(); tx != nil {
		if err := l.prepare(ctx, tx); err != nil {
			return l.dbError(ctx, fmt.Sprintf("create target table %s", l.table.Sanitize()), err)
		}
		stmt, doing := `INSERT INTO `+l.table.Sanitize()+` (key, seq, modified_at, payload)
			SELECT * FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::text[])`, "insert"
		if !l.p.Append {
			stmt += ` ON CONFLICT (key, seq) DO UPDATE SET modified_at = excluded.modified_at, payload = excluded.payload`
			doing = "upsert"
		}
		tag, err := tx.Exec(ctx, stmt, keys, seqs, times, payloads)
		if err != nil {
			return l.dbError(ctx, fmt.Sprintf("%s rows %d..%d into %s", doing, from, to-1, l.table.Sanitize()), err)
		}
		l.it.AddWritten(tag.RowsAffected())
	}
	if l.it.Strategy() == etl.StrategyModifiedDate {
		l.it.ObserveWatermark(times[n-1]) // rows ascend, so the last is the page's greatest
	}
	return nil
}

// wait sleeps the page latency, returning early with ctx's error when ctx is done.
func (l *loader) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if l.p.PageLatencyMS == 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(l.p.PageLatencyMS) * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// TargetDDL creates the kind's target table name (quoted) if it is missing: keyed on (key, seq)
// for upserts, or, with appendRows, on a bigserial id alone so duplicates are kept. Items create
// it themselves; a deployment (or a test) that creates it first spares them the serialising
// advisory lock.
func TargetDDL(name string, appendRows bool) string {
	if appendRows {
		return `CREATE TABLE IF NOT EXISTS ` + name + ` (
			id bigserial PRIMARY KEY,
			key text,
			seq int,
			modified_at timestamptz,
			payload text,
			loaded_at timestamptz DEFAULT now()
		)`
	}
	return `CREATE TABLE IF NOT EXISTS ` + name + ` (
			key text,
			seq int,
			modified_at timestamptz,
			payload text,
			loaded_at timestamptz DEFAULT now(),
			PRIMARY KEY (key, seq)
		)`
}

// prepare creates the target table unless it already exists: keyed on (key, seq) for upserts,
// or, with append, on a bigserial id alone so duplicates are kept. Concurrent transactions
// creating the same table collide on pg_type's unique index, so creators serialise on
// an advisory lock held until their transaction ends; the to_regclass check first
// keeps transactions that find the table committed from taking it at all.
func (l *loader) prepare(ctx context.Context, tx pgx.Tx) error {
	if l.prepared {
		return nil
	}
	name := l.table.Sanitize()
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, name); err != nil {
			return err
		}
		ddl := TargetDDL(name, l.p.Append)
		if _, err := tx.Exec(ctx, ddl); err != nil {
			return err
		}
	}
	l.prepared = true
	return nil
}

// dbError describes a failed target statement. When ctx is done the statement failed
// because of it, so the context's error is what the executor sees.
func (l *loader) dbError(ctx context.Context, doing string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("synthetic: %s: %w (%v)", doing, ctxErr, err)
	}
	return etl.DBError(fmt.Errorf("synthetic: %s: %w", doing, err))
}
