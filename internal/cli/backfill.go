package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/etlexec/etlexec/internal/backfill"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/params"
	"github.com/etlexec/etlexec/internal/preflight"
	"github.com/etlexec/etlexec/internal/store"
)

func init() { register(backfillCmd) }

// parseWhen reads --from/--to: an RFC 3339 time or a date (UTC midnight).
func parseWhen(flag, v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--%s %q: want a date (2026-01-31) or an RFC 3339 time", flag, v)
}

// readParamSets reads --param k=v (one set) and --params-file (JSON array or JSON lines; - is
// stdin), as trigger does.
func readParamSets(cmd *cobra.Command, kv []string, file string) ([]json.RawMessage, error) {
	var sets []json.RawMessage
	if len(kv) > 0 {
		p, err := params.ParseKV(kv)
		if err != nil {
			return nil, fmt.Errorf("--param: %w", err)
		}
		sets = append(sets, p)
	}
	if file != "" {
		var r io.Reader = cmd.InOrStdin()
		if file != "-" {
			f, err := os.Open(file)
			if err != nil {
				return nil, fmt.Errorf("--params-file: %w", err)
			}
			defer f.Close()
			r = f
		}
		fs, err := params.ParseFile(r, 0)
		if err != nil {
			return nil, fmt.Errorf("--params-file %s: %w", file, err)
		}
		if len(fs) == 0 {
			return nil, fmt.Errorf("--params-file %s: no param sets", file)
		}
		sets = append(sets, fs...)
	}
	return sets, nil
}

func backfillCmd(e *env) *cobra.Command {
	var (
		from, to, step, paramsFile, resume string
		kv                                 []string
		concurrency                        int
		dryRun, preview, asJSON            bool
		poll                               time.Duration
	)
	cmd := &cobra.Command{
		Use:   "backfill JOB_ID --from T1 --to T2 --step 1d [--param k=v | --params-file F] [--concurrency N] [--preview]",
		Short: "Run a last_run job over past windows: one run per window, bounded and resumable",
		Long: `Cut [--from, --to) into windows of --step (the last ends at --to) and run the job once per
window: each run's items load from the window start to the window end (the run's logical
start), with the given param sets (default: the job's own). At most --concurrency window runs
are open at once; they stay out of the job's single active slot, so its schedule goes on.

The backfill is recorded: the same command again (or --resume ID) resumes it, making only the
windows that have no run yet and waiting for the open ones; a window whose run failed is
rerun with ` + "`enqueuer rerun RUN_ID`" + `. Stopping the command leaves the runs going.
--preview lists the windows and their runs and changes nothing. Exit code: 0 when every
window's run succeeded, 2 otherwise. A paused job is refused.`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if poll <= 0 {
				return fmt.Errorf("--poll %s: want a positive duration", poll)
			}
			st, redis, err := e.connect(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			var spec backfill.Spec
			if resume != "" {
				id, err := parseUUIDArg("--resume", "backfill id", resume)
				if err != nil {
					return err
				}
				b, err := st.GetBackfill(ctx, id)
				if err != nil {
					return historyNotFound(err, fmt.Sprintf("backfill %s not found", id))
				}
				spec = backfill.SpecOf(b, concurrency)
			} else {
				if len(args) != 1 || from == "" || to == "" || step == "" {
					return fmt.Errorf("want JOB_ID --from T1 --to T2 --step D, or --resume BACKFILL_ID")
				}
				spec = backfill.Spec{JobID: args[0], DryRun: dryRun, Concurrency: concurrency, CreatedBy: operator()}
				if spec.From, err = parseWhen("from", from); err != nil {
					return err
				}
				if spec.To, err = parseWhen("to", to); err != nil {
					return err
				}
				if spec.Step, err = store.ParseAge(step); err != nil {
					return fmt.Errorf("--step: %w", err)
				}
				if spec.Params, err = readParamSets(cmd, kv, paramsFile); err != nil {
					return err
				}
			}
			if !preview {
				// As trigger: window runs' tasks go to Redis after the runs are recorded.
				pre, err := preflight.Check(ctx, st.Pool(), redis, preflight.Options{AllowEviction: e.cfg.AllowRedisEviction})
				if err != nil {
					return fmt.Errorf("refusing to backfill: %w", err)
				}
				for _, w := range pre.Warnings {
					e.log.Warn().Str("check", "preflight").Msg(w)
				}
			}
			enq, err := newEnqueuer(redis, enqueue.Config{Store: st, Logger: e.log})
			if err != nil {
				return err
			}
			defer enq.Close()
			r, err := backfill.New(backfill.Config{Store: st, Enqueuer: enq, Poll: poll, Logger: e.log,
				Progress: func(rep backfill.Report) {
					if !asJSON {
						fmt.Fprintf(cmd.ErrOrStderr(), "backfill %s: %d windows, %d succeeded, %d ended otherwise, %d started now\n",
							rep.Backfill.BackfillID, len(rep.Windows), rep.Succeeded, rep.Other, rep.Created)
					}
				}})
			if err != nil {
				return err
			}
			var rep backfill.Report
			if preview {
				rep, err = r.Preview(ctx, spec)
			} else {
				rep, err = r.Run(ctx, spec)
			}
			if err != nil {
				return err
			}
			if err := printJSONOr(cmd, asJSON, rep, func(w io.Writer) error {
				if rep.Backfill.BackfillID != uuid.Nil {
					fmt.Fprintf(w, "backfill %s of job %s (resume with --resume %s)\n", rep.Backfill.BackfillID, rep.Backfill.JobID, rep.Backfill.BackfillID)
				}
				return writeTable(w, func(tw io.Writer) {
					fmt.Fprintln(tw, "WINDOW_START\tWINDOW_END\tRUN_ID\tSTATUS")
					for _, win := range rep.Windows {
						run, status := "-", "-"
						if win.RunID != nil {
							run, status = win.RunID.String(), string(win.Status)
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", win.Start.Format(time.RFC3339), win.End.Format(time.RFC3339), run, status)
					}
				})
			}); err != nil {
				return err
			}
			if !preview && rep.Succeeded != len(rep.Windows) {
				return &ExitError{Code: ExitPartialSuccess, Err: fmt.Errorf("%d of %d windows did not succeed", len(rep.Windows)-rep.Succeeded, len(rep.Windows))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "start of the first window: a date (UTC) or an RFC 3339 time")
	f.StringVar(&to, "to", "", "end of the last window (exclusive)")
	f.StringVar(&step, "step", "", "window length: 1d, 6h, 90m")
	f.StringArrayVar(&kv, "param", nil, "a param k=v of the one param set (repeatable)")
	f.StringVar(&paramsFile, "params-file", "", "JSON array or JSON lines of param sets (- for stdin)")
	f.IntVar(&concurrency, "concurrency", 0, fmt.Sprintf("window runs open at once, 1..%d (default 1, or the recorded one with --resume)", backfill.ConcurrencyMax))
	f.BoolVar(&dryRun, "dry-run", false, "dry runs: no target writes kept, no cursor moved")
	f.StringVar(&resume, "resume", "", "resume a recorded backfill by id")
	f.BoolVar(&preview, "preview", false, "list the windows and their runs; change nothing")
	f.BoolVar(&asJSON, "json", false, "JSON output")
	f.DurationVar(&poll, "poll", time.Second, "how often open window runs are checked")
	return cmd
}
