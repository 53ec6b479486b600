package store_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/dbtest"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

// histRun is one seeded run.
type histRun struct {
	id      uuid.UUID
	job     string
	status  string
	dry     bool
	started time.Time
}

func histID(n int) uuid.UUID { return uuid.MustParse(fmt.Sprintf("00000000-0000-7000-8000-%012d", n)) }

func day(d, h int) time.Time { return time.Date(2026, 1, d, h, 0, 0, 0, time.UTC) }

// histRuns has two runs of job_a and one of job_b sharing a started_at, so pages must break the
// tie by run_id.
var histRuns = []histRun{
	{histID(1), "job_a", "SUCCESS", false, day(1, 10)},
	{histID(2), "job_a", "FAILED", false, day(2, 10)},
	{histID(3), "job_a", "SUCCESS", true, day(3, 10)},
	{histID(4), "job_a", "PARTIAL_SUCCESS", false, day(4, 10)},
	{histID(5), "job_a", "SUCCESS", false, day(5, 10)},
	{histID(6), "job_a", "FAILED", false, day(5, 10)},
	{histID(7), "job_a", "RUNNING", false, day(6, 10)},
	{histID(11), "job_b", "SUCCESS", false, day(1, 12)},
	{histID(12), "job_b", "FAILED", true, day(3, 12)},
	{histID(13), "job_b", "CANCELLED", false, day(5, 10)},
}

// histDetailRun carries the items, attempts and logs of the fixture.
var histDetailRun = histID(2)

type histFixture struct {
	st       *store.Store
	attempts map[string]uuid.UUID // "item/try" -> attempt id
	logTS    time.Time            // the newest line's ts; the others are older by whole seconds
}

// setupHistory seeds the fixture with plain SQL. Log lines are dated around now: only the log
// partitions around the current month exist.
func setupHistory(t *testing.T) *histFixture {
	t.Helper()
	ctx := t.Context()
	f := &histFixture{st: dbtest.Store(t), attempts: map[string]uuid.UUID{},
		logTS: time.Now().UTC().Truncate(time.Second).Add(-time.Hour)}
	pool := f.st.Pool()
	exec := func(sql string, args ...any) {
		t.Helper()
		_, err := pool.Exec(ctx, sql, args...)
		require.NoError(t, err, sql)
	}
	exec(`INSERT INTO dw_etl_jobs (job_id, kind, supports_incremental, strategy) VALUES
		('job_a', 'synthetic', true, 'modified_date'), ('job_b', 'synthetic', false, 'none'), ('job_c', 'synthetic', false, 'none')`)
	for _, r := range histRuns {
		exec(`INSERT INTO dw_etl_runs (run_id, job_id, status, dry_run, exclusive, started_at, created_at) VALUES ($1, $2, $3, $4, false, $5, $5)`,
			r.id, r.job, r.status, r.dry, r.started)
	}
	exec(`INSERT INTO dw_etl_run_items (run_id, item_no, params, param_hash, status, error_category, cursor_note) VALUES
		($1, 1, '{"shard":1}', 'h1', 'SUCCESS', 'NONE', 'no new rows'),
		($1, 2, '{"shard":2}', 'h2', 'SUCCESS', 'NONE', 'no new rows'),
		($1, 3, '{"shard":3}', 'h3', 'FAILED', 'DB', 'cursor held'),
		($1, 4, '{"shard":4}', 'h4', 'FAILED', 'API', NULL),
		($1, 5, '{"shard":5}', 'h5', 'SKIPPED', 'NONE', NULL)`, histDetailRun)
	// Inserted in start order, which is not item order: attempt_no comes from the sequence.
	for _, a := range []struct {
		item, try int
		status    string
		category  string
		backoffMs *int64
	}{
		{1, 1, "SUCCESS", "NONE", nil},
		{3, 1, "FAILED", "DB", ptr(int64(1000))},
		{4, 1, "FAILED", "API", ptr(int64(2000))},
		{2, 1, "SUCCESS", "NONE", nil},
		{3, 2, "FAILED", "DB", ptr(int64(4000))},
		{4, 2, "FAILED", "API", nil},
		{3, 3, "FAILED", "DB", nil},
	} {
		id := uuid.Must(uuid.NewV7())
		f.attempts[fmt.Sprintf("%d/%d", a.item, a.try)] = id
		var msg, detail any
		if a.status == "FAILED" {
			msg, detail = "upstream timeout", `{"http_status":504}`
		}
		exec(`INSERT INTO dw_etl_run_attempts (attempt_id, run_id, item_no, item_attempt, status, error_category,
			error_message, error_detail, backoff_ms, next_retry_at, started_at, ended_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::bigint,
				CASE WHEN $9::bigint IS NOT NULL THEN timestamptz '2026-01-02 10:10:00+00' + $9::bigint * interval '1 millisecond' END,
				timestamptz '2026-01-02 10:00:00+00' + $10 * interval '1 minute', timestamptz '2026-01-02 10:00:30+00' + $10 * interval '1 minute')`,
			id, histDetailRun, a.item, a.try, a.status, a.category, msg, detail, a.backoffMs, len(f.attempts))
	}
	// The counters the workers would have kept for those items and attempts.
	exec(`UPDATE dw_etl_runs SET item_count = 5 WHERE run_id = $1`, histDetailRun)
	exec(`INSERT INTO dw_etl_run_progress (run_id, shard, attempts_started, attempts_ended, retries, backoff_ms,
		max_item_attempt, succeeded, failed, skipped, failed_api, failed_db, last_ended_at)
		VALUES ($1, 3, 7, 7, 3, 7000, 3, 2, 2, 1, 1, 1, '2026-01-02 10:07:30+00')`, histDetailRun)
	// Lines 4 and 5 share a ts: log_id (insertion order) breaks the tie.
	for _, l := range histLogs {
		var attempt any
		if l.attempt != "" {
			attempt = f.attempts[l.attempt]
		}
		exec(`INSERT INTO dw_etl_run_logs (ts, run_id, attempt_id, job_id, item_no, level, message, fields)
			VALUES ($1, $2, $3, 'job_a', $4, $5, $6, $7)`,
			f.logTS.Add(-l.age), histDetailRun, attempt, l.item, l.level, l.message, l.fields)
	}
	exec(`INSERT INTO dw_etl_incremental_cursors (job_id, param_hash, params, strategy, cursor_value, last_run_id) VALUES
		('job_a', 'h1', '{"shard":1}', 'modified_date', '2026-01-05 00:00:00+00', $1),
		('job_a', 'h2', '{"shard":2}', 'modified_date', '2026-01-04 00:00:00+00', $1),
		('job_a', 'h3', '{"shard":3}', 'modified_date', NULL, NULL)`, histID(5))
	return f
}

func ptr[T any](v T) *T { return &v }

// histLog is one seeded log line, age before the fixture's logTS.
type histLog struct {
	age     time.Duration
	attempt string // "item/try" of the fixture's attempts; "" for none
	item    *int32
	level   string
	message string
	fields  string
}

// histLogs are the fixture's lines, oldest first (log_id order).
var histLogs = []histLog{
	{60 * time.Second, "1/1", ptr(int32(1)), "info", "item claimed", `{"page":1}`},
	{50 * time.Second, "3/1", ptr(int32(3)), "info", "page loaded", `{"page":1,"rows":10}`},
	{40 * time.Second, "3/1", ptr(int32(3)), "warn", "slow page: 50% of budget", `{"page":2}`},
	{30 * time.Second, "3/1", ptr(int32(3)), "error", "item failed: upstream TIMEOUT", `{"page":2,"request_id":"r-42"}`},
	{30 * time.Second, "4/1", ptr(int32(4)), "error", "item failed: timeout", `{"page":1}`},
	{20 * time.Second, "3/2", ptr(int32(3)), "debug", "retrying", `{}`},
	{10 * time.Second, "", nil, "info", "run finished", `{}`},
}

// wantRuns is the fixture's runs matching keep, newest first with run_id breaking ties.
func wantRuns(keep func(histRun) bool) []uuid.UUID {
	var rs []histRun
	for _, r := range histRuns {
		if keep(r) {
			rs = append(rs, r)
		}
	}
	slices.SortFunc(rs, func(a, b histRun) int {
		if c := b.started.Compare(a.started); c != 0 {
			return c
		}
		return strings.Compare(b.id.String(), a.id.String())
	})
	ids := make([]uuid.UUID, len(rs))
	for i, r := range rs {
		ids[i] = r.id
	}
	return ids
}

func runIDs(rs []store.Run) []uuid.UUID {
	ids := make([]uuid.UUID, len(rs))
	for i, r := range rs {
		ids[i] = r.RunID
	}
	return ids
}

// allPages walks a listing page by page and checks that the last page, and only it, has no Next.
func allPages[T any](t *testing.T, list func(after string) (store.Page[T], error)) (items []T, pages int) {
	t.Helper()
	after := ""
	for {
		p, err := list(after)
		require.NoError(t, err)
		items = append(items, p.Items...)
		pages++
		require.Less(t, pages, 100, "paging does not end")
		if p.Next == "" {
			return items, pages
		}
		require.NotEmpty(t, p.Items, "a page with a next token must not be empty")
		after = p.Next
	}
}

func TestHistoryRuns(t *testing.T) {
	t.Parallel()
	f := setupHistory(t)
	ctx := t.Context()
	all := func(histRun) bool { return true }
	jobA := func(r histRun) bool { return r.job == "job_a" }

	t.Run("OneJobNewestFirst", func(t *testing.T) {
		t.Parallel()
		p, err := f.st.HistoryRuns(ctx, store.RunFilter{JobID: "job_a"})
		require.NoError(t, err)
		require.Equal(t, wantRuns(jobA), runIDs(p.Items))
		require.Empty(t, p.Next)
		require.Equal(t, "job_a", p.Items[0].JobID)
		require.Equal(t, runstate.StatusRunning, p.Items[0].Status)
		require.JSONEq(t, `{}`, string(p.Items[0].Params))
	})

	t.Run("AcrossJobsNewestFirst", func(t *testing.T) {
		t.Parallel()
		p, err := f.st.HistoryRuns(ctx, store.RunFilter{})
		require.NoError(t, err)
		require.Equal(t, wantRuns(all), runIDs(p.Items))
	})

	// Every page size walks the same sequence: no run lost or repeated at the ties of day 5.
	t.Run("PagesConcatenateToTheWholeList", func(t *testing.T) {
		t.Parallel()
		for _, job := range []string{"job_a", ""} {
			keep := all
			if job != "" {
				keep = jobA
			}
			for limit := 1; limit <= 4; limit++ {
				got, pages := allPages(t, func(after string) (store.Page[store.Run], error) {
					return f.st.HistoryRuns(ctx, store.RunFilter{JobID: job, Limit: limit, After: after})
				})
				require.Equal(t, wantRuns(keep), runIDs(got), "job %q limit %d", job, limit)
				require.Equal(t, (len(got)+limit-1)/limit, pages, "job %q limit %d", job, limit)
			}
		}
	})

	t.Run("Filters", func(t *testing.T) {
		t.Parallel()
		yes, no := true, false
		since, until := day(3, 0), day(5, 10)
		for _, tc := range []struct {
			name   string
			filter store.RunFilter
			keep   func(histRun) bool
		}{
			{"StatusIsCaseInsensitive", store.RunFilter{JobID: "job_a", Status: []string{"failed"}},
				func(r histRun) bool { return r.job == "job_a" && r.status == "FAILED" }},
			{"SeveralStatusesAcrossJobs", store.RunFilter{Status: []string{"FAILED", "CANCELLED", "FAILED"}},
				func(r histRun) bool { return r.status == "FAILED" || r.status == "CANCELLED" }},
			{"DryRunsOnly", store.RunFilter{DryRun: &yes}, func(r histRun) bool { return r.dry }},
			{"RealRunsOfAJob", store.RunFilter{JobID: "job_b", DryRun: &no},
				func(r histRun) bool { return r.job == "job_b" && !r.dry }},
			{"SinceInclusiveUntilExclusive", store.RunFilter{Since: &since, Until: &until},
				func(r histRun) bool { return !r.started.Before(since) && r.started.Before(until) }},
			{"EverythingAtOnce", store.RunFilter{JobID: "job_a", Status: []string{"SUCCESS", "FAILED"}, DryRun: &no, Since: &since},
				func(r histRun) bool {
					return r.job == "job_a" && (r.status == "SUCCESS" || r.status == "FAILED") && !r.dry && !r.started.Before(since)
				}},
			{"UnknownJobIsEmpty", store.RunFilter{JobID: "nope"}, func(histRun) bool { return false }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				got, _ := allPages(t, func(after string) (store.Page[store.Run], error) {
					fl := tc.filter
					fl.Limit, fl.After = 2, after
					return f.st.HistoryRuns(ctx, fl)
				})
				require.Equal(t, wantRuns(tc.keep), runIDs(got))
			})
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		t.Parallel()
		p, err := f.st.HistoryRuns(ctx, store.RunFilter{JobID: "job_a", Limit: 1})
		require.NoError(t, err)
		items, err := f.st.HistoryItems(ctx, store.ItemFilter{RunID: histDetailRun, Limit: 1})
		require.NoError(t, err)
		late, early := day(5, 0), day(4, 0)
		for _, tc := range []struct {
			name   string
			filter store.RunFilter
			param  string
		}{
			{"UnknownStatus", store.RunFilter{Status: []string{"DONE"}}, "status"},
			{"NegativeLimit", store.RunFilter{Limit: -1}, "limit"},
			{"LimitOverMax", store.RunFilter{Limit: store.PageLimitMax + 1}, "limit"},
			{"GarbageToken", store.RunFilter{After: "not a token!"}, "after"},
			{"TruncatedToken", store.RunFilter{After: p.Next[:len(p.Next)-2]}, "after"},
			{"TokenOfAnotherListing", store.RunFilter{After: items.Next}, "after"},
			{"SinceNotBeforeUntil", store.RunFilter{Since: &late, Until: &early}, "since"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				_, err := f.st.HistoryRuns(ctx, tc.filter)
				require.ErrorIs(t, err, store.ErrBadFilter)
				var fe *store.FilterError
				require.ErrorAs(t, err, &fe)
				require.Equal(t, tc.param, fe.Param, "%v", err)
				require.Contains(t, err.Error(), tc.param)
			})
		}
	})

	t.Run("DefaultAndMaxLimit", func(t *testing.T) {
		t.Parallel()
		p, err := f.st.HistoryRuns(ctx, store.RunFilter{Limit: 0})
		require.NoError(t, err)
		require.Len(t, p.Items, len(histRuns))
		_, err = f.st.HistoryRuns(ctx, store.RunFilter{Limit: store.PageLimitMax})
		require.NoError(t, err)
	})
}

func TestHistoryRun(t *testing.T) {
	t.Parallel()
	f := setupHistory(t)
	ctx := t.Context()

	t.Run("Breakdown", func(t *testing.T) {
		t.Parallel()
		d, err := f.st.HistoryRun(ctx, histDetailRun)
		require.NoError(t, err)
		require.Equal(t, histDetailRun, d.Run.RunID)
		require.Equal(t, runstate.StatusFailed, d.Run.Status)
		require.Equal(t, []store.CountByStatus{
			{Status: "FAILED", ErrorCategory: "API", Count: 1},
			{Status: "FAILED", ErrorCategory: "DB", Count: 1},
			{Status: "SKIPPED", ErrorCategory: "NONE", Count: 1},
			{Status: "SUCCESS", ErrorCategory: "NONE", Count: 2},
		}, d.Items)
		a := d.Attempts
		require.Equal(t, 7, a.Total)
		require.Zero(t, a.Running)
		require.Equal(t, 3, a.Retries)
		require.Equal(t, 3, a.MaxItemAttempt)
		require.EqualValues(t, 7000, a.BackoffMsTotal)
		require.True(t, a.LastEndedAt.Equal(time.Date(2026, 1, 2, 10, 7, 30, 0, time.UTC)), "%v", a.LastEndedAt)
	})

	t.Run("RunWithoutItems", func(t *testing.T) {
		t.Parallel()
		d, err := f.st.HistoryRun(ctx, histID(1))
		require.NoError(t, err)
		require.Empty(t, d.Items)
		require.NotNil(t, d.Items, "empty lists encode as [] in JSON")
		require.Zero(t, d.Attempts.Total)
		require.Nil(t, d.Attempts.LastEndedAt)
		b, err := json.Marshal(d)
		require.NoError(t, err)
		require.Contains(t, string(b), `"items":[]`)
	})

	t.Run("UnknownRun", func(t *testing.T) {
		t.Parallel()
		_, err := f.st.HistoryRun(ctx, histID(99))
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}

func TestHistoryItems(t *testing.T) {
	t.Parallel()
	f := setupHistory(t)
	ctx := t.Context()
	list := func(t *testing.T, fl store.ItemFilter) []int32 {
		t.Helper()
		got, _ := allPages(t, func(after string) (store.Page[store.ItemRow], error) {
			fl.After = after
			return f.st.HistoryItems(ctx, fl)
		})
		nos := make([]int32, len(got))
		for i, it := range got {
			nos[i] = it.ItemNo
		}
		return nos
	}
	for _, tc := range []struct {
		name   string
		filter store.ItemFilter
		want   []int32
	}{
		{"AllInItemOrder", store.ItemFilter{}, []int32{1, 2, 3, 4, 5}},
		{"PagesOfTwo", store.ItemFilter{Limit: 2}, []int32{1, 2, 3, 4, 5}},
		{"Status", store.ItemFilter{Status: []string{"FAILED"}, Limit: 1}, []int32{3, 4}},
		{"Category", store.ItemFilter{Category: []string{"db", "api"}}, []int32{3, 4}},
		{"StatusAndCategory", store.ItemFilter{Status: []string{"FAILED"}, Category: []string{"API"}}, []int32{4}},
		{"ParamHash", store.ItemFilter{ParamHash: "h3"}, []int32{3}},
		{"ParamHashAndOtherStatus", store.ItemFilter{ParamHash: "h3", Status: []string{"SUCCESS"}}, nil},
		{"NoMatch", store.ItemFilter{Status: []string{"RUNNING"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fl := tc.filter
			fl.RunID = histDetailRun
			got := list(t, fl)
			if tc.want == nil {
				require.Empty(t, got)
				return
			}
			require.Equal(t, tc.want, got)
		})
	}

	t.Run("Row", func(t *testing.T) {
		t.Parallel()
		p, err := f.st.HistoryItems(ctx, store.ItemFilter{RunID: histDetailRun, ParamHash: "h3"})
		require.NoError(t, err)
		require.Len(t, p.Items, 1)
		it := p.Items[0]
		require.Equal(t, runstate.StatusFailed, it.Status)
		require.Equal(t, etl.CategoryDB, it.ErrorCategory)
		require.JSONEq(t, `{"shard":3}`, string(it.Params))
		require.Equal(t, "cursor held", *it.CursorNote)
	})

	t.Run("UnknownRunIsNotFound", func(t *testing.T) {
		t.Parallel()
		_, err := f.st.HistoryItems(ctx, store.ItemFilter{RunID: histID(99)})
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	t.Run("RunWithoutItemsIsEmpty", func(t *testing.T) {
		t.Parallel()
		p, err := f.st.HistoryItems(ctx, store.ItemFilter{RunID: histID(1)})
		require.NoError(t, err)
		require.Empty(t, p.Items)
		require.NotNil(t, p.Items)
	})

	t.Run("BadCategory", func(t *testing.T) {
		t.Parallel()
		_, err := f.st.HistoryItems(ctx, store.ItemFilter{RunID: histDetailRun, Category: []string{"NETWORK"}})
		var fe *store.FilterError
		require.ErrorAs(t, err, &fe)
		require.Equal(t, "category", fe.Param)
		require.Equal(t, "NETWORK", fe.Value)
	})
}

func TestHistoryAttempts(t *testing.T) {
	t.Parallel()
	f := setupHistory(t)
	ctx := t.Context()
	tries := func(rows []store.AttemptRow) []string {
		out := make([]string, len(rows))
		for i, a := range rows {
			out[i] = fmt.Sprintf("%d/%d", a.ItemNo, a.ItemAttempt)
		}
		return out
	}

	t.Run("RunInStartOrder", func(t *testing.T) {
		t.Parallel()
		for _, limit := range []int{0, 1, 3} {
			got, _ := allPages(t, func(after string) (store.Page[store.AttemptRow], error) {
				return f.st.HistoryAttempts(ctx, store.AttemptFilter{RunID: histDetailRun, Limit: limit, After: after})
			})
			require.Equal(t, []string{"1/1", "3/1", "4/1", "2/1", "3/2", "4/2", "3/3"}, tries(got), "limit %d", limit)
			require.True(t, slices.IsSortedFunc(got, func(a, b store.AttemptRow) int { return cmp.Compare(a.AttemptNo, b.AttemptNo) }))
		}
	})

	t.Run("OneItemWithBackoffAndErrors", func(t *testing.T) {
		t.Parallel()
		p, err := f.st.HistoryAttempts(ctx, store.AttemptFilter{RunID: histDetailRun, ItemNo: ptr(int32(3))})
		require.NoError(t, err)
		require.Equal(t, []string{"3/1", "3/2", "3/3"}, tries(p.Items))
		first := p.Items[0]
		require.Equal(t, f.attempts["3/1"], first.AttemptID)
		require.EqualValues(t, 1000, *first.BackoffMs)
		require.True(t, first.NextRetryAt.Equal(time.Date(2026, 1, 2, 10, 10, 1, 0, time.UTC)), "%v", first.NextRetryAt)
		require.Equal(t, "upstream timeout", *first.ErrorMessage)
		require.JSONEq(t, `{"http_status":504}`, string(first.ErrorDetail))
		require.Nil(t, p.Items[2].BackoffMs, "the last try was not retried")
	})

	t.Run("SucceededAttemptHasNoErrorDetail", func(t *testing.T) {
		t.Parallel()
		p, err := f.st.HistoryAttempts(ctx, store.AttemptFilter{RunID: histDetailRun, ItemNo: ptr(int32(1))})
		require.NoError(t, err)
		require.Len(t, p.Items, 1)
		b, err := json.Marshal(p.Items[0])
		require.NoError(t, err)
		require.Contains(t, string(b), `"error_detail":null`)
	})

	t.Run("UnknownRunIsNotFound", func(t *testing.T) {
		t.Parallel()
		_, err := f.st.HistoryAttempts(ctx, store.AttemptFilter{RunID: histID(99)})
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	t.Run("ItemNumbersStartAtOne", func(t *testing.T) {
		t.Parallel()
		_, err := f.st.HistoryAttempts(ctx, store.AttemptFilter{RunID: histDetailRun, ItemNo: ptr(int32(0))})
		require.ErrorIs(t, err, store.ErrBadFilter)
	})
}

func TestHistoryLogs(t *testing.T) {
	t.Parallel()
	f := setupHistory(t)
	ctx := t.Context()
	// lines returns the fixture's line numbers (1-based, oldest first) of a listing.
	lines := func(t *testing.T, fl store.LogFilter) []int {
		t.Helper()
		got, _ := allPages(t, func(after string) (store.Page[store.LogLine], error) {
			fl.RunID, fl.After = histDetailRun, after
			return f.st.HistoryLogs(ctx, fl)
		})
		out := make([]int, len(got))
		for i, l := range got {
			out[i] = slices.IndexFunc(histLogs, func(h histLog) bool {
				return h.message == l.Message && f.logTS.Add(-h.age).Equal(l.TS)
			}) + 1
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		filter store.LogFilter
		want   []int
	}{
		{"NewestFirstTiesByLogID", store.LogFilter{}, []int{7, 6, 5, 4, 3, 2, 1}},
		{"PagesOfTwoAcrossTheTie", store.LogFilter{Limit: 2}, []int{7, 6, 5, 4, 3, 2, 1}},
		{"PagesOfThree", store.LogFilter{Limit: 3}, []int{7, 6, 5, 4, 3, 2, 1}},
		{"Level", store.LogFilter{Level: []string{"ERROR"}, Limit: 1}, []int{5, 4}},
		{"Levels", store.LogFilter{Level: []string{"warn", "debug"}}, []int{6, 3}},
		{"GrepIgnoresCase", store.LogFilter{Text: "timeout"}, []int{5, 4}},
		{"GrepPercentIsLiteral", store.LogFilter{Text: "50%"}, []int{3}},
		{"GrepUnderscoreIsLiteral", store.LogFilter{Text: "50_"}, nil},
		{"FieldsContain", store.LogFilter{Fields: json.RawMessage(`{"page":2}`)}, []int{4, 3}},
		{"FieldsRareKey", store.LogFilter{Fields: json.RawMessage(`{"request_id":"r-42"}`)}, []int{4}},
		{"Item", store.LogFilter{ItemNo: ptr(int32(3))}, []int{6, 4, 3, 2}},
		{"Attempt", store.LogFilter{AttemptID: ptr(f.attempts["3/1"])}, []int{4, 3, 2}},
		{"Combined", store.LogFilter{ItemNo: ptr(int32(3)), Level: []string{"error", "warn"}, Fields: json.RawMessage(`{"page":2}`), Text: "TIME"}, []int{4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := lines(t, tc.filter)
			if tc.want == nil {
				require.Empty(t, got)
				return
			}
			require.Equal(t, tc.want, got)
		})
	}

	t.Run("Row", func(t *testing.T) {
		t.Parallel()
		p, err := f.st.HistoryLogs(ctx, store.LogFilter{RunID: histDetailRun, Limit: 1})
		require.NoError(t, err)
		l := p.Items[0]
		require.Equal(t, "run finished", l.Message)
		require.Nil(t, l.AttemptID)
		require.Nil(t, l.ItemNo)
		require.JSONEq(t, `{}`, string(l.Fields))
		require.NotEmpty(t, p.Next)
	})

	t.Run("BadInput", func(t *testing.T) {
		t.Parallel()
		runs, err := f.st.HistoryRuns(ctx, store.RunFilter{Limit: 1})
		require.NoError(t, err)
		for _, tc := range []struct {
			filter store.LogFilter
			param  string
		}{
			{store.LogFilter{Level: []string{"loud"}}, "level"},
			{store.LogFilter{Fields: json.RawMessage(`[1,2]`)}, "fields"},
			{store.LogFilter{Fields: json.RawMessage(`"page"`)}, "fields"},
			{store.LogFilter{After: runs.Next}, "after"},
			{store.LogFilter{ItemNo: ptr(int32(-1))}, "item"},
		} {
			fl := tc.filter
			fl.RunID = histDetailRun
			_, err := f.st.HistoryLogs(ctx, fl)
			var fe *store.FilterError
			require.ErrorAs(t, err, &fe, "%+v", tc.filter)
			require.Equal(t, tc.param, fe.Param)
		}
	})

	t.Run("UnknownRunIsNotFound", func(t *testing.T) {
		t.Parallel()
		_, err := f.st.HistoryLogs(ctx, store.LogFilter{RunID: histID(99)})
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}

func TestHistoryCursors(t *testing.T) {
	t.Parallel()
	f := setupHistory(t)
	ctx := t.Context()

	t.Run("ParamHashOrderInPages", func(t *testing.T) {
		t.Parallel()
		got, pages := allPages(t, func(after string) (store.Page[store.Cursor], error) {
			return f.st.HistoryCursors(ctx, store.CursorFilter{JobID: "job_a", Limit: 2, After: after})
		})
		require.Equal(t, 2, pages)
		require.Len(t, got, 3)
		require.Equal(t, []string{"h1", "h2", "h3"}, []string{got[0].ParamHash, got[1].ParamHash, got[2].ParamHash})
		require.Equal(t, histID(5), *got[0].LastRunID)
		require.True(t, got[0].CursorValue.Equal(time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)))
		require.JSONEq(t, `{"shard":1}`, string(got[0].Params))
		require.Nil(t, got[2].CursorValue)
	})

	t.Run("JobWithoutCursorsIsEmpty", func(t *testing.T) {
		t.Parallel()
		p, err := f.st.HistoryCursors(ctx, store.CursorFilter{JobID: "job_b"})
		require.NoError(t, err)
		require.Empty(t, p.Items)
	})

	t.Run("UnknownJobIsNotFound", func(t *testing.T) {
		t.Parallel()
		_, err := f.st.HistoryCursors(ctx, store.CursorFilter{JobID: "nope"})
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}

func TestParseTimeBound(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"24h":                       now.Add(-24 * time.Hour),
		"90m":                       now.Add(-90 * time.Minute),
		"7d":                        now.AddDate(0, 0, -7),
		"2026-03-01T00:00:00Z":      time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
		"2026-03-01T01:00:00+01:00": time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
	} {
		got, err := store.ParseTimeBound(in, now)
		require.NoError(t, err, in)
		require.True(t, want.Equal(got), "%s: %v != %v", in, got, want)
	}
	for _, bad := range []string{"", "yesterday", "-5h", "2026-03-01", "7 days"} {
		_, err := store.ParseTimeBound(bad, now)
		require.Error(t, err, bad)
	}
}

// TestHistoryPlansStayOnIndexesWhenGeneric checks the plans the history queries get as prepared
// statements on a long-lived connection: after five executions Postgres may switch to a generic
// plan, which knows no parameter value. Forcing that plan, each listing must still walk its index
// and stop after a page instead of reading (and sorting) everything that matches.
func TestHistoryPlansStayOnIndexesWhenGeneric(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, pool, tracer := tracedStore(t)
	for _, q := range []string{
		`INSERT INTO dw_etl_jobs (job_id, kind) SELECT 'job_' || j, 'synthetic' FROM generate_series(1, 100) j`,
		`INSERT INTO dw_etl_runs (run_id, job_id, status, exclusive, started_at)
			SELECT gen_random_uuid(), 'job_' || j, (ARRAY['SUCCESS', 'SUCCESS', 'SUCCESS', 'FAILED', 'CANCELLED'])[1 + r % 5], false,
				timestamptz '2026-01-01' + r * interval '1 hour' + j * interval '1 second'
			FROM generate_series(1, 100) j, generate_series(1, 200) r`,
		`INSERT INTO dw_etl_run_logs (ts, run_id, job_id, level, message, fields)
			SELECT now() - (l * interval '1 second'), r.run_id, r.job_id, 'info', 'line ' || l, jsonb_build_object('page', l % 3)
			FROM (SELECT run_id, job_id FROM dw_etl_runs ORDER BY run_id LIMIT 2000) r, generate_series(1, 20) l`,
		`ANALYZE dw_etl_jobs, dw_etl_runs, dw_etl_run_logs`,
	} {
		_, err := pool.Exec(ctx, q)
		require.NoError(t, err, q)
	}
	var logRun uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `SELECT run_id FROM dw_etl_run_logs LIMIT 1`).Scan(&logRun))
	first, err := st.HistoryRuns(ctx, store.RunFilter{JobID: "job_7", Limit: 10})
	require.NoError(t, err)

	conn, err := pgx.Connect(ctx, pool.Config().ConnString())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	_, err = conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`)
	require.NoError(t, err)

	for _, tc := range []struct {
		name  string
		call  func(ctx context.Context) error
		index string
		// maxRows is what any one scan of the index may return: a page of 10, the extra row that
		// tells whether there is a next page, and the row that ends the WITH TIES group.
		maxRows float64
	}{
		{"RunsOfAJob", func(ctx context.Context) error {
			_, err := st.HistoryRuns(ctx, store.RunFilter{JobID: "job_7", Limit: 10})
			return err
		}, "dw_etl_runs_job_started_idx", 12},
		{"RunsOfAJobNextPage", func(ctx context.Context) error {
			_, err := st.HistoryRuns(ctx, store.RunFilter{JobID: "job_7", Limit: 10, After: first.Next})
			return err
		}, "dw_etl_runs_job_started_idx", 12},
		{"RunsOfAJobFiltered", func(ctx context.Context) error {
			since := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
			_, err := st.HistoryRuns(ctx, store.RunFilter{JobID: "job_7", Limit: 10, Since: &since, Status: []string{"SUCCESS"}})
			return err
		}, "dw_etl_runs_job_started_idx", 30},
		{"RecentRuns", func(ctx context.Context) error {
			_, err := st.HistoryRuns(ctx, store.RunFilter{Limit: 10})
			return err
		}, "dw_etl_runs_status_started_idx", 12},
		{"RecentFailedRuns", func(ctx context.Context) error {
			_, err := st.HistoryRuns(ctx, store.RunFilter{Limit: 10, Status: []string{"FAILED"}, After: first.Next})
			return err
		}, "dw_etl_runs_status_started_idx", 12},
		{"LogsOfARun", func(ctx context.Context) error {
			_, err := st.HistoryLogs(ctx, store.LogFilter{RunID: logRun, Limit: 5})
			return err
		}, "run_id_ts_idx", 20},
		// {"page":1} is in a third of all lines: the run's lines, not the GIN index, bound the cost.
		{"LogsOfARunByFields", func(ctx context.Context) error {
			_, err := st.HistoryLogs(ctx, store.LogFilter{RunID: logRun, Limit: 5, Fields: json.RawMessage(`{"page":1}`)})
			return err
		}, "run_id_ts_idx", 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stmts := tracer.capture(t, tc.call)
			require.NotEmpty(t, stmts)
			s := stmts[0]
			nodes := histGenericPlan(t, conn, s.sql, s.args)
			var used bool
			for _, n := range nodes {
				name, _ := n["Index Name"].(string)
				rel, _ := n["Relation Name"].(string)
				rows, _ := n["Actual Rows"].(float64)
				removed, _ := n["Rows Removed by Filter"].(float64)
				if strings.HasSuffix(name, tc.index) {
					used = true
					require.LessOrEqual(t, rows, tc.maxRows, "%s read %v rows: the scan did not stop after a page", name, rows)
				}
				if n["Node Type"] == "Seq Scan" {
					require.Zero(t, rows+removed, "seq scan over rows of %s", rel)
				}
			}
			require.True(t, used, "%s not used: %v", tc.index, nodes)
		})
	}
}

// histTracer records the statements sent under a context that asks for it.
// tracedStore opens a store on a fresh database whose statements tracer records.
func tracedStore(t *testing.T) (*store.Store, *pgxpool.Pool, *histTracer) {
	t.Helper()
	tracer := &histTracer{}
	cfg, err := pgxpool.ParseConfig(dbtest.URL(t))
	require.NoError(t, err)
	cfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return store.New(pool), pool, tracer
}

type histTracer struct {
	mu    sync.Mutex
	stmts []histStatement
}

type histStatement struct {
	sql  string
	args []any
}

type histCaptureKey struct{}

func (tr *histTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if ctx.Value(histCaptureKey{}) != nil {
		tr.mu.Lock()
		tr.stmts = append(tr.stmts, histStatement{sql: d.SQL, args: d.Args})
		tr.mu.Unlock()
	}
	return ctx
}

func (tr *histTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (tr *histTracer) capture(t *testing.T, fn func(ctx context.Context) error) []histStatement {
	t.Helper()
	tr.mu.Lock()
	tr.stmts = nil
	tr.mu.Unlock()
	require.NoError(t, fn(context.WithValue(t.Context(), histCaptureKey{}, true)))
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.stmts)
}

// histGenericPlan prepares sql on conn (whose plan_cache_mode forces generic plans) and returns
// the nodes of EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE with args rendered as literals.
func histGenericPlan(t *testing.T, conn *pgx.Conn, sql string, args []any) []map[string]any {
	t.Helper()
	ctx := t.Context()
	name := fmt.Sprintf("hist_plan_%d", time.Now().UnixNano())
	sd, err := conn.Prepare(ctx, name, sql)
	require.NoError(t, err)
	defer conn.Deallocate(context.Background(), name) //nolint:errcheck
	lits := make([]string, len(args))
	for i, a := range args {
		buf, err := conn.TypeMap().Encode(sd.ParamOIDs[i], pgx.TextFormatCode, a, nil)
		require.NoError(t, err)
		if buf == nil {
			lits[i] = "NULL"
		} else {
			lits[i] = "'" + strings.ReplaceAll(string(buf), "'", "''") + "'"
		}
	}
	var raw []byte
	require.NoError(t, conn.QueryRow(ctx, fmt.Sprintf("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE %s(%s)", name, strings.Join(lits, ", "))).Scan(&raw))
	var doc []struct {
		Plan map[string]any `json:"Plan"`
	}
	require.NoError(t, json.Unmarshal(raw, &doc))
	var nodes []map[string]any
	var walk func(n map[string]any)
	walk = func(n map[string]any) {
		nodes = append(nodes, n)
		children, _ := n["Plans"].([]any)
		for _, c := range children {
			if m, ok := c.(map[string]any); ok {
				walk(m)
			}
		}
	}
	walk(doc[0].Plan)
	return nodes
}
