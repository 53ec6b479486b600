package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/etlexec/etlexec/internal/jobdef"
	"github.com/etlexec/etlexec/internal/kinds"
	"github.com/etlexec/etlexec/internal/ops"
	"github.com/etlexec/etlexec/internal/store"
)

func init() { register(jobsCmd) }

func jobsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "jobs", Short: "Define, list, pause, resume and delete jobs"}
	var (
		file       string
		extraKinds []string
		prune      bool
	)
	apply := &cobra.Command{
		Use:   "apply -f jobs.yaml [--prune]",
		Short: "Upsert job definitions from YAML (validated first; all or nothing)",
		Long: `Validate every job in the file, then write them all in one transaction (or none). A job's
pause state is left as it is.

--prune also deletes, in the same transaction, the jobs that are not in the file. A job to prune
that still has runs fails the whole apply (nothing changes): delete it with
` + "`enqueuer jobs delete JOB --with-history`" + ` (see --preview), or keep it in the file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("--file/-f: required (a jobs.yaml)")
			}
			b, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("--file: %w", err)
			}
			defs, err := jobdef.Load(file, b, jobdef.Catalog{Registry: kinds.Builtin(), Extra: extraKinds})
			if err != nil {
				return err
			}
			return e.withStore(cmd.Context(), func(st *store.Store) error {
				rep, err := st.ApplyDefinitions(cmd.Context(), defs, prune)
				if err != nil {
					return err
				}
				for _, a := range rep.Applied {
					verb := "updated"
					if a.Created {
						verb = "created"
					}
					fmt.Fprintf(stdout(cmd), "%s job %s (kind %s)\n", verb, a.JobID, a.Kind)
				}
				for _, id := range rep.Pruned {
					fmt.Fprintf(stdout(cmd), "deleted job %s (not in %s)\n", id, file)
				}
				for _, name := range rep.Sources {
					fmt.Fprintf(stdout(cmd), "applied source %s\n", name)
				}
				for _, name := range rep.PrunedSources {
					fmt.Fprintf(stdout(cmd), "deleted source %s (not in %s)\n", name, file)
				}
				return nil
			})
		},
	}
	apply.Flags().StringVarP(&file, "file", "f", "", "jobs.yaml to apply")
	apply.Flags().StringSliceVar(&extraKinds, "kind", nil, "extra kind names your own worker binary registers")
	apply.Flags().BoolVar(&prune, "prune", false, "delete jobs that are not in the file (refused for jobs with runs)")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List jobs with their last run",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withStore(cmd.Context(), func(st *store.Store) error {
				jobs, err := st.AllJobs(cmd.Context())
				if err != nil {
					return err
				}
				// --json prints the items of GET /api/v1/jobs: the same store.JobSummary.
				return printJSONOr(cmd, asJSON, jobs, func(w io.Writer) error {
					return writeTable(w, func(tw io.Writer) {
						fmt.Fprintln(tw, "JOB\tKIND\tSTRATEGY\tQUEUE\tSCHEDULE\tENABLED\tPAUSED\tLAST STATUS\tLAST STARTED")
						for _, j := range jobs {
							sched, last, started := "-", "-", "-"
							if j.Schedule != nil {
								sched = *j.Schedule
							}
							if j.LastStatus != nil {
								last = string(*j.LastStatus)
							}
							if j.LastStartedAt != nil {
								started = j.LastStartedAt.Format("2006-01-02 15:04:05")
							}
							fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%t\t%s\t%s\n", j.JobID, j.Kind, j.Strategy, j.Queue, sched, j.Enabled,
								j.Paused, last, started)
						}
					})
				})
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	cmd.AddCommand(apply, list, jobsPauseCmd(e), jobsResumeCmd(e), jobsDeleteCmd(e))
	return cmd
}

func jobsPauseCmd(e *env) *cobra.Command {
	var (
		reason, who string
		asJSON      bool
	)
	cmd := &cobra.Command{
		Use:   "pause JOB_ID [--reason TEXT]",
		Short: "Pause a job: its schedule, triggers, reruns and backfills are refused until resumed",
		Long: `Pause a job. While it is paused its cron ticks do not fire (and are not caught up after
resume), and trigger, rerun and backfill are refused with a message naming who paused it and why.
Runs already started go on; cancel them to stop them.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if who == "" {
				who = operator()
			}
			return e.withStore(cmd.Context(), func(st *store.Store) error {
				c, err := ops.PauseJob(cmd.Context(), st, args[0], who, reason)
				if err != nil {
					return historyNotFound(err, fmt.Sprintf("job %q not found", args[0]))
				}
				return printJSONOr(cmd, asJSON, c, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "job %s paused by %s since %s\n", c.JobID, deref(c.PausedBy), histTime(c.PausedAt))
					return err
				})
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (shown to whoever is refused)")
	cmd.Flags().StringVar(&who, "by", "", "who (default user@host)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	return cmd
}

func jobsResumeCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "resume JOB_ID",
		Short: "Resume a paused job; ticks missed while it was paused are not fired",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withStore(cmd.Context(), func(st *store.Store) error {
				c, err := ops.ResumeJob(cmd.Context(), st, args[0])
				if err != nil {
					return historyNotFound(err, fmt.Sprintf("job %q not found", args[0]))
				}
				return printJSONOr(cmd, asJSON, c, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "job %s resumed at %s\n", c.JobID, histTime(c.ResumedAt))
					return err
				})
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	return cmd
}

func jobsDeleteCmd(e *env) *cobra.Command {
	var (
		withHistory, preview, asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "delete JOB_ID [--with-history] [--preview]",
		Short: "Delete a job; one with runs only --with-history, which removes them too",
		Long: `Delete a job with its cursors. A job that has runs is refused unless --with-history is given:
then the job is paused, its runs (items, attempts, logs, alerts) are deleted in batches and the
job last. A job with a PENDING or RUNNING run is always refused: cancel it first. --preview
prints what would be deleted and changes nothing.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withStore(cmd.Context(), func(st *store.Store) error {
				res, err := ops.DeleteJob(cmd.Context(), st, args[0], withHistory, preview, operator())
				if err != nil {
					return historyNotFound(err, fmt.Sprintf("job %q not found", args[0]))
				}
				return printJSONOr(cmd, asJSON, res, func(w io.Writer) error {
					h := res.History
					verb := "deleted"
					if preview {
						verb = "would delete"
					}
					_, err := fmt.Fprintf(w, "job %s: %s the job, %d cursors, %d backfills and %d runs (%d items, %d attempts)\n",
						h.JobID, verb, h.Cursors, h.Backfills, h.Runs, h.Items, h.Attempts)
					if err == nil && preview && h.ActiveRuns > 0 {
						_, err = fmt.Fprintf(w, "refused while %d runs are PENDING or RUNNING: cancel them first\n", h.ActiveRuns)
					}
					return err
				})
			})
		},
	}
	cmd.Flags().BoolVar(&withHistory, "with-history", false, "also delete the job's runs, items, attempts and logs")
	cmd.Flags().BoolVar(&preview, "preview", false, "print what would be deleted; change nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	return cmd
}
