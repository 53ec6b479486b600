package cli

import (
	"errors"
	"fmt"
	"time"

	"ariga.io/atlas/sql/migrate"
	"github.com/spf13/cobra"

	"github.com/etlexec/etlexec/internal/dbmigrate"
	"github.com/etlexec/etlexec/internal/schema"
	"github.com/etlexec/etlexec/internal/store"
)

func init() {
	register(migrateCmd)
	register(logsMaintainCmd)
}

func migrateCmd(e *env) *cobra.Command {
	var noLogs bool
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply pending migrations (Atlas directory format, CLI-compatible), then log partitions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			db, err := dbmigrate.Open(e.cfg.DatabaseURL)
			if err != nil {
				return err
			}
			defer db.Close()
			m := &dbmigrate.Migrator{DB: db, Log: e.log}
			st, err := m.Status(ctx)
			if err != nil {
				return err
			}
			if st.Legacy != nil {
				fmt.Fprintln(stdout(cmd), "legacy upgrade:", st.Legacy.Plan())
			}
			rep, err := m.Apply(ctx)
			if err != nil {
				return err
			}
			if len(rep.Applied) == 0 {
				fmt.Fprintln(stdout(cmd), "schema is up to date; nothing to apply")
			}
			for _, f := range rep.Applied {
				fmt.Fprintln(stdout(cmd), "applied", f)
			}
			if noLogs {
				return nil
			}
			return e.withStore(ctx, func(s *store.Store) error {
				lr, err := s.MaintainLogPartitions(ctx, store.LogMaintenance{})
				if err != nil {
					return err
				}
				printLogMaintenance(cmd, lr)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&noLogs, "skip-log-partitions", false, "do not create/drop log partitions")
	cmd.AddCommand(migrateStatusCmd(e), migrateDiffCmd(e))
	return cmd
}

func migrateStatusCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show applied and pending migrations",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := dbmigrate.Open(e.cfg.DatabaseURL)
			if err != nil {
				return err
			}
			defer db.Close()
			st, err := (&dbmigrate.Migrator{DB: db}).Status(cmd.Context())
			if err != nil {
				return err
			}
			w := stdout(cmd)
			for _, r := range st.Applied {
				fmt.Fprintf(w, "applied  %s_%s  %d/%d statements  %s\n", r.Version, r.Description, r.Applied, r.Total, r.ExecutedAt.Format(time.RFC3339))
			}
			for _, p := range st.Pending {
				fmt.Fprintf(w, "pending  %s\n", p)
			}
			if st.Legacy != nil {
				fmt.Fprintln(w, "legacy:", st.Legacy.Plan())
			}
			if len(st.Pending) == 0 {
				fmt.Fprintln(w, "schema is up to date")
			}
			return nil
		},
	}
}

func migrateDiffCmd(e *env) *cobra.Command {
	var dirPath, hclPath string
	cmd := &cobra.Command{
		Use:   "diff NAME",
		Short: "Write the next migration from " + schema.HCLPath + " (dev database on DATABASE_URL's server)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := migrate.NewLocalDir(dirPath)
			if err != nil {
				return fmt.Errorf("open migration directory %s: %w", dirPath, err)
			}
			hcl, err := readFile(hclPath)
			if err != nil {
				return err
			}
			f, err := dbmigrate.Plan(cmd.Context(), e.cfg.DatabaseURL, dir, args[0], hcl)
			if errors.Is(err, dbmigrate.ErrNoChanges) {
				fmt.Fprintln(stdout(cmd), "no changes: the migration directory already reaches", hclPath)
				return nil
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout(cmd), "wrote %s/%s and re-hashed atlas.sum\n", dirPath, f)
			return nil
		},
	}
	cmd.Flags().StringVar(&dirPath, "dir", schema.MigrationsPath, "migration directory (Atlas format), relative to the working directory")
	cmd.Flags().StringVar(&hclPath, "schema", schema.HCLPath, "desired schema (Atlas HCL), relative to the working directory")
	cmd.AddCommand(&cobra.Command{
		Use:   "hash",
		Short: "Re-hash atlas.sum after a hand edit (like `atlas migrate hash`)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := migrate.NewLocalDir(dirPath)
			if err != nil {
				return fmt.Errorf("open migration directory %s: %w", dirPath, err)
			}
			return dbmigrate.Rehash(dir)
		},
	})
	return cmd
}

func logsMaintainCmd(e *env) *cobra.Command {
	var m store.LogMaintenance
	cmd := &cobra.Command{
		Use:   "logs-maintain",
		Short: "Create upcoming monthly log partitions and drop those past retention",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withStore(cmd.Context(), func(s *store.Store) error {
				rep, err := s.MaintainLogPartitions(cmd.Context(), m)
				if err != nil {
					return err
				}
				printLogMaintenance(cmd, rep)
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&m.Retention, "retention", store.LogRetentionDefault, "keep logs this long")
	cmd.Flags().IntVar(&m.MonthsAhead, "months-ahead", store.LogMonthsAheadDefault, "future months to create")
	return cmd
}

func printLogMaintenance(cmd *cobra.Command, r *store.LogMaintenanceReport) {
	for _, p := range r.Created {
		fmt.Fprintln(stdout(cmd), "created log partition", p)
	}
	for _, p := range r.Dropped {
		fmt.Fprintln(stdout(cmd), "dropped log partition", p)
	}
}
