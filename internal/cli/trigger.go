package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/ops"
	"github.com/etlexec/etlexec/internal/params"
	"github.com/etlexec/etlexec/internal/preflight"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/telemetry"
)

func init() { register(triggerCmd) }

// Exit codes of `trigger --wait`.
const (
	ExitSuccess        = 0
	ExitFailed         = 1
	ExitPartialSuccess = 2
)

func triggerCmd(e *env) *cobra.Command {
	var (
		kv          []string
		paramsFile  string
		paramsLimit int64
		dryRun      bool
		wait        bool
		asJSON      bool
		poll        time.Duration
		every       time.Duration
		key         string
	)
	cmd := &cobra.Command{
		Use:   "trigger JOB_ID [--param k=v ...] [--params-file F] [--dry-run] [--wait] [--json]",
		Short: "Start a run: expand params into items, record them, enqueue one task per item",
		Long: `Start a run of JOB_ID. --params-file takes a JSON array or JSON lines of param objects
("-" reads stdin), streamed into the run one set at a time (memory does not grow with the
file; --params-max-bytes bounds it); --param k=v adds one param set. Without either, the job's
declared param_source (static list or SQL query) is used, or a single {} for jobs without
params. A bad set stops the trigger and nothing is written.

With --wait, a progress bar shows done/total, failed, rate and ETA, then a summary; the exit
code is 0 for SUCCESS, 2 for PARTIAL_SUCCESS, 1 otherwise. When stderr is not a terminal (CI,
a log file) the bar becomes one line every --progress-every.

--idempotency-key K makes the command safe to retry: the same key on the same job returns the
run the first attempt created (finishing its fan-out if Redis failed it) instead of a second
run; the same key with other params or --dry-run is refused. A paused job is refused.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			sets, err := readParamSets(cmd, kv, "")
			if err != nil {
				return err
			}
			source, closeSource, err := streamParamsFile(cmd, paramsFile, paramsLimit)
			if err != nil {
				return err
			}
			defer closeSource()
			st, redis, err := e.connect(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			// Tasks go to Redis only after the run is recorded; an evicting Redis would lose them.
			pre, err := preflight.Check(ctx, st.Pool(), redis, preflight.Options{AllowEviction: e.cfg.AllowRedisEviction})
			if err != nil {
				return fmt.Errorf("refusing to trigger: %w", err)
			}
			for _, w := range pre.Warnings {
				e.log.Warn().Str("check", "preflight").Msg(w)
			}
			enq, err := newEnqueuer(redis, enqueue.Config{Store: st, Logger: e.log, Headers: telemetry.Headers})
			if err != nil {
				return err
			}
			defer enq.Close()
			shutdownTracing, err := telemetry.SetupTracing(ctx)
			if err != nil {
				return fmt.Errorf("tracing: %w", err)
			}
			defer shutdownTracing(context.WithoutCancel(ctx)) //nolint:errcheck
			tctx, span := telemetry.StartEnqueue(ctx, args[0], "")
			start := time.Now()
			res, err := ops.Trigger(tctx, st, enq, ops.TriggerRequest{JobID: args[0], Params: sets, Source: source, DryRun: dryRun, IdempotencyKey: key})
			if paramsFile != "" && errors.Is(err, enqueue.ErrNoParams) {
				err = fmt.Errorf("--params-file %s: no param sets", paramsFile)
			}
			span.End()
			if err != nil {
				return err
			}
			if !asJSON {
				if res.Replayed {
					fmt.Fprintf(stdout(cmd), "run %s of job %s: already created for idempotency key %q (%s, %d items); %d tasks enqueued now\n",
						res.Run.RunID, args[0], key, res.Run.Status, res.Items, res.Enqueued)
				} else {
					fmt.Fprintf(stdout(cmd), "run %s of job %s: %d items (%d duplicate param sets dropped), %d tasks enqueued in %s%s\n",
						res.Run.RunID, args[0], res.Items, res.Deduplicated, res.Enqueued, time.Since(start).Round(time.Millisecond), dryNote(dryRun))
				}
				if res.Skipped {
					fmt.Fprintf(stdout(cmd), "status SKIPPED: %s\n", deref(res.Run.ErrorMessage))
				}
			}
			run, err := st.GetRun(ctx, res.Run.RunID)
			if err != nil {
				return err
			}
			if wait && !res.Skipped {
				run, err = waitRun(cmd, st, run.RunID, res.Items, poll, every, !asJSON)
				if err != nil {
					return err
				}
			}
			if asJSON {
				doc := runSummaryJSON(run)
				// What this trigger did, beside what the run is: the fan-out's own figures.
				doc["tasks_enqueued"], doc["enqueue_ms"] = res.Enqueued, res.EnqueueMs
				if err := json.NewEncoder(stdout(cmd)).Encode(doc); err != nil {
					return err
				}
			} else if wait {
				printRunSummary(stdout(cmd), run)
			}
			if wait || res.Skipped {
				return exitFor(run.Status)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&kv, "param", nil, "a param k=v (repeatable; values parse as JSON when valid JSON)")
	f.StringVar(&paramsFile, "params-file", "", "JSON array or JSON lines of param objects (- for stdin)")
	f.Int64Var(&paramsLimit, "params-max-bytes", ParamsMaxBytesDefault, "refuse a params file larger than this (0: no limit)")
	f.BoolVar(&dryRun, "dry-run", false, "execute everything but keep no target writes and move no cursor")
	f.BoolVar(&wait, "wait", false, "wait for the run to end, showing progress")
	f.BoolVar(&asJSON, "json", false, "print the run as JSON")
	f.DurationVar(&poll, "poll", 250*time.Millisecond, "progress poll interval with --wait")
	f.DurationVar(&every, "progress-every", progressEveryDefault, "with --wait and no terminal: time between progress lines")
	f.StringVar(&key, "idempotency-key", "", "a retried trigger with this key returns the first one's run")
	return cmd
}

// ParamsMaxBytesDefault bounds --params-file: 4 GiB, several million sets; the file is
// streamed, so the bound guards the database, not the enqueuer's memory.
const ParamsMaxBytesDefault = 4 << 30

// streamParamsFile streams --params-file (- is stdin); nil when none was given.
func streamParamsFile(cmd *cobra.Command, file string, limit int64) (iter.Seq2[json.RawMessage, error], func(), error) {
	if file == "" {
		return nil, func() {}, nil
	}
	var r io.Reader = cmd.InOrStdin()
	closeIt := func() {}
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, nil, fmt.Errorf("--params-file: %w", err)
		}
		r, closeIt = f, func() { f.Close() }
	}
	return func(yield func(json.RawMessage, error) bool) {
		for set, err := range params.Stream(r, limit) {
			if err != nil {
				err = fmt.Errorf("--params-file %s: %w", file, err)
			}
			if !yield(set, err) || err != nil {
				return
			}
		}
	}, closeIt, nil
}

// progressEveryDefault is how often --wait prints a progress line when stderr is no terminal.
const progressEveryDefault = 5 * time.Second

// isTerminal reports whether w is a terminal (a bar can redraw itself there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func dryNote(dry bool) string {
	if dry {
		return " [dry run]"
	}
	return ""
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// waitRun polls the run until it is terminal, showing progress on stderr: a bar on a terminal,
// else one line every `every` (and a last one when the run ends).
func waitRun(cmd *cobra.Command, st *store.Store, runID uuid.UUID, total int, poll, every time.Duration, show bool) (store.Run, error) {
	ctx := cmd.Context()
	var (
		pb       *progressbar.ProgressBar
		lines    = show && !isTerminal(cmd.ErrOrStderr())
		start    = time.Now()
		lastLine time.Time
	)
	if every <= 0 {
		return store.Run{}, fmt.Errorf("--progress-every %s: want a positive duration", every)
	}
	line := func(p store.Progress) {
		rate := float64(p.Settled) / max(time.Since(start).Seconds(), 0.001)
		fmt.Fprintf(cmd.ErrOrStderr(), "run %s: %d/%d items done (%d failed), %.1f items/s, %s elapsed\n",
			runID, p.Settled, p.Items, p.Failed, rate, time.Since(start).Round(time.Second))
		lastLine = time.Now()
	}
	if show && !lines {
		pb = progressbar.NewOptions64(int64(total),
			progressbar.OptionSetWriter(cmd.ErrOrStderr()),
			progressbar.OptionSetDescription("items"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("items"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		run, err := st.GetRun(ctx, runID)
		if err != nil {
			return run, err
		}
		if pb != nil || lines {
			if p, err := st.RunProgress(ctx, runID); err == nil {
				if pb != nil {
					pb.Describe(fmt.Sprintf("items (%d failed)", p.Failed))
					_ = pb.Set64(p.Settled)
				}
				if lines && (lastLine.IsZero() || time.Since(lastLine) >= every || run.Status.Terminal()) {
					line(p)
				}
			}
		}
		if run.Status.Terminal() {
			if pb != nil {
				_ = pb.Finish()
			}
			return run, nil
		}
		select {
		case <-ctx.Done():
			return run, fmt.Errorf("stopped waiting for run %s (it goes on): %w", runID, ctx.Err())
		case <-t.C:
		}
	}
}

func printRunSummary(w io.Writer, r store.Run) {
	dur := "-"
	if r.DurationMs != nil {
		dur = (time.Duration(*r.DurationMs) * time.Millisecond).String()
	}
	fmt.Fprintf(w, "run %s: %s%s\n", r.RunID, r.Status, dryNote(r.DryRun))
	fmt.Fprintf(w, "  items      %d total: %d succeeded, %d failed, %d skipped, %d cancelled (%d duplicates dropped)\n",
		r.ItemCount, r.ItemsSucceeded, r.ItemsFailed, r.ItemsSkipped, r.ItemsCancelled, r.ItemsDeduplicated)
	fmt.Fprintf(w, "  attempts   %d\n", r.AttemptCount)
	written := "records written"
	if r.DryRun {
		written = "records that would be written"
	}
	fmt.Fprintf(w, "  records    %d read, %d %s\n", r.RecordsRead, r.RecordsWritten, written)
	fmt.Fprintf(w, "  pages      %d\n", r.PageCount)
	fmt.Fprintf(w, "  duration   %s\n", dur)
	if r.ErrorCategory != etl.CategoryNone {
		fmt.Fprintf(w, "  error      %s: %s\n", r.ErrorCategory, deref(r.ErrorMessage))
	}
}

func runSummaryJSON(r store.Run) map[string]any {
	return map[string]any{
		"run_id": r.RunID, "job_id": r.JobID, "status": r.Status, "dry_run": r.DryRun,
		"error_category": r.ErrorCategory, "error_message": r.ErrorMessage,
		"item_count": r.ItemCount, "items_succeeded": r.ItemsSucceeded, "items_failed": r.ItemsFailed,
		"items_skipped": r.ItemsSkipped, "items_cancelled": r.ItemsCancelled, "items_deduplicated": r.ItemsDeduplicated,
		"attempt_count": r.AttemptCount, "records_read": r.RecordsRead, "records_written": r.RecordsWritten,
		"page_count": r.PageCount, "duration_ms": r.DurationMs, "started_at": r.StartedAt, "ended_at": r.EndedAt,
	}
}

// exitFor maps a run status to the process exit code.
func exitFor(status runstate.Status) error {
	switch status {
	case runstate.StatusSuccess:
		return nil
	case runstate.StatusPartialSuccess:
		return &ExitError{Code: ExitPartialSuccess}
	default:
		return &ExitError{Code: ExitFailed, Err: errors.New("run ended " + string(status))}
	}
}
