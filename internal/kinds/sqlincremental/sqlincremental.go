// Package sqlincremental owns the built-in "sql_incremental" kind, which copies the
// rows of a SQL query on a source Postgres database into a table of the job's target
// database, and [LoadPage], the upsert that kind and http_json share. It uses only the
// etl SDK and pgx, exactly as a team's own kind would.
//
// The job's query names its parameters :name; the item's params supply them, and
// :cursor_start and :cursor_end the item's window (-infinity and infinity when open):
//
//	SELECT id, region, amount, modified_at FROM orders
//	WHERE region = :region AND modified_at > :cursor_start
//
// The handler reads the query's rows page by page in one REPEATABLE READ snapshot,
// ordered by (modified_column, key columns) and paged by keyset on them, so rows
// sharing a modification time are never skipped at a page boundary. Each page is
// upserted into the target table. For the modified_date strategy the greatest
// modified_column value read is the item's watermark.
package sqlincremental

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/etlexec/etlexec/etl"
)

// Kind is the kind name the handler is registered under (dw_etl_jobs.kind).
const Kind = "sql_incremental"

// Config defaults and limits.
const (
	PageSizeDefault = 1000
	// MaxPageSize bounds the rows held in memory for one page.
	MaxPageSize = 1_000_000

	// closeTimeout bounds closing the source connection.
	closeTimeout = 5 * time.Second
)

// Bind names the window supplies; params may not use them.
const (
	BindCursorStart = "cursor_start"
	BindCursorEnd   = "cursor_end"
)

// Register adds the sql_incremental kind to r.
func Register(r *etl.Registry) { r.Register(Kind, Handler) }

// Config is the job's configuration (dw_etl_jobs.config).
type Config struct {
	// SourceURLEnv names the environment variable holding the source database's
	// connection string; the string itself never appears in config, logs or errors.
	SourceURLEnv string `json:"source_url_env"`
	// Query is one SELECT statement with :name bind parameters; see the package
	// documentation.
	Query string `json:"query"`
	// ModifiedColumn is the query's column holding each row's modification time.
	// Required for the modified_date strategy; when set, pages are ordered by it first.
	ModifiedColumn string `json:"modified_column"`
	// TargetTable is "table" or "schema.table" in the target database. It must exist.
	TargetTable string `json:"target_table"`
	// KeyColumns are the target's unique key columns; rows are upserted on them and
	// the source columns feeding them complete the paging keyset.
	KeyColumns []string `json:"key_columns"`
	// Columns maps target column → source column. Empty: every column of the query
	// into the target column of the same name.
	Columns map[string]string `json:"columns"`
	// PageSize is the rows read and written per page. Defaults to PageSizeDefault.
	PageSize int `json:"page_size"`
	// Lookback is a Go duration subtracted from :cursor_start to re-read rows that
	// committed late with an older modification time; upserts make the re-read
	// harmless. Empty means none.
	Lookback string `json:"lookback"`

	lookback time.Duration
}

// validate checks the config for strategy s and fills the derived fields. Its errors
// are marked.
func (c *Config) validate(s etl.Strategy) error {
	bad := func(format string, args ...any) error {
		return etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental config: "+format, args...)))
	}
	if c.SourceURLEnv == "" {
		return bad("source_url_env: required")
	}
	if strings.TrimSpace(c.Query) == "" {
		return bad("query: required")
	}
	if c.PageSize == 0 {
		c.PageSize = PageSizeDefault
	}
	if c.PageSize < 1 || c.PageSize > MaxPageSize {
		return bad("page_size %d: want 1..%d", c.PageSize, MaxPageSize)
	}
	if c.Lookback != "" {
		d, err := time.ParseDuration(c.Lookback)
		if err != nil || d < 0 {
			return bad("lookback %q: want a non-negative Go duration such as \"15m\"", c.Lookback)
		}
		c.lookback = d
	}
	if c.ModifiedColumn != "" {
		if err := checkIdent(c.ModifiedColumn); err != nil {
			return bad("modified_column %q: %v", c.ModifiedColumn, err)
		}
	} else if s == etl.StrategyModifiedDate {
		return bad("modified_column: required for strategy %s", s)
	}
	if err := c.target().Validate(); err != nil {
		return fmt.Errorf("sql_incremental config: %w", err)
	}
	for _, k := range c.KeyColumns {
		if f := c.target().SourceField(k); checkIdent(f) != nil {
			return bad("columns: source column %q of key column %q is not a valid name", f, k)
		}
	}
	return nil
}

func (c *Config) target() Target {
	return Target{Table: c.TargetTable, KeyColumns: c.KeyColumns, Columns: c.Columns}
}

// keyset is the paging order: the modified column, then the source key columns.
func (c *Config) keyset() []string {
	var ks []string
	if c.ModifiedColumn != "" {
		ks = append(ks, c.ModifiedColumn)
	}
	for _, k := range c.KeyColumns {
		ks = append(ks, c.target().SourceField(k))
	}
	return ks
}

// Handler runs one attempt of one sql_incremental item; see the package
// documentation.
func Handler(ctx context.Context, it *etl.Item) error {
	var cfg Config
	if err := it.Config(&cfg); err != nil {
		return etl.Permanent(err)
	}
	if err := cfg.validate(it.Strategy()); err != nil {
		return err
	}
	var params map[string]any
	if err := it.Params(&params); err != nil {
		return etl.Permanent(err)
	}
	nq, err := parseNamed(cfg.Query)
	if err != nil {
		return etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental config: %w", err)))
	}
	args, err := bindArgs(nq.Names, params, it.Window(), cfg.lookback)
	if err != nil {
		return err
	}
	if it.Target() == nil {
		return etl.Permanent(etl.DataError(errors.New("sql_incremental: the job has no target database")))
	}
	if len(cfg.Columns) > 0 {
		// An empty page checks the target table and its columns before the source is
		// touched; with the identity mapping the columns are known only from a page.
		if _, err := LoadPage(ctx, it.Target(), cfg.target(), Page{Fields: slices.Collect(maps.Values(cfg.Columns))}); err != nil {
			return fmt.Errorf("sql_incremental: %w", err)
		}
	}
	dsn, ok := os.LookupEnv(cfg.SourceURLEnv)
	if !ok || dsn == "" {
		return etl.Permanent(etl.SystemError(fmt.Errorf("sql_incremental: environment variable %s (source_url_env) is not set", cfg.SourceURLEnv)))
	}
	connCfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// The parse error quotes the connection string, password redaction is best
		// effort, so only the variable's name is reported.
		return etl.Permanent(etl.SystemError(fmt.Errorf("sql_incremental: environment variable %s (source_url_env) holds an invalid connection string", cfg.SourceURLEnv)))
	}
	if connCfg.RuntimeParams["application_name"] == "" {
		connCfg.RuntimeParams["application_name"] = "etlexec " + Kind
	}

	conn, err := pgx.ConnectConfig(ctx, connCfg)
	if err != nil {
		return sourceError(ctx, "connect to source", err)
	}
	defer func() {
		// Closing the session ends the read-only transaction too; bound the goodbye
		// so a dead network cannot hold the item.
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	src, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return sourceError(ctx, "begin source transaction", err)
	}

	r := reader{it: it, cfg: &cfg, src: src, nq: nq, args: args}
	if err := r.run(ctx); err != nil {
		return err
	}
	m := it.Metrics()
	it.Log().Debug().Int64("records_read", m.RecordsRead).Int64("records_written", m.RecordsWritten).
		Int64("pages", m.Pages).Msg("sql_incremental item loaded")
	return nil
}

// bindArgs returns the values of the query's named parameters in order.
func bindArgs(names []string, params map[string]any, w etl.Window, lookback time.Duration) ([]any, error) {
	for _, reserved := range []string{BindCursorStart, BindCursorEnd} {
		if _, ok := params[reserved]; ok {
			return nil, etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental params: %q is reserved for the window", reserved)))
		}
	}
	start := pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}
	if w.Start != nil {
		start = pgtype.Timestamptz{Time: w.Start.Add(-lookback), Valid: true}
	}
	end := pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}
	if w.End != nil {
		end = pgtype.Timestamptz{Time: *w.End, Valid: true}
	}
	args := make([]any, len(names))
	for i, name := range names {
		switch name {
		case BindCursorStart:
			args[i] = start
		case BindCursorEnd:
			args[i] = end
		default:
			v, ok := params[name]
			if !ok {
				return nil, etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental query: unknown bind parameter :%s (not a param of the item, nor cursor_start or cursor_end)", name)))
			}
			args[i] = v
		}
	}
	return args, nil
}

// reader pages through the source query and loads each page.
type reader struct {
	it   *etl.Item
	cfg  *Config
	src  pgx.Tx
	nq   namedQuery
	args []any
}

// pageSQL wraps the user's query: ordered by the keyset, after the last row of the
// previous page unless first, limited to the page size. The user's parameters are
// $1..$n, the keyset values (after the first page) and the limit follow.
func (r *reader) pageSQL(first bool) string {
	ks := r.cfg.keyset()
	cols := make([]string, len(ks))
	params := make([]string, len(ks))
	for i, k := range ks {
		cols[i] = "etl_q." + pgx.Identifier{k}.Sanitize()
		params[i] = "$" + strconv.Itoa(len(r.args)+1+i)
	}
	var b strings.Builder
	b.WriteString("SELECT * FROM (\n")
	b.WriteString(r.nq.SQL)
	b.WriteString("\n) etl_q")
	limit := len(r.args) + 1
	if !first {
		b.WriteString(" WHERE (" + strings.Join(cols, ", ") + ") > (" + strings.Join(params, ", ") + ")")
		limit += len(ks)
	}
	b.WriteString(" ORDER BY " + strings.Join(cols, ", "))
	b.WriteString(" LIMIT $" + strconv.Itoa(limit))
	return b.String()
}

func (r *reader) run(ctx context.Context) error {
	ks := r.cfg.keyset()
	firstSQL, nextSQL := r.pageSQL(true), r.pageSQL(false)
	var last []any // keyset values of the previous page's last row
	for page := 1; ; page++ {
		sql, args := firstSQL, append(append([]any{}, r.args...), r.cfg.PageSize)
		if last != nil {
			sql = nextSQL
			args = append(append(append([]any{}, r.args...), last...), r.cfg.PageSize)
		}
		p, err := r.read(ctx, sql, args)
		if err != nil {
			return sourceError(ctx, fmt.Sprintf("read page %d from source", page), err)
		}
		if p.Len() == 0 {
			return nil
		}
		r.it.AddRead(int64(p.Len()))
		r.it.AddPages(1)

		idx, err := fieldIndexes(p.Fields, ks)
		if err != nil {
			return err
		}
		for n, row := range p.Rows {
			for i, j := range idx {
				if row[j] == nil {
					return etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental: page %d row %d: %s is NULL; modified_column and the key columns must be NOT NULL for paging", page, n+1, ks[i])))
				}
			}
		}
		if r.it.Strategy() == etl.StrategyModifiedDate {
			if err := r.observe(p, idx[0], page); err != nil {
				return err
			}
		}

		written, err := LoadPage(ctx, r.it.Target(), r.cfg.target(), p)
		if err != nil {
			return fmt.Errorf("sql_incremental: page %d: %w", page, err)
		}
		r.it.AddWritten(written)
		if p.Len() < r.cfg.PageSize {
			return nil
		}
		lastRow := p.Rows[len(p.Rows)-1]
		last = make([]any, len(idx))
		for i, j := range idx {
			last[i] = lastRow[j]
		}
	}
}

// read runs one page query and returns its rows.
func (r *reader) read(ctx context.Context, sql string, args []any) (Page, error) {
	rows, err := r.src.Query(ctx, sql, args...)
	if err != nil {
		return Page{}, err
	}
	defer rows.Close()
	var p Page
	for _, fd := range rows.FieldDescriptions() {
		p.Fields = append(p.Fields, fd.Name)
	}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return Page{}, err
		}
		p.Rows = append(p.Rows, vals)
	}
	return p, rows.Err()
}

// observe reports the page's greatest modification time. Rows ascend by it, so that
// is the last row's, but every value is checked to be a time.
func (r *reader) observe(p Page, col, page int) error {
	for n, row := range p.Rows {
		t, ok := row[col].(time.Time)
		if !ok {
			return etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental: page %d row %d: modified_column %s holds %T, want a timestamp", page, n+1, r.cfg.ModifiedColumn, row[col])))
		}
		r.it.ObserveWatermark(t.UTC())
	}
	return nil
}

// fieldIndexes finds each name among the fields.
func fieldIndexes(fields, names []string) ([]int, error) {
	idx := make([]int, len(names))
	for i, name := range names {
		idx[i] = -1
		for j, f := range fields {
			if f == name {
				if idx[i] >= 0 {
					return nil, etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental: the query returns column %q twice", name)))
				}
				idx[i] = j
			}
		}
		if idx[i] < 0 {
			return nil, etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental: the query returns no column %q", name)))
		}
	}
	return idx, nil
}

// sourceError describes a failed source operation: the context's error when ctx is
// done, a permanent DATA error when Postgres rejected the query or its values (an
// error in the job's query, not the database's state), a DB error otherwise.
func sourceError(ctx context.Context, doing string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("sql_incremental: %s: %w (%v)", doing, ctxErr, err)
	}
	err = fmt.Errorf("sql_incremental: %s: %w", doing, err)
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pgErr.Code[:2] {
		case "22", "42":
			return etl.Permanent(etl.DataError(err))
		}
	}
	return etl.DBError(err)
}
