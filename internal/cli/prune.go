package cli

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/etlexec/etlexec/internal/retention"
	"github.com/etlexec/etlexec/internal/store"
)

func init() { register(pruneCmd) }

// historyRetentionEnv names the global history retention of `prune` and `schedule`.
const historyRetentionEnv = "ETL_HISTORY_RETENTION"

// globalRetention reads --older-than / ETL_HISTORY_RETENTION: "0" keeps history forever.
func globalRetention(flag, value string) (time.Duration, error) {
	d, err := store.ParseAge(value)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", flag, err)
	}
	return d, nil
}

// retentionDefault is ETL_HISTORY_RETENTION, else retention.GlobalDefault as days.
func retentionDefault() string {
	if v := os.Getenv(historyRetentionEnv); v != "" {
		return v
	}
	return fmt.Sprintf("%dd", int(retention.GlobalDefault/(24*time.Hour)))
}

func pruneCmd(e *env) *cobra.Command {
	var (
		olderThan, jobID string
		preview, asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "prune [--older-than 90d] [--job J] [--preview]",
		Short: "Remove finished runs (items, attempts, logs) older than their retention, in small batches",
		Long: `Remove runs that started and ended longer ago than the retention, with their items, attempts,
logs and alerts. A job's own history_retention (jobs.yaml) wins over --older-than, which is the
retention of every other job (default ETL_HISTORY_RETENTION, else 90d; 0 keeps their history).
Always kept: open runs, each job's latest run, runs a cursor names; cursors are never touched.
Deletes go in short transactions of at most 200 runs and 50,000 items that skip rows other
transactions hold, so workers and triggers are never held up. --preview counts and changes
nothing. ` + "`enqueuer schedule`" + ` runs the same pass daily.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			global, err := globalRetention("--older-than", olderThan)
			if err != nil {
				return err
			}
			return e.withStore(cmd.Context(), func(st *store.Store) error {
				p, err := retention.New(retention.Config{Store: st, Global: global, Logger: e.log})
				if err != nil {
					return err
				}
				rep, err := p.Prune(cmd.Context(), jobID, preview)
				if err != nil {
					return historyNotFound(err, fmt.Sprintf("job %q not found", jobID))
				}
				return printJSONOr(cmd, asJSON, rep, func(w io.Writer) error {
					verb := "removed"
					if preview {
						verb = "would remove"
					}
					if err := writeTable(w, func(tw io.Writer) {
						fmt.Fprintln(tw, "JOB\tRETENTION\tCUTOFF\tRUNS\tITEMS\tATTEMPTS")
						for _, j := range rep.Jobs {
							fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", j.JobID, j.Retention, j.Cutoff.UTC().Format(time.RFC3339), j.Runs, j.Items, j.Attempts)
						}
					}); err != nil {
						return err
					}
					_, err := fmt.Fprintf(w, "%s %d runs, %d items, %d attempts\n", verb, rep.Runs, rep.Items, rep.Attempts)
					return err
				})
			})
		},
	}
	cmd.Flags().StringVar(&olderThan, "older-than", retentionDefault(), "retention of jobs without their own: 90d, 720h; 0 keeps (env "+historyRetentionEnv+")")
	cmd.Flags().StringVar(&jobID, "job", "", "only this job")
	cmd.Flags().BoolVar(&preview, "preview", false, "count what would be removed; change nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	return cmd
}
