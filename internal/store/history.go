package store

// History: the read side operators query — runs, one run's breakdown, items, attempts, logs and
// cursors — shared by `enqueuer runs|items|attempts|logs|cursors` and the /api/v1 handlers, so
// the CLI and the API answer the same question with the same SQL. Listings are keyset-paginated:
// a Page carries an opaque Next token that the caller passes back as After; no listing ever
// OFFSETs, so page 1000 costs what page 1 costs.

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store/sqlcdb"
)

const (
	// PageLimitDefault is the page size when a filter leaves Limit at zero.
	PageLimitDefault = 50
	// PageLimitMax is the largest page a caller may ask for.
	PageLimitMax = 1000
)

// The values the schema's CHECK constraints allow, in display order.
var (
	RunStatuses     = runstate.Strings(runstate.Statuses...)
	ErrorCategories = []string{"API", "DB", "DATA", "SYSTEM", "NONE"}
	LogLevels       = []string{"trace", "debug", "info", "warn", "error", "fatal", "panic"}
)

// ErrBadFilter matches (errors.Is) every *FilterError.
var ErrBadFilter = errors.New("bad filter")

// FilterError is a history filter the caller got wrong. Param is the filter's name as the API
// spells it (the CLI flag is the same with "-" for "_"), so each front end can point at the
// exact input.
type FilterError struct {
	Param  string
	Value  string
	Reason string
}

func (e *FilterError) Error() string { return fmt.Sprintf("%s %q: %s", e.Param, e.Value, e.Reason) }

// Is makes errors.Is(err, ErrBadFilter) true.
func (e *FilterError) Is(target error) bool { return target == ErrBadFilter }

// Page is one page of a listing, newest or lowest first as the listing documents. Next is the
// token for the following page (pass it as the filter's After); it is empty on the last page.
type Page[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
}

// Run is a run as the store returns it and history shows it (the API's Run).
type Run struct {
	RunID             uuid.UUID       `json:"run_id"`
	JobID             string          `json:"job_id"`
	Status            runstate.Status `json:"status"`
	ErrorCategory     etl.Category    `json:"error_category"`
	ErrorMessage      *string         `json:"error_message"`
	DryRun            bool            `json:"dry_run"`
	Trigger           string          `json:"trigger"`
	Params            json.RawMessage `json:"params"`
	LogicalStart      *time.Time      `json:"logical_start"`
	ScheduledFor      *time.Time      `json:"scheduled_for"`
	CreatedAt         time.Time       `json:"created_at"`
	StartedAt         time.Time       `json:"started_at"`
	EnqueuedAt        *time.Time      `json:"enqueued_at"`
	EndedAt           *time.Time      `json:"ended_at"`
	DurationMs        *int64          `json:"duration_ms"`
	AttemptCount      int32           `json:"attempt_count"`
	ItemCount         int32           `json:"item_count"`
	ItemsDeduplicated int32           `json:"items_deduplicated"`
	ItemsSucceeded    int32           `json:"items_succeeded"`
	ItemsFailed       int32           `json:"items_failed"`
	ItemsSkipped      int32           `json:"items_skipped"`
	ItemsCancelled    int32           `json:"items_cancelled"`
	RecordsRead       int64           `json:"records_read"`
	RecordsWritten    int64           `json:"records_written"`
	RecordsDiscarded  int64           `json:"records_discarded"`
	PageCount         int64           `json:"page_count"`
	CursorNote        *string         `json:"cursor_note"`
	DeadlineAt        *time.Time      `json:"deadline_at"`
	Metrics           json.RawMessage `json:"metrics"`
	CancelRequestedAt *time.Time      `json:"cancel_requested_at"`
	CancelledBy       *string         `json:"cancelled_by"`
	CancelReason      *string         `json:"cancel_reason"`
	UpdatedAt         time.Time       `json:"updated_at"`
}

func runOf(r sqlcdb.DwEtlRun) Run {
	return Run{
		RunID: r.RunID, JobID: r.JobID, Status: r.Status, ErrorCategory: r.ErrorCategory, ErrorMessage: r.ErrorMessage,
		DryRun: r.DryRun, Trigger: r.Trigger, Params: r.Params, LogicalStart: r.LogicalStart, ScheduledFor: r.ScheduledFor,
		CreatedAt: r.CreatedAt, StartedAt: r.StartedAt, EnqueuedAt: r.EnqueuedAt, EndedAt: r.EndedAt, DurationMs: r.DurationMs,
		AttemptCount: r.AttemptCount, ItemCount: r.ItemCount, ItemsDeduplicated: r.ItemsDeduplicated,
		ItemsSucceeded: r.ItemsSucceeded, ItemsFailed: r.ItemsFailed, ItemsSkipped: r.ItemsSkipped,
		ItemsCancelled: r.ItemsCancelled, RecordsRead: r.RecordsRead, RecordsWritten: r.RecordsWritten,
		RecordsDiscarded: r.RecordsDiscarded, PageCount: r.PageCount, CursorNote: r.CursorNote, DeadlineAt: r.DeadlineAt, Metrics: r.Metrics, CancelRequestedAt: r.CancelRequestedAt, CancelledBy: r.CancelledBy,
		CancelReason: r.CancelReason, UpdatedAt: r.UpdatedAt,
	}
}

// RunFilter selects runs. With JobID the job's runs are read on (job_id, started_at DESC);
// without it, runs across all jobs on (status, started_at DESC), one walk per wanted status.
type RunFilter struct {
	JobID string
	// Status keeps runs in any of these statuses (case-insensitive); empty keeps all.
	Status []string
	// DryRun keeps only dry runs (true) or only real runs (false); nil keeps both.
	DryRun *bool
	// Since (inclusive) and Until (exclusive) bound started_at.
	Since, Until *time.Time
	// Limit is the page size: 0 means PageLimitDefault, at most PageLimitMax.
	Limit int
	// After is the Next token of the previous page.
	After string
}

// HistoryRuns lists runs newest first (started_at DESC, run_id DESC).
func (s *Store) HistoryRuns(ctx context.Context, f RunFilter) (Page[Run], error) {
	limit, err := pageLimit(f.Limit)
	if err != nil {
		return Page[Run]{}, err
	}
	statuses, err := oneOf("status", f.Status, RunStatuses, strings.ToUpper)
	if err != nil {
		return Page[Run]{}, err
	}
	if f.Since != nil && f.Until != nil && !f.Since.Before(*f.Until) {
		return Page[Run]{}, &FilterError{Param: "since", Value: f.Since.Format(time.RFC3339Nano),
			Reason: "must be before until " + f.Until.Format(time.RFC3339Nano)}
	}
	var afterTS *time.Time
	var afterID *uuid.UUID
	if f.After != "" {
		ts, id, err := decodeRunToken(f.After)
		if err != nil {
			return Page[Run]{}, err
		}
		afterTS, afterID = &ts, &id
	}
	var rows []sqlcdb.DwEtlRun
	if f.JobID != "" {
		rows, err = s.q.HistoryJobRuns(ctx, sqlcdb.HistoryJobRunsParams{
			JobID: f.JobID, Since: f.Since, Until: f.Until, AfterStartedAt: afterTS, AfterRunID: afterID,
			Statuses: statuses, DryRun: f.DryRun, RowLimit: limit + 1,
		})
	} else {
		if len(statuses) == 0 {
			statuses = RunStatuses
		}
		rows, err = s.q.HistoryRecentRuns(ctx, sqlcdb.HistoryRecentRunsParams{
			Statuses: statuses, Since: f.Since, Until: f.Until, AfterStartedAt: afterTS, AfterRunID: afterID,
			DryRun: f.DryRun, RowLimit: limit + 1,
		})
	}
	if err != nil {
		if f.JobID != "" {
			return Page[Run]{}, fmt.Errorf("list runs of job %q: %w", f.JobID, err)
		}
		return Page[Run]{}, fmt.Errorf("list recent runs: %w", err)
	}
	return paginate(rows, limit, runOf, func(r Run) string { return encodeRunToken(r.StartedAt, r.RunID) }), nil
}

// CountByStatus is how many rows share a status and error category.
type CountByStatus struct {
	Status        runstate.Status `json:"status"`
	ErrorCategory etl.Category    `json:"error_category"`
	Count         int             `json:"count"`
}

// AttemptSummary rolls up a run's attempts, from its counters.
type AttemptSummary struct {
	Total   int `json:"total"`
	Running int `json:"running"`
	// Retries counts attempts that ended with a retry following; Lost those closed because
	// their worker died.
	Retries        int   `json:"retries"`
	Lost           int   `json:"lost"`
	MaxItemAttempt int   `json:"max_item_attempt"`
	BackoffMsTotal int64 `json:"backoff_ms_total"`
	// LastEndedAt is when the last attempt ended; nil when none did.
	LastEndedAt *time.Time `json:"last_ended_at"`
}

// RunningShownMax is how many of a run's running items RunDetail lists.
const RunningShownMax = 20

// RunningItem is a running item with what its worker last reported (at its heartbeat).
type RunningItem struct {
	ItemNo    int32  `json:"item_no"`
	ParamHash string `json:"param_hash"`
	// ItemAttempt is the running attempt's number within the item (1..n); AttemptNo is its
	// attempt_no within the run.
	ItemAttempt    int32      `json:"item_attempt"`
	AttemptNo      int64      `json:"attempt_no"`
	StartedAt      time.Time  `json:"started_at"`
	Worker         string     `json:"worker"`
	RecordsRead    int64      `json:"records_read"`
	RecordsWritten int64      `json:"records_written"`
	PageCount      int64      `json:"page_count"`
	Progress       *string    `json:"progress"`
	ProgressAt     *time.Time `json:"progress_at"`
}

// RunDetail is one run with its items and attempts rolled up. Everything in it comes from the
// run row and its counters (at most ProgressShards rows) and, while items run, from the live
// workers' held items: O(1) in the run's items.
type RunDetail struct {
	Run      Run             `json:"run"`
	Items    []CountByStatus `json:"items"`
	Attempts AttemptSummary  `json:"attempts"`
	// Running lists up to RunningShownMax running items, oldest attempt first.
	Running []RunningItem `json:"running"`
	// RunningMore counts running items not listed: past RunningShownMax, or claimed since their
	// worker's last heartbeat (they show from the next one).
	RunningMore int `json:"running_more"`
}

const lastEndedSQL = `SELECT max(last_ended_at) FROM public.dw_etl_run_progress WHERE run_id = $1`

// HistoryRun loads one run with its items by status × error category and its attempts
// summary, from its counters. It returns ErrNotFound for an unknown run.
func (s *Store) HistoryRun(ctx context.Context, runID uuid.UUID) (RunDetail, error) {
	r, err := s.q.GetRun(ctx, runID)
	if err != nil {
		return RunDetail{}, fmt.Errorf("get run %s: %w", runID, mapErr(err))
	}
	c, err := s.RunCounters(ctx, runID)
	if err != nil {
		return RunDetail{}, err
	}
	d := RunDetail{Run: runOf(r), Items: []CountByStatus{}}
	add := func(status runstate.Status, cat etl.Category, n int64) {
		if n > 0 {
			d.Items = append(d.Items, CountByStatus{Status: status, ErrorCategory: cat, Count: int(n)})
		}
	}
	add(runstate.StatusCancelled, etl.CategoryNone, c.Cancelled)
	for _, cat := range []etl.Category{etl.CategoryAPI, etl.CategoryDB, etl.CategoryData, etl.CategorySystem} {
		add(runstate.StatusFailed, cat, c.FailedBy[cat])
	}
	add(runstate.StatusPending, etl.CategoryNone, int64(r.ItemCount)-c.Settled()-c.Running())
	add(runstate.StatusRunning, etl.CategoryNone, c.Running())
	add(runstate.StatusSkipped, etl.CategoryNone, c.Skipped)
	add(runstate.StatusSuccess, etl.CategoryNone, c.Succeeded)
	a := &d.Attempts
	a.Total, a.Running, a.Retries, a.Lost = int(c.AttemptsStarted), int(c.Running()), int(c.Retries), int(c.AttemptsLost)
	a.MaxItemAttempt, a.BackoffMsTotal = c.MaxItemAttempt, c.BackoffMs
	if err := s.pool.QueryRow(ctx, lastEndedSQL, runID).Scan(&a.LastEndedAt); err != nil {
		return RunDetail{}, fmt.Errorf("summarise attempts of run %s: %w", runID, err)
	}
	if d.Running, err = s.runningItems(ctx, runID, a.Running); err != nil {
		return RunDetail{}, err
	}
	d.RunningMore = max(0, a.Running-len(d.Running))
	return d, nil
}

// runningItems lists up to RunningShownMax of the run's running items; running is how many
// its counters say run (none: no query).
func (s *Store) runningItems(ctx context.Context, runID uuid.UUID, running int) ([]RunningItem, error) {
	out := []RunningItem{}
	if running <= 0 {
		return out, nil
	}
	rows, err := s.q.HistoryRunRunning(ctx, sqlcdb.HistoryRunRunningParams{RunID: runID, RowLimit: RunningShownMax})
	if err != nil {
		return nil, fmt.Errorf("list running items of run %s: %w", runID, err)
	}
	for _, r := range rows {
		out = append(out, RunningItem{ItemNo: r.ItemNo, ParamHash: r.ParamHash, ItemAttempt: r.ItemAttempt,
			AttemptNo: r.AttemptNo, StartedAt: r.StartedAt, Worker: r.WorkerName, RecordsRead: r.RecordsRead,
			RecordsWritten: r.RecordsWritten, PageCount: r.PageCount, Progress: r.Progress, ProgressAt: r.ProgressAt})
	}
	return out, nil
}

// ItemRow is an item as history shows it.
type ItemRow struct {
	ItemNo         int32           `json:"item_no"`
	Params         json.RawMessage `json:"params"`
	ParamHash      string          `json:"param_hash"`
	Status         runstate.Status `json:"status"`
	ErrorCategory  etl.Category    `json:"error_category"`
	ErrorMessage   *string         `json:"error_message"`
	Attempts       int32           `json:"attempts"`
	LostAttempts   int32           `json:"lost_attempts"`
	Generation     int32           `json:"generation"`
	NextRetryAt    *time.Time      `json:"next_retry_at"`
	StartedAt      *time.Time      `json:"started_at"`
	EndedAt        *time.Time      `json:"ended_at"`
	DurationMs     *int64          `json:"duration_ms"`
	RecordsRead    int64           `json:"records_read"`
	RecordsWritten int64           `json:"records_written"`
	PageCount      int64           `json:"page_count"`
	CursorStart    *time.Time      `json:"cursor_start"`
	CursorEnd      *time.Time      `json:"cursor_end"`
	CursorNote     *string         `json:"cursor_note"`
}

func itemRow(i sqlcdb.HistoryItemsRow) ItemRow {
	return ItemRow{
		// The status is computed (RUNNING while claimed), so sqlc types it as text.
		ItemNo: i.ItemNo, Params: i.Params, ParamHash: i.ParamHash, Status: runstate.Status(i.Status), ErrorCategory: i.ErrorCategory,
		ErrorMessage: i.ErrorMessage, Attempts: i.Attempts, LostAttempts: i.LostAttempts, Generation: i.Generation,
		NextRetryAt: i.NextRetryAt,
		StartedAt:   i.StartedAt, EndedAt: i.EndedAt, DurationMs: i.DurationMs, RecordsRead: i.RecordsRead,
		RecordsWritten: i.RecordsWritten, PageCount: i.PageCount, CursorStart: i.CursorStart, CursorEnd: i.CursorEnd,
		CursorNote: i.CursorNote,
	}
}

// ItemFilter selects items of one run.
type ItemFilter struct {
	RunID uuid.UUID
	// Status and Category keep items in any of the given values (case-insensitive).
	Status   []string
	Category []string
	// ParamHash keeps the one item of that param set.
	ParamHash string
	Limit     int
	After     string
}

// HistoryItems lists a run's items in item_no order. It returns ErrNotFound for an unknown run.
func (s *Store) HistoryItems(ctx context.Context, f ItemFilter) (Page[ItemRow], error) {
	limit, err := pageLimit(f.Limit)
	if err != nil {
		return Page[ItemRow]{}, err
	}
	statuses, err := oneOf("status", f.Status, RunStatuses, strings.ToUpper)
	if err != nil {
		return Page[ItemRow]{}, err
	}
	categories, err := oneOf("category", f.Category, ErrorCategories, strings.ToUpper)
	if err != nil {
		return Page[ItemRow]{}, err
	}
	var after int32
	if f.After != "" {
		b, err := decodeToken(f.After, tokenItems, 4)
		if err != nil {
			return Page[ItemRow]{}, err
		}
		after = int32(binary.BigEndian.Uint32(b))
	}
	var rows []sqlcdb.HistoryItemsRow
	if f.ParamHash != "" {
		var byHash []sqlcdb.HistoryItemsByParamHashRow
		byHash, err = s.q.HistoryItemsByParamHash(ctx, sqlcdb.HistoryItemsByParamHashParams{RunID: f.RunID,
			ParamHash: f.ParamHash, AfterItemNo: after, Statuses: statuses, Categories: categories, RowLimit: limit + 1})
		for _, r := range byHash {
			rows = append(rows, sqlcdb.HistoryItemsRow(r))
		}
	} else {
		rows, err = s.q.HistoryItems(ctx, sqlcdb.HistoryItemsParams{RunID: f.RunID, AfterItemNo: after,
			Statuses: statuses, Categories: categories, RowLimit: limit + 1})
	}
	if err != nil {
		return Page[ItemRow]{}, fmt.Errorf("list items of run %s: %w", f.RunID, err)
	}
	if len(rows) == 0 {
		if err := s.runMustExist(ctx, f.RunID, "list items"); err != nil {
			return Page[ItemRow]{}, err
		}
	}
	return paginate(rows, limit, itemRow, func(i ItemRow) string {
		return encodeToken(tokenItems, binary.BigEndian.AppendUint32(nil, uint32(i.ItemNo)))
	}), nil
}

// AttemptRow is an attempt as history shows it: retries with their backoff and error details.
type AttemptRow struct {
	AttemptID      uuid.UUID       `json:"attempt_id"`
	AttemptNo      int64           `json:"attempt_no"`
	ItemNo         int32           `json:"item_no"`
	ItemAttempt    int32           `json:"item_attempt"`
	Status         runstate.Status `json:"status"`
	ErrorCategory  etl.Category    `json:"error_category"`
	ErrorMessage   *string         `json:"error_message"`
	ErrorDetail    json.RawMessage `json:"error_detail"`
	BackoffMs      *int64          `json:"backoff_ms"`
	NextRetryAt    *time.Time      `json:"next_retry_at"`
	ScheduledAt    *time.Time      `json:"scheduled_at"`
	StartedAt      time.Time       `json:"started_at"`
	EndedAt        *time.Time      `json:"ended_at"`
	DurationMs     *int64          `json:"duration_ms"`
	RecordsRead    int64           `json:"records_read"`
	RecordsWritten int64           `json:"records_written"`
	// RecordsDiscarded are records written in a target transaction that was rolled back.
	RecordsDiscarded int64      `json:"records_discarded"`
	PageCount        int64      `json:"page_count"`
	Progress         *string    `json:"progress"`
	ProgressAt       *time.Time `json:"progress_at"`
	WorkerID         *string    `json:"worker_id"`
	Solo             bool       `json:"solo"`
	EndedBy          *string    `json:"ended_by"`
}

func attemptRow(a sqlcdb.DwEtlRunAttempt) AttemptRow {
	detail := nilIfEmpty(a.ErrorDetail)
	return AttemptRow{
		AttemptID: a.AttemptID, AttemptNo: a.AttemptNo, ItemNo: a.ItemNo, ItemAttempt: a.ItemAttempt, Status: a.Status,
		ErrorCategory: a.ErrorCategory, ErrorMessage: a.ErrorMessage, ErrorDetail: detail, BackoffMs: a.BackoffMs,
		NextRetryAt: a.NextRetryAt, ScheduledAt: a.ScheduledAt, StartedAt: a.StartedAt,
		EndedAt: a.EndedAt, DurationMs: a.DurationMs, RecordsRead: a.RecordsRead, RecordsWritten: a.RecordsWritten,
		RecordsDiscarded: a.RecordsDiscarded, PageCount: a.PageCount, Progress: a.Progress, ProgressAt: a.ProgressAt,
		WorkerID: a.WorkerID, Solo: a.Solo, EndedBy: a.EndedBy,
	}
}

// AttemptFilter selects attempts of a run, or of one item of it.
type AttemptFilter struct {
	RunID  uuid.UUID
	ItemNo *int32
	Limit  int
	After  string
}

// HistoryAttempts lists attempts in attempt_no order (the order they started). A run's listing
// holds the attempts that ended; one item's also ends with its running attempt, which lives on
// the item until it ends (a run's running attempts are its RUNNING items). It returns
// ErrNotFound for an unknown run.
func (s *Store) HistoryAttempts(ctx context.Context, f AttemptFilter) (Page[AttemptRow], error) {
	limit, err := pageLimit(f.Limit)
	if err != nil {
		return Page[AttemptRow]{}, err
	}
	if f.ItemNo != nil && *f.ItemNo < 1 {
		return Page[AttemptRow]{}, &FilterError{Param: "item", Value: strconv.Itoa(int(*f.ItemNo)), Reason: "item numbers start at 1"}
	}
	var after int64
	if f.After != "" {
		b, err := decodeToken(f.After, tokenAttempts, 8)
		if err != nil {
			return Page[AttemptRow]{}, err
		}
		after = int64(binary.BigEndian.Uint64(b))
	}
	var rows []sqlcdb.DwEtlRunAttempt
	if f.ItemNo != nil {
		rows, err = s.q.HistoryItemAttempts(ctx, sqlcdb.HistoryItemAttemptsParams{RunID: f.RunID, ItemNo: *f.ItemNo,
			AfterAttemptNo: after, RowLimit: limit + 1})
	} else {
		rows, err = s.q.HistoryRunAttempts(ctx, sqlcdb.HistoryRunAttemptsParams{RunID: f.RunID, AfterAttemptNo: after,
			RowLimit: limit + 1})
	}
	if err != nil {
		return Page[AttemptRow]{}, fmt.Errorf("list attempts of run %s: %w", f.RunID, err)
	}
	if len(rows) == 0 {
		if err := s.runMustExist(ctx, f.RunID, "list attempts"); err != nil {
			return Page[AttemptRow]{}, err
		}
	}
	page := paginate(rows, limit, attemptRow, func(a AttemptRow) string {
		return encodeToken(tokenAttempts, binary.BigEndian.AppendUint64(nil, uint64(a.AttemptNo)))
	})
	if f.ItemNo != nil && page.Next == "" {
		// The item's running attempt comes last: it started after every recorded one.
		if err := s.appendRunning(ctx, &page, f.RunID, *f.ItemNo, after, limit); err != nil {
			return Page[AttemptRow]{}, err
		}
	}
	return page, nil
}

// appendRunning adds the item's running attempt (kept on the item until it ends) to the last
// page of its attempts, or starts a next page for it when this one is full.
func (s *Store) appendRunning(ctx context.Context, page *Page[AttemptRow], runID uuid.UUID, itemNo int32, after int64, limit int32) error {
	if n := len(page.Items); n > 0 {
		after = page.Items[n-1].AttemptNo
	}
	r, err := s.q.HistoryItemRunningAttempt(ctx, sqlcdb.HistoryItemRunningAttemptParams{RunID: runID, ItemNo: itemNo, AfterAttemptNo: after})
	if err = mapErr(err); err == ErrNotFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the running attempt of item %d of run %s: %w", itemNo, runID, err)
	}
	if len(page.Items) == int(limit) {
		page.Next = encodeToken(tokenAttempts, binary.BigEndian.AppendUint64(nil, uint64(after)))
		return nil
	}
	page.Items = append(page.Items, AttemptRow{AttemptID: r.AttemptID, AttemptNo: r.AttemptNo, ItemNo: itemNo,
		ItemAttempt: r.ItemAttempt, Status: runstate.StatusRunning, ErrorCategory: etl.CategoryNone,
		StartedAt: r.StartedAt, RecordsRead: r.RecordsRead, RecordsWritten: r.RecordsWritten, PageCount: r.PageCount,
		Progress: r.Progress, ProgressAt: r.ProgressAt, WorkerID: r.WorkerName, Solo: r.Solo})
	return nil
}

// LogLine is one run log line as history shows it.
type LogLine struct {
	LogID     int64           `json:"log_id"`
	TS        time.Time       `json:"ts"`
	AttemptID *uuid.UUID      `json:"attempt_id"`
	ItemNo    *int32          `json:"item_no"`
	Level     string          `json:"level"`
	Message   string          `json:"message"`
	Fields    json.RawMessage `json:"fields"`
}

// LogFilter selects log lines of one run.
type LogFilter struct {
	RunID     uuid.UUID
	AttemptID *uuid.UUID
	ItemNo    *int32
	// Level keeps lines at any of these levels (case-insensitive).
	Level []string
	// Text keeps lines whose message or fields (as JSON text) contain it, case-insensitively
	// (ILIKE; % and _ are literal).
	Text string
	// Fields keeps lines whose fields contain this JSON object (fields @> Fields).
	Fields json.RawMessage
	Limit  int
	After  string
}

// HistoryLogs lists a run's log lines newest first (ts DESC, log_id DESC). It returns
// ErrNotFound for an unknown run.
//
// A query is bounded by the run's own lines, never the month's: dw_etl_run_logs_run_ts_idx
// (run_id, ts) walked backwards, stopping after a page (for a rare level the planner may
// intersect it with (level, ts); it has statistics on level to decide). The statement is assembled
// from the filters given rather than written once with `($n IS NULL OR …)` arms, so each shape
// plans for exactly its predicates (at most 2^6 shapes, each cached by pgx like any other).
//
// Fields containment is jsonb_contains(fields, $n) — the function behind @>, same semantics —
// on purpose: written as `fields @> $n` the planner may BitmapAnd the run's lines with the GIN
// index on fields, whose posting list for a common pair such as {"page":2} spans a third of the
// partition (bench queries -scale small: 8 ms p50, 17 ms p95 against 0.3 ms without it), and
// it has no statistics to tell a common pair from a rare one. The GIN index serves searches
// across runs; within one run the run's lines are the cheaper bound.
func (s *Store) HistoryLogs(ctx context.Context, f LogFilter) (Page[LogLine], error) {
	limit, err := pageLimit(f.Limit)
	if err != nil {
		return Page[LogLine]{}, err
	}
	levels, err := oneOf("level", f.Level, LogLevels, strings.ToLower)
	if err != nil {
		return Page[LogLine]{}, err
	}
	if f.ItemNo != nil && *f.ItemNo < 1 {
		return Page[LogLine]{}, &FilterError{Param: "item", Value: strconv.Itoa(int(*f.ItemNo)), Reason: "item numbers start at 1"}
	}
	var sql strings.Builder
	args := []any{f.RunID}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	sql.WriteString(`SELECT log_id, ts, attempt_id, item_no, level, message, fields FROM public.dw_etl_run_logs WHERE run_id = $1`)
	if f.AttemptID != nil {
		sql.WriteString(" AND attempt_id = " + arg(*f.AttemptID))
	}
	if f.ItemNo != nil {
		sql.WriteString(" AND item_no = " + arg(*f.ItemNo))
	}
	if len(levels) > 0 {
		sql.WriteString(" AND level = ANY(" + arg(levels) + "::text[])")
	}
	if f.Text != "" {
		// The fields' JSON text too: a value logged as a field (a table, an error code) is found.
		p := arg("%" + likeEscaper.Replace(f.Text) + "%")
		sql.WriteString(" AND (message ILIKE " + p + " OR fields::text ILIKE " + p + ")")
	}
	if len(f.Fields) > 0 {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(f.Fields, &obj); err != nil || obj == nil {
			return Page[LogLine]{}, &FilterError{Param: "fields", Value: string(f.Fields), Reason: "want a JSON object, e.g. {\"page\":3}"}
		}
		sql.WriteString(" AND jsonb_contains(fields, " + arg(string(f.Fields)) + "::jsonb)")
	}
	if f.After != "" {
		b, err := decodeToken(f.After, tokenLogs, 16)
		if err != nil {
			return Page[LogLine]{}, err
		}
		ts := time.UnixMicro(int64(binary.BigEndian.Uint64(b[:8]))).UTC()
		id := int64(binary.BigEndian.Uint64(b[8:]))
		// The bare ts bound is what (run_id, ts) can seek on; the OR breaks ties by log_id.
		t, i := arg(ts), arg(id)
		sql.WriteString(" AND ts <= " + t + " AND (ts < " + t + " OR log_id < " + i + ")")
	}
	sql.WriteString(" ORDER BY ts DESC, log_id DESC LIMIT " + arg(limit+1))
	rows, err := s.pool.Query(ctx, sql.String(), args...)
	if err != nil {
		return Page[LogLine]{}, fmt.Errorf("list logs of run %s: %w", f.RunID, err)
	}
	lines, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (LogLine, error) {
		var l LogLine
		err := row.Scan(&l.LogID, &l.TS, &l.AttemptID, &l.ItemNo, &l.Level, &l.Message, &l.Fields)
		return l, err
	})
	if err != nil {
		return Page[LogLine]{}, fmt.Errorf("list logs of run %s: %w", f.RunID, err)
	}
	if len(lines) == 0 {
		if err := s.runMustExist(ctx, f.RunID, "list logs"); err != nil {
			return Page[LogLine]{}, err
		}
	}
	return paginate(lines, limit, func(l LogLine) LogLine { return l }, func(l LogLine) string {
		b := binary.BigEndian.AppendUint64(nil, uint64(l.TS.UnixMicro()))
		return encodeToken(tokenLogs, binary.BigEndian.AppendUint64(b, uint64(l.LogID)))
	}), nil
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// Cursor is one (job, param set) cursor as the store returns it and history shows it.
type Cursor struct {
	ParamHash   string          `json:"param_hash"`
	Params      json.RawMessage `json:"params"`
	Strategy    etl.Strategy    `json:"strategy"`
	CursorValue *time.Time      `json:"cursor_value"`
	CursorMeta  json.RawMessage `json:"cursor_meta"`
	LastRunID   *uuid.UUID      `json:"last_run_id"`
	UpdatedAt   time.Time       `json:"updated_at"`
}

func cursorOf(c sqlcdb.DwEtlIncrementalCursor) Cursor {
	return Cursor{ParamHash: c.ParamHash, Params: c.Params, Strategy: c.Strategy, CursorValue: c.CursorValue,
		CursorMeta: c.CursorMeta, LastRunID: c.LastRunID, UpdatedAt: c.UpdatedAt}
}

// CursorFilter selects the cursors of one job.
type CursorFilter struct {
	JobID string
	Limit int
	After string
}

// HistoryCursors lists a job's cursors, one per param set, in param_hash order. It returns
// ErrNotFound for an unknown job.
func (s *Store) HistoryCursors(ctx context.Context, f CursorFilter) (Page[Cursor], error) {
	limit, err := pageLimit(f.Limit)
	if err != nil {
		return Page[Cursor]{}, err
	}
	var after string
	if f.After != "" {
		b, err := decodeToken(f.After, tokenCursors, -1)
		if err != nil {
			return Page[Cursor]{}, err
		}
		after = string(b)
	}
	rows, err := s.q.HistoryCursors(ctx, sqlcdb.HistoryCursorsParams{JobID: f.JobID, AfterParamHash: after, RowLimit: limit + 1})
	if err != nil {
		return Page[Cursor]{}, fmt.Errorf("list cursors of job %q: %w", f.JobID, err)
	}
	if len(rows) == 0 {
		ok, err := s.q.HistoryJobExists(ctx, f.JobID)
		if err != nil {
			return Page[Cursor]{}, fmt.Errorf("list cursors of job %q: %w", f.JobID, err)
		}
		if !ok {
			return Page[Cursor]{}, fmt.Errorf("list cursors of job %q: %w", f.JobID, ErrNotFound)
		}
	}
	return paginate(rows, limit, cursorOf, func(c Cursor) string { return encodeToken(tokenCursors, []byte(c.ParamHash)) }), nil
}

// ParseTimeBound reads a since/until bound as the CLI and the API accept it: an RFC 3339 time,
// or a duration back from now — Go syntax ("90m", "24h") or whole days ("7d").
func ParseTimeBound(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.AddDate(0, 0, -n), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("want an RFC 3339 time (2006-01-02T15:04:05Z) or a duration back from now (90m, 24h, 7d)")
}

func (s *Store) runMustExist(ctx context.Context, runID uuid.UUID, doing string) error {
	ok, err := s.q.HistoryRunExists(ctx, runID)
	if err != nil {
		return fmt.Errorf("%s of run %s: %w", doing, runID, err)
	}
	if !ok {
		return fmt.Errorf("%s of run %s: %w", doing, runID, ErrNotFound)
	}
	return nil
}

func pageLimit(n int) (int32, error) {
	switch {
	case n == 0:
		return PageLimitDefault, nil
	case n < 0 || n > PageLimitMax:
		return 0, &FilterError{Param: "limit", Value: strconv.Itoa(n), Reason: fmt.Sprintf("want 1..%d", PageLimitMax)}
	}
	return int32(n), nil
}

// paginate converts up to limit rows and, when the query returned the extra row that proves
// another page exists, sets Next from the last row kept.
func paginate[R, T any](rows []R, limit int32, conv func(R) T, token func(T) string) Page[T] {
	p := Page[T]{Items: make([]T, 0, min(len(rows), int(limit)))}
	for i, r := range rows {
		if i == int(limit) {
			p.Next = token(p.Items[len(p.Items)-1])
			break
		}
		p.Items = append(p.Items, conv(r))
	}
	return p
}

// oneOf normalises (trim, case, de-duplicate) values and checks each against allowed.
func oneOf(param string, values, allowed []string, norm func(string) string) ([]string, error) {
	var out []string
	for _, v := range values {
		n := norm(strings.TrimSpace(v))
		if n == "" {
			continue
		}
		if !slices.Contains(allowed, n) {
			return nil, &FilterError{Param: param, Value: v, Reason: "want one of " + strings.Join(allowed, ", ")}
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// Page tokens are base64url of a kind byte and the sort key of the last row shown, so a token
// from one listing is refused by another instead of silently paging the wrong thing.
const (
	tokenRuns     = 'r' // started_at (µs, 8 bytes) + run_id (16)
	tokenItems    = 'i' // item_no (4)
	tokenAttempts = 'a' // attempt_no (8)
	tokenLogs     = 'l' // ts (µs, 8) + log_id (8)
	tokenCursors  = 'c' // param_hash
)

func encodeToken(kind byte, key []byte) string {
	return base64.RawURLEncoding.EncodeToString(append([]byte{kind}, key...))
}

// decodeToken returns the key of a token of kind; size is the key's length, -1 for any.
func decodeToken(tok string, kind byte, size int) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) == 0 || b[0] != kind || (size >= 0 && len(b)-1 != size) || (size < 0 && len(b) == 1) {
		return nil, &FilterError{Param: "after", Value: tok, Reason: "not a page token of this listing; pass the \"next\" value of the previous page"}
	}
	return b[1:], nil
}

func encodeRunToken(startedAt time.Time, runID uuid.UUID) string {
	b := binary.BigEndian.AppendUint64(nil, uint64(startedAt.UnixMicro()))
	return encodeToken(tokenRuns, append(b, runID[:]...))
}

func decodeRunToken(tok string) (time.Time, uuid.UUID, error) {
	b, err := decodeToken(tok, tokenRuns, 24)
	if err != nil {
		return time.Time{}, uuid.Nil, err
	}
	return time.UnixMicro(int64(binary.BigEndian.Uint64(b[:8]))).UTC(), uuid.UUID(b[8:]), nil
}
