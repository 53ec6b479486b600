package cli

import (
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/etlexec/etlexec/internal/dispatch"
	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/ops"
	"github.com/etlexec/etlexec/internal/runstate"
	"github.com/etlexec/etlexec/internal/store"
)

func init() {
	register(cancelCmd)
	register(rerunCmd)
}

func parseRunID(arg string) (uuid.UUID, error) { return parseUUIDArg("RUN_ID", "uuid", arg) }

func operator() string {
	if u, err := user.Current(); err == nil {
		h, _ := os.Hostname()
		return u.Username + "@" + h
	}
	return "unknown"
}

func cancelCmd(e *env) *cobra.Command {
	var reason, who string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "cancel RUN_ID [--reason TEXT]",
		Short: "Cancel a run: pending items cancelled, running ones stopped, cursors untouched",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			runID, err := parseRunID(args[0])
			if err != nil {
				return err
			}
			st, redis, err := e.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			d, err := dispatch.New(dispatch.Config{Redis: redis})
			if err != nil {
				return err
			}
			defer d.Close()
			if who == "" {
				who = operator()
			}
			res, err := ops.Cancel(cmd.Context(), st, d, runID, who, reason)
			if err != nil {
				return err
			}
			return printJSONOr(cmd, asJSON, res, func(w io.Writer) error {
				fmt.Fprintf(w, "run %s: %d pending items cancelled (%d tasks removed from Redis), %d running items signalled; status %s\n",
					runID, res.ItemsCancelled, res.TasksRemoved, res.Signalled, res.Status)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded on the run)")
	cmd.Flags().StringVar(&who, "by", "", "who (default user@host)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	return cmd
}

var validStatuses = func() map[string]bool {
	m := make(map[string]bool, len(runstate.Statuses))
	for _, s := range runstate.Statuses {
		m[string(s)] = true
	}
	return m
}()
var validCategories = map[string]bool{"API": true, "DB": true, "DATA": true, "SYSTEM": true, "NONE": true}

func upperList(flag string, vals []string, valid map[string]bool) ([]string, error) {
	var out []string
	for _, v := range vals {
		u := strings.ToUpper(strings.TrimSpace(v))
		if !valid[u] {
			return nil, fmt.Errorf("--%s: unknown value %q", flag, v)
		}
		out = append(out, u)
	}
	return out, nil
}

func rerunCmd(e *env) *cobra.Command {
	var (
		statuses, categories, hashes []string
		preview, asJSON              bool
	)
	cmd := &cobra.Command{
		Use:   "rerun RUN_ID [--status FAILED,CANCELLED] [--category API,...] [--param-hash H ...] [--preview]",
		Short: "Run matching items of a finished run again, inside the same run",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			runID, err := parseRunID(args[0])
			if err != nil {
				return err
			}
			var f store.RerunFilter
			if f.Statuses, err = upperList("status", statuses, validStatuses); err != nil {
				return err
			}
			if f.Categories, err = upperList("category", categories, validCategories); err != nil {
				return err
			}
			st, redis, err := e.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			enq, err := newEnqueuer(redis, enqueue.Config{Store: st, Logger: e.log})
			if err != nil {
				return err
			}
			defer enq.Close()
			if f.ParamHashes, err = st.ResolveParamHashes(cmd.Context(), runID, hashes); err != nil {
				return fmt.Errorf("--param-hash: %w", err)
			}
			res, err := ops.Rerun(cmd.Context(), st, enq, runID, f, preview)
			if err != nil {
				return err
			}
			return printJSONOr(cmd, asJSON, res, func(w io.Writer) error {
				verb := "re-running"
				if preview {
					verb = "would re-run"
				}
				fmt.Fprintf(w, "run %s: %s %d items\n", runID, verb, len(res.Items))
				return writeTable(w, func(tw io.Writer) {
					fmt.Fprintln(tw, "ITEM\tSTATUS\tCATEGORY\tATTEMPTS\tPARAM_HASH\tPARAMS")
					for _, it := range res.Items {
						fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", it.ItemNo, it.Status, it.ErrorCategory, it.Attempts, it.ParamHash[:16], string(it.Params))
					}
				})
			})
		},
	}
	cmd.Flags().StringSliceVar(&statuses, "status", nil, "item statuses to re-run (default FAILED,CANCELLED)")
	cmd.Flags().StringSliceVar(&categories, "category", nil, "only items failed with these categories")
	cmd.Flags().StringSliceVar(&hashes, "param-hash", nil, "only these param hashes (unique prefixes will do)")
	cmd.Flags().BoolVar(&preview, "preview", false, "show what would be re-run; change nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	return cmd
}
