// Package cli builds the enqueuer and worker command trees. Each subcommand lives in its own
// file; they share configuration loading, logging and the exit-code mapping here.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/etlexec/etlexec/internal/config"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/telemetry"
)

// ExitError carries a specific process exit code (e.g. 2 for PARTIAL_SUCCESS).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

// Main runs cmd and returns the process exit code; mains call os.Exit with it.
func Main(ctx context.Context, cmd *cobra.Command, args []string) int {
	cmd.SetArgs(args)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	err = withMigrateHint(err)
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "error:", ee.Err)
		}
		return ee.Code
	}
	fmt.Fprintln(cmd.ErrOrStderr(), "error:", err)
	return 1
}

// env is the configuration shared by enqueuer subcommands.
type env struct {
	cfg config.Common
	// loadErr is a variable that did not parse; setup reports it, ending the command.
	loadErr error
	log     zerolog.Logger
}

func newEnv() *env {
	e := &env{}
	e.loadErr = config.Load(&e.cfg)
	e.cfg.WithDefaults()
	return e
}

// setup validates the configuration and builds the logger; call it from PersistentPreRunE.
func (e *env) setup(cmd *cobra.Command) error {
	if e.loadErr != nil {
		return fmt.Errorf("configuration: %w", e.loadErr)
	}
	if err := e.cfg.Validate(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	e.log = telemetry.NewLogger(cmd.ErrOrStderr(), e.cfg.LogLevel, e.cfg.LogFormat)
	return nil
}

func init() {
	// Sub-second timestamps keep run log lines ordered; set once, as zerolog reads it globally.
	zerolog.TimeFieldFormat = time.RFC3339Nano
}

// Enqueuer is the root of `enqueuer`: triggering and operating runs, migrations, serving.
func Enqueuer() *cobra.Command {
	e := newEnv()
	root := &cobra.Command{
		Use:   "enqueuer",
		Short: "Start and operate etlexec runs; migrate the database",
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return e.setup(cmd)
		},
	}
	config.BindCommon(root.PersistentFlags(), &e.cfg)
	for _, add := range enqueuerCommands {
		root.AddCommand(add(e))
	}
	return root
}

// enqueuerCommands is filled by each subcommand file's init, so files stay independent.
var enqueuerCommands []func(*env) *cobra.Command

func register(f func(*env) *cobra.Command) { enqueuerCommands = append(enqueuerCommands, f) }

// Stdout is where results go (logs go to stderr).
func stdout(cmd *cobra.Command) io.Writer { return cmd.OutOrStdout() }

// withMigrateHint adds "run enqueuer migrate" to an error Postgres raised for a table or column
// that does not exist: the database is older than the binary (or empty).
func withMigrateHint(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "42703") && !errors.Is(err, store.ErrNotMigrated) {
		return fmt.Errorf("%w\nthe database schema is missing or older than this binary: run `enqueuer migrate`", err)
	}
	return err
}
