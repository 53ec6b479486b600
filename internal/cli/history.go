package cli

// History commands: `runs list|show`, `items`, `attempts`, `logs`, `cursors`. They print what
// GET /api/v1/... returns — the same store calls, and with --json the same JSON document — as
// aligned tables by default.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/export"
	"github.com/etlexec/etlexec/internal/store"
)

func init() {
	register(historyRunsCmd)
	register(historyItemsCmd)
	register(historyAttemptsCmd)
	register(historyLogsCmd)
	register(historyCursorsCmd)
}

// historyPage holds the paging flags every listing shares.
type historyPage struct {
	limit  int
	after  string
	asJSON bool
}

func (p *historyPage) bind(cmd *cobra.Command) {
	cmd.Flags().IntVar(&p.limit, "limit", store.PageLimitDefault, fmt.Sprintf("rows per page (1..%d)", store.PageLimitMax))
	cmd.Flags().StringVar(&p.after, "after", "", "page token printed after the previous page")
	cmd.Flags().BoolVar(&p.asJSON, "json", false, "print one JSON document (what GET /api/v1/... returns)")
	prev := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		// The store reads a zero limit as "the default"; a user who typed 0 meant something else.
		if p.limit < 1 || p.limit > store.PageLimitMax {
			return fmt.Errorf("--limit \"%d\": want 1..%d", p.limit, store.PageLimitMax)
		}
		if prev != nil {
			return prev(cmd, args)
		}
		return nil
	}
}

// historyStore opens the store, runs fn and maps the store's filter errors to flag names.
func historyStore(cmd *cobra.Command, e *env, fn func(st *store.Store) error) error {
	err := e.withStore(cmd.Context(), fn)
	var fe *store.FilterError
	if errors.As(err, &fe) {
		flag := strings.ReplaceAll(fe.Param, "_", "-")
		return fmt.Errorf("--%s %q: %s", flag, fe.Value, fe.Reason)
	}
	return err
}

// historyList fetches one page with fetch(st, ctx, f) and prints it: JSON, or a table of header
// and one row per item. A non-empty notFound replaces store.ErrNotFound as the error.
func historyList[F, T any](cmd *cobra.Command, e *env, asJSON bool, notFound string,
	fetch func(*store.Store, context.Context, F) (store.Page[T], error), f F,
	header string, row func(w io.Writer, it T)) error {
	return historyStore(cmd, e, func(st *store.Store) error {
		p, err := fetch(st, cmd.Context(), f)
		if err != nil {
			return historyNotFound(err, notFound)
		}
		return historyPrint(cmd, asJSON, p, p.Next, func(w io.Writer) {
			fmt.Fprintln(w, header)
			for _, it := range p.Items {
				row(w, it)
			}
		})
	})
}

// historyNotFound replaces store.ErrNotFound with an error reading msg, when msg is set.
func historyNotFound(err error, msg string) error {
	if msg != "" && errors.Is(err, store.ErrNotFound) {
		return errors.New(msg)
	}
	return err
}

func runNotFound(runID uuid.UUID) string { return fmt.Sprintf("run %s not found", runID) }

func historyRunsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "runs", Short: "List runs and show one run's breakdown"}
	cmd.AddCommand(historyRunsListCmd(e), historyRunShowCmd(e))
	return cmd
}

func historyRunsListCmd(e *env) *cobra.Command {
	var (
		page         historyPage
		f            store.RunFilter
		dryRun       string
		since, until string
	)
	cmd := &cobra.Command{
		Use:   "list [--job J] [--status S,...] [--dry-run true|false] [--since 24h|RFC3339] [--until T] [--limit N] [--after TOKEN]",
		Short: "List runs newest first, of one job or across jobs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now()
			if dryRun != "" {
				b, err := strconv.ParseBool(dryRun)
				if err != nil {
					return fmt.Errorf("--dry-run %q: want true or false", dryRun)
				}
				f.DryRun = &b
			}
			for _, b := range []struct {
				flag, value string
				dst         **time.Time
			}{{"since", since, &f.Since}, {"until", until, &f.Until}} {
				if b.value == "" {
					continue
				}
				t, err := store.ParseTimeBound(b.value, now)
				if err != nil {
					return fmt.Errorf("--%s %q: %w", b.flag, b.value, err)
				}
				*b.dst = &t
			}
			f.Limit, f.After = page.limit, page.after
			return historyList(cmd, e, page.asJSON, "", (*store.Store).HistoryRuns, f,
				"RUN_ID\tJOB\tSTATUS\tDRY\tTRIGGER\tSTARTED\tDURATION\tITEMS\tOK\tFAILED\tATTEMPTS\tERROR",
				func(w io.Writer, r store.Run) {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", r.RunID, cell(r.JobID), r.Status,
						yesNo(r.DryRun), r.Trigger, histTime(&r.StartedAt), histDuration(r.DurationMs), r.ItemCount,
						r.ItemsSucceeded, r.ItemsFailed, r.AttemptCount, histError(r.ErrorCategory, r.ErrorMessage))
				})
		},
	}
	cmd.Flags().StringVar(&f.JobID, "job", "", "only this job's runs")
	cmd.Flags().StringSliceVar(&f.Status, "status", nil, "only these statuses: "+strings.Join(store.RunStatuses, ","))
	cmd.Flags().StringVar(&dryRun, "dry-run", "", "true: only dry runs; false: only real runs")
	cmd.Flags().StringVar(&since, "since", "", "started at or after: RFC 3339 time or a duration back (90m, 24h, 7d)")
	cmd.Flags().StringVar(&until, "until", "", "started before: RFC 3339 time or a duration back")
	page.bind(cmd)
	return cmd
}

func historyRunShowCmd(e *env) *cobra.Command {
	var page historyPage
	cmd := &cobra.Command{
		Use:   "show RUN_ID",
		Short: "Show a run: items by status and error category, attempts, cursor notes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			runID, err := histRunID(args[0])
			if err != nil {
				return err
			}
			return historyStore(cmd, e, func(st *store.Store) error {
				d, err := st.HistoryRun(cmd.Context(), runID)
				if err != nil {
					return historyNotFound(err, runNotFound(runID))
				}
				return historyPrint(cmd, page.asJSON, d, "", func(w io.Writer) { printRunDetail(w, d) })
			})
		},
	}
	cmd.Flags().BoolVar(&page.asJSON, "json", false, "print one JSON document (what GET /api/v1/runs/RUN_ID returns)")
	return cmd
}

func printRunDetail(w io.Writer, d store.RunDetail) {
	r := d.Run
	kv := func(k, v string) { fmt.Fprintf(w, "%s:\t%s\n", k, v) }
	kv("run", r.RunID.String())
	kv("job", cell(r.JobID))
	kv("status", string(r.Status))
	if r.ErrorCategory != etl.CategoryNone || r.ErrorMessage != nil {
		kv("error", histError(r.ErrorCategory, r.ErrorMessage))
	}
	kv("dry run", yesNo(r.DryRun))
	kv("trigger", r.Trigger)
	kv("params", cell(string(r.Params)))
	if r.LogicalStart != nil {
		kv("logical start", histTime(r.LogicalStart))
	}
	if r.ScheduledFor != nil {
		kv("scheduled for", histTime(r.ScheduledFor))
	}
	kv("started", histTime(&r.StartedAt))
	kv("enqueued", histTime(r.EnqueuedAt))
	kv("ended", histTime(r.EndedAt))
	kv("duration", histDuration(r.DurationMs))
	kv("items", fmt.Sprintf("%d (%d duplicates dropped): %d succeeded, %d failed, %d skipped, %d cancelled",
		r.ItemCount, r.ItemsDeduplicated, r.ItemsSucceeded, r.ItemsFailed, r.ItemsSkipped, r.ItemsCancelled))
	kv("records", fmt.Sprintf("%d read, %d written, %d pages", r.RecordsRead, r.RecordsWritten, r.PageCount))
	if len(r.Metrics) > 0 && string(r.Metrics) != "{}" {
		kv("metrics", cell(string(r.Metrics)))
	}
	if r.CancelRequestedAt != nil {
		kv("cancel requested", fmt.Sprintf("%s by %s: %s", histTime(r.CancelRequestedAt), histStr(r.CancelledBy), histStr(r.CancelReason)))
	}
	a := d.Attempts
	kv("attempts", fmt.Sprintf("%d (%d running, %d retries, %d lost with their worker, at most %d for one item, %s total backoff)",
		a.Total, a.Running, a.Retries, a.Lost, a.MaxItemAttempt, time.Duration(a.BackoffMsTotal)*time.Millisecond))
	if a.LastEndedAt != nil {
		kv("last attempt ended", histTime(a.LastEndedAt))
	}
	if r.RecordsDiscarded > 0 {
		kv("records discarded", fmt.Sprintf("%d (written by attempts whose target transaction rolled back)", r.RecordsDiscarded))
	}
	if r.CursorNote != nil {
		kv("cursors", *r.CursorNote)
	}
	counts := func(title string, cs []store.CountByStatus) {
		fmt.Fprintf(w, "\n%s\tSTATUS\tCATEGORY\tCOUNT\n", title)
		for _, c := range cs {
			fmt.Fprintf(w, "\t%s\t%s\t%d\n", c.Status, c.ErrorCategory, c.Count)
		}
	}
	counts("ITEMS", d.Items)
	printRunning(w, d, time.Now())
}

// printRunning prints the running items with what their workers last reported (at their
// heartbeats): how long each attempt has run and how long ago its progress last changed.
func printRunning(w io.Writer, d store.RunDetail, now time.Time) {
	if len(d.Running) == 0 && d.RunningMore == 0 {
		return
	}
	ago := func(t time.Time) string { return max(now.Sub(t), 0).Round(time.Second).String() }
	fmt.Fprintf(w, "\nRUNNING\tITEM\tATTEMPT\tWORKER\tFOR\tRECORDS\tPAGES\tPROGRESS\tUPDATED\n")
	for _, r := range d.Running {
		updated := "-"
		if r.ProgressAt != nil {
			updated = ago(*r.ProgressAt) + " ago"
		}
		fmt.Fprintf(w, "\t%d\t%d\t%s\t%s\t%d read, %d written\t%d\t%s\t%s\n", r.ItemNo, r.ItemAttempt, cell(r.Worker),
			ago(r.StartedAt), r.RecordsRead, r.RecordsWritten, r.PageCount, histStr(r.Progress), updated)
	}
	if d.RunningMore > 0 {
		fmt.Fprintf(w, "\t(%d more running: past the first %d, or started since their worker's last heartbeat)\n",
			d.RunningMore, store.RunningShownMax)
	}
}

func historyItemsCmd(e *env) *cobra.Command {
	var (
		page  historyPage
		f     store.ItemFilter
		asCSV bool
	)
	cmd := &cobra.Command{
		Use:   "items RUN_ID [--status S,...] [--category C,...] [--param-hash H] [--limit N] [--after TOKEN] [--csv]",
		Short: "List a run's items in item order (--csv: every matching item as CSV)",
		Long: `List a run's items in item order. --param-hash takes a full hash or a unique prefix of one
(as this table prints it). --csv writes every matching item (all pages, from --after on) as CSV
with a header row, the same document GET /api/v1/runs/RUN_ID/items?format=csv returns.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			runID, err := histRunID(args[0])
			if err != nil {
				return err
			}
			f.RunID, f.Limit, f.After = runID, page.limit, page.after
			if asCSV {
				return historyStore(cmd, e, func(st *store.Store) error {
					if f.ParamHash, err = st.ResolveParamHash(cmd.Context(), runID, f.ParamHash); err != nil {
						return err
					}
					_, err := export.ItemsCSV(cmd.Context(), st, f, stdout(cmd))
					return historyNotFound(err, runNotFound(runID))
				})
			}
			fetch := func(st *store.Store, ctx context.Context, f store.ItemFilter) (store.Page[store.ItemRow], error) {
				var err error
				if f.ParamHash, err = st.ResolveParamHash(ctx, f.RunID, f.ParamHash); err != nil {
					return store.Page[store.ItemRow]{}, err
				}
				return st.HistoryItems(ctx, f)
			}
			return historyList(cmd, e, page.asJSON, runNotFound(runID), fetch, f,
				"ITEM\tSTATUS\tCATEGORY\tATTEMPTS\tPARAMS\tPARAM_HASH\tDURATION\tREAD\tWRITTEN\tCURSOR_END\tNOTE\tERROR",
				func(w io.Writer, i store.ItemRow) {
					fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", i.ItemNo, i.Status, i.ErrorCategory,
						i.Attempts, cell(string(i.Params)), shortHash(i.ParamHash), histDuration(i.DurationMs), i.RecordsRead,
						i.RecordsWritten, histTime(i.CursorEnd), histStr(i.CursorNote), histStr(i.ErrorMessage))
				})
		},
	}
	cmd.Flags().StringSliceVar(&f.Status, "status", nil, "only these statuses: "+strings.Join(store.RunStatuses, ","))
	cmd.Flags().StringSliceVar(&f.Category, "category", nil, "only these error categories: "+strings.Join(store.ErrorCategories, ","))
	cmd.Flags().StringVar(&f.ParamHash, "param-hash", "", "only the item of this param set (a unique prefix will do)")
	cmd.Flags().BoolVar(&asCSV, "csv", false, "write every matching item as CSV")
	page.bind(cmd)
	return cmd
}

func historyAttemptsCmd(e *env) *cobra.Command {
	var (
		page historyPage
		item int32
	)
	cmd := &cobra.Command{
		Use:   "attempts RUN_ID [--item N] [--limit N] [--after TOKEN]",
		Short: "List a run's attempts (or one item's) in start order, with backoff and error details",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			runID, err := histRunID(args[0])
			if err != nil {
				return err
			}
			f := store.AttemptFilter{RunID: runID, Limit: page.limit, After: page.after}
			if cmd.Flags().Changed("item") {
				f.ItemNo = &item
			}
			return historyList(cmd, e, page.asJSON, runNotFound(runID), (*store.Store).HistoryAttempts, f,
				"NO\tITEM\tTRY\tSTATUS\tCATEGORY\tSTARTED\tDURATION\tBACKOFF\tNEXT_RETRY\tWORKER\tATTEMPT_ID\tERROR\tDETAIL",
				func(w io.Writer, a store.AttemptRow) {
					fmt.Fprintf(w, "%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.AttemptNo, a.ItemNo, a.ItemAttempt,
						a.Status, a.ErrorCategory, histTime(&a.StartedAt), histDuration(a.DurationMs), histDuration(a.BackoffMs),
						histTime(a.NextRetryAt), histStr(a.WorkerID), a.AttemptID, histStr(a.ErrorMessage), histJSON(a.ErrorDetail))
				})
		},
	}
	cmd.Flags().Int32Var(&item, "item", 0, "only this item's attempts")
	page.bind(cmd)
	return cmd
}

func historyLogsCmd(e *env) *cobra.Command {
	var (
		page    historyPage
		f       store.LogFilter
		attempt string
		item    int32
		fields  string
	)
	cmd := &cobra.Command{
		Use:   "logs RUN_ID [--attempt ID] [--item N] [--level L,...] [--grep TEXT] [--fields JSON] [--limit N] [--after TOKEN]",
		Short: "List a run's log lines newest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			runID, err := histRunID(args[0])
			if err != nil {
				return err
			}
			f.RunID, f.Limit, f.After = runID, page.limit, page.after
			if attempt != "" {
				id, err := parseUUIDArg("--attempt", "UUID", attempt)
				if err != nil {
					return err
				}
				f.AttemptID = &id
			}
			if cmd.Flags().Changed("item") {
				f.ItemNo = &item
			}
			if fields != "" {
				if !json.Valid([]byte(fields)) {
					return fmt.Errorf("--fields %q: not valid JSON; want an object such as '{\"page\":3}'", fields)
				}
				f.Fields = json.RawMessage(fields)
			}
			return historyList(cmd, e, page.asJSON, runNotFound(runID), (*store.Store).HistoryLogs, f,
				"TS\tLEVEL\tITEM\tATTEMPT_ID\tMESSAGE\tFIELDS",
				func(w io.Writer, l store.LogLine) {
					itemNo := "-"
					if l.ItemNo != nil {
						itemNo = strconv.Itoa(int(*l.ItemNo))
					}
					attemptID := "-"
					if l.AttemptID != nil {
						attemptID = l.AttemptID.String()
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", l.TS.UTC().Format(time.RFC3339Nano), l.Level, itemNo, attemptID,
						cell(l.Message), histJSON(l.Fields))
				})
		},
	}
	cmd.Flags().StringVar(&attempt, "attempt", "", "only this attempt's lines (attempt id)")
	cmd.Flags().Int32Var(&item, "item", 0, "only this item's lines")
	cmd.Flags().StringSliceVar(&f.Level, "level", nil, "only these levels: "+strings.Join(store.LogLevels, ","))
	cmd.Flags().StringVar(&f.Text, "grep", "", "only lines whose message or fields contain TEXT (case-insensitive)")
	cmd.Flags().StringVar(&fields, "fields", "", `only lines whose fields contain this JSON object, e.g. '{"page":3}'`)
	page.bind(cmd)
	return cmd
}

func historyCursorsCmd(e *env) *cobra.Command {
	var page historyPage
	cmd := &cobra.Command{
		Use:   "cursors JOB_ID [--limit N] [--after TOKEN]",
		Short: "List a job's incremental cursors, one per param set",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			jobID := args[0]
			f := store.CursorFilter{JobID: jobID, Limit: page.limit, After: page.after}
			return historyList(cmd, e, page.asJSON, fmt.Sprintf("job %q not found", jobID), (*store.Store).HistoryCursors, f,
				"PARAM_HASH\tPARAMS\tSTRATEGY\tVALUE\tLAST_RUN_ID\tUPDATED",
				func(w io.Writer, c store.Cursor) {
					lastRun := "-"
					if c.LastRunID != nil {
						lastRun = c.LastRunID.String()
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", shortHash(c.ParamHash), cell(string(c.Params)), c.Strategy,
						histTime(c.CursorValue), lastRun, histTime(&c.UpdatedAt))
				})
		},
	}
	page.bind(cmd)
	return cmd
}

// historyPrint writes v as one indented JSON document, or an aligned table followed, when there
// is a next page, by the flag that fetches it.
func historyPrint(cmd *cobra.Command, asJSON bool, v any, next string, table func(w io.Writer)) error {
	out := stdout(cmd)
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	table(tw)
	if err := tw.Flush(); err != nil {
		return err
	}
	if next != "" {
		_, err := fmt.Fprintf(out, "next page: --after %s\n", next)
		return err
	}
	return nil
}

func histRunID(arg string) (uuid.UUID, error) { return parseUUIDArg("RUN_ID", "UUID", arg) }

func histTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func histDuration(ms *int64) string {
	if ms == nil {
		return "-"
	}
	return (time.Duration(*ms) * time.Millisecond).String()
}

func histStr(s *string) string {
	if s == nil || *s == "" {
		return "-"
	}
	return cell(*s)
}

func histError(category etl.Category, msg *string) string {
	if category == etl.CategoryNone && msg == nil {
		return "-"
	}
	return string(category) + ": " + histStr(msg)
}

func histJSON(b json.RawMessage) string {
	if len(b) == 0 || string(b) == "null" || string(b) == "{}" {
		return "-"
	}
	return cell(string(b))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// cell keeps a table cell on one line: tabs and newlines would break the alignment.
func cell(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}
