// Package sqlincremental owns the built-in "sql_incremental" kind, which copies the rows of a
// SQL query on a source database (Postgres, or MySQL/MariaDB) into a table of the job's target
// database through the shared loader [pgtarget.Stream]. It uses only the etl SDK, the shared
// kind helpers (incremental, pgtarget), pgx and the MySQL driver, exactly as a team's own kind
// would.
//
// The job's query names its parameters :name; the item's params supply them, and
// :cursor_start and :cursor_end the item's window. The kind applies the window itself around
// the query, so the query only needs the conditions that reach an index:
//
//	SELECT id, region, amount, modified_at FROM orders
//	WHERE region = :region AND modified_at >= :cursor_start AND modified_at < :cursor_end
//
// For modified_date the window is [cursor − lookback, upper): inclusive at the cursor, because
// rows can be written later with exactly the cursor's time (a second writer in the same
// microsecond, a coarse column, a batch stamped with one time), and exclusive at upper, which
// is fixed before the source is read so the cursor never passes it. `modified_at >
// :cursor_start` would skip those rows and is refused. On Postgres, upper is by default the
// source's clock held back to the start of its oldest open transaction (horizon
// "transactions"): every row modified before upper has committed and is visible in the
// snapshot, so no lookback is needed. Elsewhere upper is the source's clock (minus safety_lag)
// and the lookback re-reads rows that commit late.
//
// Rows stream in one consistent snapshot (REPEATABLE READ) straight into COPY on the target:
// binary when the source is Postgres and its types are built in, text otherwise. A first load
// COPYs into the target table itself and falls back to the upsert when a key already exists;
// otherwise rows go through a staging table and INSERT … ON CONFLICT (key columns) DO UPDATE,
// which leaves unchanged rows untouched. For modified_date the greatest modified_column value
// read is the item's watermark; the cursor meta keeps it with the key of the row holding it.
package sqlincremental

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/kinds/incremental"
	"github.com/etlexec/etlexec/internal/kinds/pgtarget"
)

// Kind is the kind name the handler is registered under (dw_etl_jobs.kind).
const Kind = "sql_incremental"

// Config defaults and limits.
const (
	PageSizeDefault = 10_000
	// MaxPageSize keeps page counts meaningful; rows are never held a page at a time.
	MaxPageSize = 1_000_000
	// LookbackClockDefault is the lookback when upper comes from the clock alone: transactions
	// that commit later than this after their modification time are not covered.
	LookbackClockDefault = 5 * time.Minute

	// closeTimeout bounds closing the source connection.
	closeTimeout = 5 * time.Second
)

// Horizons (Config.Horizon): how upper is fixed.
const (
	// HorizonTransactions: the source's clock, held back to the start of the oldest transaction
	// open in the source database (Postgres only).
	HorizonTransactions = "transactions"
	// HorizonClock: the source's clock alone; the lookback covers late commits.
	HorizonClock = "clock"
)

// Bind names the window supplies; params may not use them.
const (
	BindCursorStart = "cursor_start"
	BindCursorEnd   = "cursor_end"
)

// Register adds the sql_incremental kind to r and declares its config.
func Register(r *etl.Registry) {
	r.Register(Kind, Handler)
	etl.DeclareConfig[Config](r, Kind)
}

// Config is the job's configuration (dw_etl_jobs.config).
type Config struct {
	// Dialect is the source database: DialectPostgres (the default) or DialectMySQL (MySQL and
	// MariaDB).
	Dialect string `json:"dialect"`
	// SourceURLEnv names the environment variable holding the source's connection string
	// (a postgres:// URL, or a MySQL driver DSN such as user:pw@tcp(host:3306)/db); the string
	// itself never appears in config, logs or errors.
	SourceURLEnv string `json:"source_url_env"`
	// Query is one SELECT statement with :name bind parameters; see the package documentation.
	Query string `json:"query"`
	// ModifiedColumn is the query's column holding each row's modification time (timestamptz,
	// timestamp or date; a timestamp without zone is read as UTC). Required for modified_date;
	// when set, the kind applies the window to it.
	ModifiedColumn string `json:"modified_column"`
	// TargetTable is "table" or "schema.table" in the target database. It must exist.
	TargetTable string `json:"target_table"`
	// KeyColumns are the target's unique key columns; rows are upserted on them.
	KeyColumns []string `json:"key_columns"`
	// Columns maps target column → source column. Empty: every column of the query into the
	// target column of the same name.
	Columns map[string]string `json:"columns"`
	// PageSize is the rows counted as one page in page_count and the progress message (rows
	// stream, they are not held a page at a time). Defaults to PageSizeDefault.
	PageSize int `json:"page_size"`
	// Horizon is HorizonTransactions (the default for postgres) or HorizonClock (the only one for
	// mysql). Lookback defaults to 0 with the first and LookbackClockDefault with the second.
	Horizon string `json:"horizon"`
	incremental.WindowConfig

	nq namedQuery
}

// Validate checks the config for strategy s and fills the defaults and derived fields; it runs
// at jobs apply and at the start of every item.
func (c *Config) Validate(s etl.Strategy) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("sql_incremental config: "+format, args...)
	}
	switch c.Dialect {
	case "":
		c.Dialect = DialectPostgres
	case DialectPostgres, DialectMySQL:
	default:
		return bad("dialect %q: want %s or %s (MariaDB too)", c.Dialect, DialectPostgres, DialectMySQL)
	}
	switch c.Horizon {
	case "":
		c.Horizon = HorizonTransactions
		if c.Dialect == DialectMySQL {
			c.Horizon = HorizonClock
		}
	case HorizonClock:
	case HorizonTransactions:
		if c.Dialect == DialectMySQL {
			return bad("horizon %q: postgres only; mysql uses %q with a lookback", c.Horizon, HorizonClock)
		}
	default:
		return bad("horizon %q: want %s or %s", c.Horizon, HorizonTransactions, HorizonClock)
	}
	lookback := LookbackClockDefault
	if c.Horizon == HorizonTransactions {
		lookback = 0
	}
	if err := c.WindowConfig.Validate(lookback, 0); err != nil {
		return bad("%v", err)
	}
	if c.SourceURLEnv == "" {
		return bad("source_url_env: required")
	}
	if strings.TrimSpace(c.Query) == "" {
		return bad("query: required")
	}
	nq, err := parseNamed(c.Query, c.Dialect)
	if err != nil {
		return bad("%v", err)
	}
	c.nq = nq
	if c.ModifiedColumn != "" {
		if err := pgtarget.CheckIdent(c.ModifiedColumn); err != nil {
			return bad("modified_column %q: %v", c.ModifiedColumn, err)
		}
	} else if s == etl.StrategyModifiedDate {
		return bad("modified_column: required for strategy %s", s)
	}
	if s == etl.StrategyModifiedDate {
		for _, u := range nq.Uses {
			if u.Name == BindCursorStart && u.Op == ">" {
				return bad("query: \"> :%s\" skips rows written later with the cursor's own time; write \">= :%s\" (rows at the cursor are re-read and upserted)",
					BindCursorStart, BindCursorStart)
			}
		}
	}
	if c.PageSize == 0 {
		c.PageSize = PageSizeDefault
	}
	if c.PageSize < 1 || c.PageSize > MaxPageSize {
		return bad("page_size %d: want 1..%d", c.PageSize, MaxPageSize)
	}
	if err := c.target().Validate(); err != nil {
		return fmt.Errorf("sql_incremental config: %w", err)
	}
	for _, k := range c.KeyColumns {
		if f := c.target().SourceField(k); pgtarget.CheckIdent(f) != nil {
			return bad("columns: source column %q of key column %q is not a valid name", f, k)
		}
	}
	return nil
}

func (c *Config) target() pgtarget.Target {
	return pgtarget.Target{Table: c.TargetTable, KeyColumns: c.KeyColumns, Columns: c.Columns}
}

// Handler runs one attempt of one sql_incremental item; see the package documentation.
func Handler(ctx context.Context, it *etl.Item) error {
	cfg, err := etl.LoadConfig[Config](it)
	if err != nil {
		return err
	}
	var params map[string]any
	if err := it.Params(&params); err != nil {
		return etl.Permanent(err)
	}
	for _, reserved := range []string{BindCursorStart, BindCursorEnd} {
		if _, ok := params[reserved]; ok {
			return etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental params: %q is reserved for the window", reserved)))
		}
	}
	for _, name := range cfg.nq.Names {
		if _, ok := params[name]; !ok && name != BindCursorStart && name != BindCursorEnd {
			return etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental query: unknown bind parameter :%s (not a param of the item, nor cursor_start or cursor_end)", name)))
		}
	}
	if it.Target() == nil {
		return etl.Permanent(etl.DataError(errors.New("sql_incremental: the job has no target database")))
	}
	if len(cfg.Columns) > 0 {
		// An empty page checks the target table and its columns before the source is
		// touched; with the identity mapping the columns are known only from the query.
		if _, err := pgtarget.LoadPage(ctx, it.Target(), cfg.target(), pgtarget.Page{Fields: slices.Collect(maps.Values(cfg.Columns))}); err != nil {
			return fmt.Errorf("sql_incremental: %w", err)
		}
	}
	dsn, ok := os.LookupEnv(cfg.SourceURLEnv)
	if !ok || dsn == "" {
		return etl.Permanent(etl.SystemError(fmt.Errorf("sql_incremental: environment variable %s (source_url_env) is not set", cfg.SourceURLEnv)))
	}

	var src source
	switch cfg.Dialect {
	case DialectMySQL:
		src, err = openMySQL(ctx, dsn, cfg)
	default:
		src, err = openPostgres(ctx, dsn, cfg)
	}
	if err != nil {
		return err
	}
	defer func() {
		// Bound the goodbye so a dead network cannot hold the item.
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		src.close(closeCtx)
	}()

	w := incremental.NewWindow(it, cfg.LookbackDuration())
	if cfg.ModifiedColumn != "" && w.Incremental() {
		if err := fixUpper(ctx, src, w, cfg); err != nil {
			return err
		}
	}
	testHook(ctx, HookUpperFixed)
	if err := src.begin(ctx); err != nil {
		return err
	}
	l := loader{it: it, cfg: cfg, src: src, w: w, params: params}
	return l.run(ctx)
}

// lastRunWaitMax bounds how long a last_run item waits for the source to be safe up to the
// run's logical start before failing (and being retried).
const lastRunWaitMax = 30 * time.Second

// fixUpper sets the window's upper bound: for modified_date the source's bound at item start;
// for last_run (whose upper is the run's logical start) it waits until the source's bound has
// passed it, so no row the window covers can still commit.
func fixUpper(ctx context.Context, src source, w *incremental.Window, cfg *Config) error {
	lag := cfg.SafetyLagDuration()
	deadline := time.Now().Add(lastRunWaitMax + lag)
	for {
		b, err := src.bound(ctx, cfg.Horizon)
		if err != nil {
			return err
		}
		if w.Strategy == etl.StrategyModifiedDate {
			w.SetUpper(b.at, lag, b.why)
			return nil
		}
		safe := b.at.Add(-lag)
		if w.Upper == nil || !safe.Before(*w.Upper) {
			return nil
		}
		if time.Now().After(deadline) {
			return etl.DBError(fmt.Errorf("sql_incremental: the source is safe only up to %s (%s), before the run's logical start %s; retrying later",
				safe.UTC().Format(time.RFC3339Nano), b.why, w.Upper.UTC().Format(time.RFC3339Nano)))
		}
		wait := min(w.Upper.Sub(safe), 250*time.Millisecond)
		select {
		case <-ctx.Done():
			return fmt.Errorf("sql_incremental: wait for the source's horizon: %w", ctx.Err())
		case <-time.After(wait):
		}
	}
}

// bound is the latest time upper may take: below it, every row of the source is visible.
type bound struct {
	at  time.Time
	why string
}

// Test hooks: points of an item where a test may act on the source (commit a transaction,
// write rows) to prove the window holds. Production code passes through them.
const (
	// HookUpperFixed: upper is fixed, the snapshot not yet taken.
	HookUpperFixed = "upper_fixed"
	// HookSnapshot: the snapshot is taken (the first rows are read), the load not finished.
	HookSnapshot = "snapshot"
)

type hookKey struct{}

// withTestHook returns ctx carrying fn, called at each hook point of items run with it (tests
// reach it through export_test.go).
func withTestHook(ctx context.Context, fn func(point string)) context.Context {
	return context.WithValue(ctx, hookKey{}, fn)
}

func testHook(ctx context.Context, point string) {
	if fn, ok := ctx.Value(hookKey{}).(func(string)); ok {
		fn(point)
	}
}
