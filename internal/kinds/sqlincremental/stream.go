package sqlincremental

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/kinds/incremental"
	"github.com/etlexec/etlexec/internal/kinds/pgtarget"
)

// source reads the job's query from one source database in one consistent snapshot.
type source interface {
	// bound returns the latest time upper may take under horizon: below it every row of the
	// source has committed.
	bound(ctx context.Context, horizon string) (bound, error)
	// begin opens the snapshot every later read shares.
	begin(ctx context.Context) error
	// describe returns the result columns of sql.
	describe(ctx context.Context, sql string, args []any) ([]srcColumn, error)
	// pass runs q once in the snapshot, writing each row's first q.copied columns to out and
	// handing the row to chk.
	pass(ctx context.Context, q passQuery, out *pgtarget.CopyWriter, chk *rowCheck) error
	// ident quotes an identifier; placeholder is the i-th (1-based) bind parameter.
	ident(name string) string
	placeholder(i int) string
	close(ctx context.Context)
}

// srcColumn is one result column of the source query.
type srcColumn struct {
	name   string
	oid    uint32 // Postgres type; 0 for other dialects
	typmod int32
	// isTime: the column holds timestamps or dates (known for every dialect).
	isTime bool
}

// passQuery is the statement one pass runs and how to read its rows.
type passQuery struct {
	sql  string
	args []any
	// copied is the number of leading columns that go to the target ([pgtarget.Stream.Fields]).
	copied int
	// mod is the index of the modified column (which may follow the copied ones), -1 if none;
	// modOID is its Postgres type.
	mod    int
	modOID uint32
	// keys are the indexes of the key columns among the copied ones.
	keys []int
	// binary: Postgres binary values pass through; else text.
	binary bool
	cols   []srcColumn
}

// openBound stands for an absent window bound in bind parameters: -1 below, +1 above.
type openBound int

// loader runs one item's load.
type loader struct {
	it     *etl.Item
	cfg    *Config
	src    source
	w      *incremental.Window
	params map[string]any
}

func (l *loader) run(ctx context.Context) error {
	args := l.bindArgs()
	srcCols, err := l.src.describe(ctx, "SELECT * FROM ("+l.cfg.nq.SQL+") etl_q", args)
	if err != nil {
		return err
	}
	names := make([]string, len(srcCols))
	for i, c := range srcCols {
		names[i] = c.name
	}
	st, err := pgtarget.NewStream(ctx, l.it.Target(), l.cfg.target(), names)
	if err != nil {
		return fmt.Errorf("sql_incremental: %w", err)
	}
	q, err := l.query(st.Fields(), srcCols, args)
	if err != nil {
		return err
	}
	opts := pgtarget.CopyOptions{
		Binary: q.binary,
		// A first load (or a full load into an empty table) may COPY straight into the table.
		FirstLoad: l.w.Incremental() && l.w.Cursor == nil,
		Whole:     l.w.Strategy == etl.StrategyNone,
	}
	if q.binary {
		for _, c := range q.cols[:q.copied] {
			opts.SourceTypes = append(opts.SourceTypes, pgtarget.SourceType{OID: c.oid, Typmod: c.typmod})
		}
	}
	var chk *rowCheck
	written, how, err := st.Copy(ctx, opts, func(out *pgtarget.CopyWriter) error {
		chk = l.newCheck()
		return l.src.pass(ctx, q, out, chk)
	})
	if err != nil {
		return err
	}
	l.it.AddRead(chk.rows)
	l.it.AddWritten(written)
	l.it.AddPages((chk.rows + int64(l.cfg.PageSize) - 1) / int64(l.cfg.PageSize))
	chk.tally.Finish(l.it, written, how)
	l.it.Log().Debug().Int64("records_read", chk.rows).Int64("records_written", written).Str("load", how).
		Msg("sql_incremental item loaded")
	return nil
}

// bindArgs returns the values of the query's named parameters in binding order.
func (l *loader) bindArgs() []any {
	args := make([]any, len(l.cfg.nq.Names))
	for i, name := range l.cfg.nq.Names {
		switch name {
		case BindCursorStart:
			args[i] = openBound(-1)
			if l.w.Start != nil {
				args[i] = *l.w.Start
			}
		case BindCursorEnd:
			args[i] = openBound(1)
			if l.w.Upper != nil {
				args[i] = *l.w.Upper
			}
		default:
			args[i] = l.params[name]
		}
	}
	return args
}

// query builds the pass: the target's fields (then the modified column, when it is not one of
// them) from the job's query, within the window.
func (l *loader) query(fields []string, srcCols []srcColumn, args []any) (passQuery, error) {
	q := passQuery{mod: -1, copied: len(fields), binary: true}
	sel := fields
	mod := l.cfg.ModifiedColumn
	if mod != "" {
		if q.mod = slices.Index(sel, mod); q.mod < 0 {
			sel = append(sel, mod)
			q.mod = len(sel) - 1
		}
	}
	byName := make(map[string]srcColumn, len(srcCols))
	for _, c := range srcCols {
		if _, dup := byName[c.name]; dup && slices.Contains(sel, c.name) {
			return q, etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental: the query returns column %q twice", c.name)))
		}
		byName[c.name] = c
	}
	quoted := make([]string, len(sel))
	for i, f := range sel {
		c, ok := byName[f]
		if !ok {
			return q, etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental: the query returns no column %q", f)))
		}
		q.cols = append(q.cols, c)
		// Binary values pass through only for built-in types, whose OIDs every server shares.
		if c.oid == 0 || c.oid >= firstNormalObjectID {
			q.binary = false
		}
		quoted[i] = "etl_q." + l.src.ident(f)
	}
	for _, k := range l.cfg.KeyColumns {
		q.keys = append(q.keys, slices.Index(sel, l.cfg.target().SourceField(k)))
	}
	if q.mod >= 0 {
		q.modOID = q.cols[q.mod].oid
		if !q.cols[q.mod].isTime {
			return q, etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental: modified_column %s is not a timestamp or date column (timestamptz, timestamp, date; DATETIME, TIMESTAMP, DATE)", mod)))
		}
	}
	var b strings.Builder
	b.WriteString("SELECT " + strings.Join(quoted, ", ") + " FROM (\n" + l.cfg.nq.SQL + "\n) etl_q")
	q.args = args
	if q.mod >= 0 && l.w.Incremental() {
		m := "etl_q." + l.src.ident(mod)
		var conds []string
		lower, upper := " >= ", " < "
		if l.w.Strategy == etl.StrategyLastRun {
			lower, upper = " > ", " <= "
		}
		if l.w.Start != nil {
			q.args = append(q.args, *l.w.Start)
			conds = append(conds, m+lower+l.src.placeholder(len(q.args)))
		}
		if l.w.Upper != nil {
			q.args = append(q.args, *l.w.Upper)
			conds = append(conds, m+upper+l.src.placeholder(len(q.args)))
		}
		if len(conds) > 0 {
			// NULL times come through so the row check refuses them rather than the window
			// hiding them for ever.
			b.WriteString(" WHERE (" + strings.Join(conds, " AND ") + ") OR " + m + " IS NULL")
		}
	}
	q.sql = b.String()
	return q, nil
}

// Postgres type OIDs the kind reads itself.
const (
	timestamptzOID = 1184
	timestampOID   = 1114
	dateOID        = 1082
	// firstNormalObjectID is where user-defined OIDs start: below it, types are built in and
	// share OIDs (and binary formats) across servers.
	firstNormalObjectID = 16384
)

// rowCheck sees every row of a pass: it counts, tracks the watermark and the composite
// cursor's key, and refuses NULL keys and modification times.
type rowCheck struct {
	it       *etl.Item
	w        *incremental.Window
	tally    *incremental.Tally
	keyNames []string
	keySrc   []string
	modName  string
	pageSize int64
	rows     int64
}

func (l *loader) newCheck() *rowCheck {
	src := make([]string, len(l.cfg.KeyColumns))
	for i, k := range l.cfg.KeyColumns {
		src[i] = l.cfg.target().SourceField(k)
	}
	return &rowCheck{it: l.it, w: l.w, tally: incremental.NewTally(l.w), keyNames: l.cfg.KeyColumns, keySrc: src,
		modName: l.cfg.ModifiedColumn, pageSize: int64(l.cfg.PageSize)}
}

// row counts one row and ranks its modification time against the greatest so far (see
// incremental.Tally.Add), so the source knows when the row's key matters for the composite
// cursor. ok is false when the job has no modified column.
func (c *rowCheck) row(ctx context.Context, mod time.Time, ok bool) (incremental.Rank, error) {
	c.rows++
	if c.rows == 1 {
		testHook(ctx, HookSnapshot)
	}
	if c.rows%c.pageSize == 0 {
		c.it.SetProgress("streamed " + strconv.FormatInt(c.rows, 10) + " rows")
	}
	if !ok {
		c.tally.AddUntimed()
		return incremental.Below, nil
	}
	if !c.w.Contains(mod) {
		// The kind's own WHERE keeps rows outside the window away; this is a bug guard.
		return 0, etl.SystemError(fmt.Errorf("sql_incremental: row %d: %s %s is outside the window", c.rows, c.modName, mod.Format(time.RFC3339Nano)))
	}
	return c.tally.Add(mod), nil
}

// keyMap names key values by their target key columns.
func (c *rowCheck) keyMap(vals []any) map[string]any {
	m := make(map[string]any, len(vals))
	for i, v := range vals {
		m[c.keyNames[i]] = v
	}
	return m
}

// nullKey is the error for a row whose key column i is NULL.
func (c *rowCheck) nullKey(i int) error {
	return etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental: row %d: key column %s is NULL; key columns must be NOT NULL", c.rows+1, c.keySrc[i])))
}

// nullMod is the error for a row without a modification time.
func (c *rowCheck) nullMod() error {
	return etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental: row %d: %s is NULL; modified_column must be NOT NULL", c.rows+1, c.modName)))
}

// sourceError describes a failed source operation: the context's error when ctx is done, a
// permanent DATA error when the source rejected the query or its values (an error in the job's
// query, not the database's state), a permanent SYSTEM error when it refused the credentials or
// database, a DB error otherwise.
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
	if me, ok := errors.AsType[*mysql.MySQLError](err); ok {
		switch me.Number {
		case 1052, 1054, 1064, 1146, 1149, 1241, 1305, 1630: // ambiguous or unknown column, syntax, no such table, …
			return etl.Permanent(etl.DataError(err))
		case 1044, 1045, 1049: // access denied, unknown database: a configuration fault
			return etl.Permanent(etl.SystemError(err))
		}
	}
	return etl.DBError(err)
}
