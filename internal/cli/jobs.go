package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/etlexec/etlexec/internal/jobdef"
	"github.com/etlexec/etlexec/internal/kinds"
	"github.com/etlexec/etlexec/internal/store"
)

func init() { register(jobsCmd) }

func jobsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "jobs", Short: "Define and list jobs"}
	var file string
	var extraKinds []string
	apply := &cobra.Command{
		Use:   "apply -f jobs.yaml",
		Short: "Upsert job definitions from YAML (validated first; all or nothing)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("--file/-f: required (a jobs.yaml)")
			}
			b, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("--file: %w", err)
			}
			rows, err := jobdef.Parse(file, b, jobdef.Catalog{Registry: kinds.Builtin(), Extra: extraKinds})
			if err != nil {
				return err
			}
			return e.withStore(cmd.Context(), func(st *store.Store) error {
				inserted, err := st.UpsertJobs(cmd.Context(), rows)
				if err != nil {
					return err
				}
				for i, r := range rows {
					verb := "updated"
					if inserted[i] {
						verb = "created"
					}
					fmt.Fprintf(stdout(cmd), "%s job %s (kind %s)\n", verb, r.JobID, r.Kind)
				}
				return nil
			})
		},
	}
	apply.Flags().StringVarP(&file, "file", "f", "", "jobs.yaml to apply")
	apply.Flags().StringSliceVar(&extraKinds, "kind", nil, "extra kind names your own worker binary registers")

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
				return printJSONOr(cmd, asJSON, jobs, func(w io.Writer) error {
					return writeTable(w, func(tw io.Writer) {
						fmt.Fprintln(tw, "JOB\tKIND\tSTRATEGY\tQUEUE\tSCHEDULE\tENABLED\tLAST STATUS\tLAST STARTED")
						for _, j := range jobs {
							sched, last, started := "-", "-", "-"
							if j.Schedule != nil {
								sched = *j.Schedule
							}
							if j.LastStatus != nil {
								last = *j.LastStatus
							}
							if j.LastStartedAt != nil {
								started = j.LastStartedAt.Format("2006-01-02 15:04:05")
							}
							fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%s\t%s\n", j.JobID, j.Kind, j.Strategy, j.Queue, sched, j.Enabled, last, started)
						}
					})
				})
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	cmd.AddCommand(apply, list)
	return cmd
}
