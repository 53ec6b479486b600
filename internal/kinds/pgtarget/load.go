// Package pgtarget loads rows into a Postgres target table inside the item's transaction: a
// temporary staging table, COPY, and a merge on the target's key columns (INSERT … ON CONFLICT
// DO UPDATE where the row differs). It is the one loader the built-in kinds share: http_json
// loads pages of records with [PageLoader], sql_incremental streams a query's rows with
// [Stream]. It owns the target's names ([Target], [ParseTable], [CheckIdent]), the COPY data
// ([CopyWriter]) and the classification of the target's errors; like the kinds, it uses only
// the etl SDK and pgx.
package pgtarget

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/etlexec/etlexec/etl"
)

// maxIdentLen is Postgres's NAMEDATALEN-1: a longer name would be silently truncated.
const maxIdentLen = 63

// Target says where [LoadPage] writes: a table, the columns of its unique key and which
// source field feeds each of its columns. The field names in error messages
// (target_table, key_columns, columns) are those of the kinds' job configs.
type Target struct {
	// Table is "table" or "schema.table". Each part is quoted as an identifier, so it
	// is matched exactly (case included) and never parsed as SQL.
	Table string
	// KeyColumns are target columns covered by a primary key or unique index; rows
	// are upserted ON CONFLICT on them. At least one is required.
	KeyColumns []string
	// Columns maps a target column to the source field it is loaded from. Empty
	// means every field of the page into the target column of the same name.
	Columns map[string]string
}

// Page is one batch of source rows: either Fields and Rows (Rows[i][j] is the value of
// field Fields[j]) or Records (one map per row; a missing field is NULL).
type Page struct {
	Fields  []string
	Rows    [][]any
	Records []map[string]any
}

// Len is the number of rows on the page.
func (p Page) Len() int { return len(p.Rows) + len(p.Records) }

// ParseTable splits "table" or "schema.table" into an identifier to quote. Errors
// name the target_table field and are not yet marked.
func ParseTable(s string) (pgx.Identifier, error) {
	parts := strings.Split(s, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf("target_table %q: want table or schema.table", s)
	}
	for _, part := range parts {
		if err := CheckIdent(part); err != nil {
			return nil, fmt.Errorf("target_table %q: %w", s, err)
		}
	}
	return pgx.Identifier(parts), nil
}

// CheckIdent says why s cannot be a Postgres identifier: it is empty, longer than Postgres
// keeps (63 bytes) or holds a NUL byte; nil when it can.
func CheckIdent(s string) error {
	switch {
	case s == "":
		return errors.New("empty name")
	case len(s) > maxIdentLen:
		return fmt.Errorf("name longer than %d bytes", maxIdentLen)
	case strings.ContainsRune(s, 0):
		return errors.New("name contains a NUL byte")
	}
	return nil
}

// Validate checks the target's names without touching a database. Its error is
// marked as a permanent DATA error naming the config field at fault.
func (t Target) Validate() error {
	_, err := t.check()
	return err
}

// check validates the names and returns the table identifier.
func (t Target) check() (pgx.Identifier, error) {
	bad := func(err error) error { return etl.Permanent(etl.DataError(err)) }
	table, err := ParseTable(t.Table)
	if err != nil {
		return nil, bad(err)
	}
	if len(t.KeyColumns) == 0 {
		return nil, bad(errors.New("key_columns: want at least one target column"))
	}
	seen := make(map[string]bool, len(t.KeyColumns))
	for _, k := range t.KeyColumns {
		if err := CheckIdent(k); err != nil {
			return nil, bad(fmt.Errorf("key_columns: %q: %w", k, err))
		}
		if seen[k] {
			return nil, bad(fmt.Errorf("key_columns: %q listed twice", k))
		}
		seen[k] = true
		if len(t.Columns) > 0 {
			if _, ok := t.Columns[k]; !ok {
				return nil, bad(fmt.Errorf("key_columns: %q is not a target column in columns", k))
			}
		}
	}
	for col, field := range t.Columns {
		if err := CheckIdent(col); err != nil {
			return nil, bad(fmt.Errorf("columns: target column %q: %w", col, err))
		}
		if field == "" {
			return nil, bad(fmt.Errorf("columns: target column %q: empty source field", col))
		}
	}
	return table, nil
}

// SourceField is the source field that feeds target column col.
func (t Target) SourceField(col string) string {
	if f, ok := t.Columns[col]; ok {
		return f
	}
	return col
}

// plan is one page's load: target columns in order and where each value comes from.
type plan struct {
	table  pgx.Identifier
	cols   []string // target columns, sorted
	fields []string // fields[i] feeds cols[i]
	keys   []string // the target's key columns
}

func (t Target) plan(table pgx.Identifier, p Page) (plan, error) {
	pl := plan{table: table, keys: t.KeyColumns}
	if len(t.Columns) == 0 {
		if len(p.Records) > 0 {
			return pl, etl.Permanent(etl.DataError(errors.New("columns: required when rows are records")))
		}
		for _, f := range p.Fields {
			if err := CheckIdent(f); err != nil {
				return pl, etl.Permanent(etl.DataError(fmt.Errorf("columns: source field %q as a target column: %w", f, err)))
			}
		}
		pl.cols = slices.Sorted(slices.Values(p.Fields))
		for i := 1; i < len(pl.cols); i++ {
			if pl.cols[i] == pl.cols[i-1] {
				return pl, etl.Permanent(etl.DataError(fmt.Errorf("columns: source field %q appears twice; map the columns explicitly", pl.cols[i])))
			}
		}
		for _, k := range t.KeyColumns {
			if !slices.Contains(pl.cols, k) {
				return pl, etl.Permanent(etl.DataError(fmt.Errorf("key_columns: %q is not a source field", k)))
			}
		}
		pl.fields = pl.cols
		return pl, nil
	}
	pl.cols = slices.Sorted(maps.Keys(t.Columns))
	pl.fields = make([]string, len(pl.cols))
	for i, c := range pl.cols {
		pl.fields[i] = t.Columns[c]
	}
	return pl, nil
}

// LoadPage upserts one page of rows into the target inside tx and returns the number
// of target rows inserted or changed; see [PageLoader.Load], which loads many pages into one
// target more cheaply.
func LoadPage(ctx context.Context, tx pgx.Tx, t Target, p Page) (int64, error) {
	l, err := NewPageLoader(ctx, tx, t)
	if err != nil {
		return 0, err
	}
	return l.Load(ctx, p)
}

// PageLoader upserts pages of rows into one target inside one transaction. It looks the target
// up once, so an item paging through an API pays for that once.
type PageLoader struct {
	tx    pgx.Tx
	t     Target
	table pgx.Identifier
	info  targetInfo
	// plans by the page's fields (they matter only with the identity mapping).
	plans map[string]*pagePlan
}

type pagePlan struct {
	pl     plan
	st     stagingTable
	staged bool
}

// NewPageLoader checks the target's names and looks the table up.
func NewPageLoader(ctx context.Context, tx pgx.Tx, t Target) (*PageLoader, error) {
	table, err := t.check()
	if err != nil {
		return nil, err
	}
	info, err := describeTarget(ctx, tx, table, t.KeyColumns)
	if err != nil {
		return nil, err
	}
	return &PageLoader{tx: tx, t: t, table: table, info: info, plans: map[string]*pagePlan{}}, nil
}

// Load upserts one page and returns the number of target rows inserted or changed.
// Identifiers are quoted, values travel only through COPY (as text, which the target parses
// for each column's type). The rows are copied into a temporary staging table (dropped at
// commit) holding just the loaded columns, then inserted ON CONFLICT (key columns) DO UPDATE
// the other columns where they differ; when several rows of a page share a key, the last one
// wins. Target columns not loaded keep their defaults on insert and their values on update.
//
// Errors are marked: names, a missing table or column and values that do not fit their
// column are permanent DATA errors; other database failures are DB errors; when ctx is done
// the context's error is what the caller sees.
func (l *PageLoader) Load(ctx context.Context, p Page) (int64, error) {
	key := ""
	if len(l.t.Columns) == 0 {
		key = strings.Join(p.Fields, "\x00")
	}
	pp, ok := l.plans[key]
	if !ok {
		pl, err := l.t.plan(l.table, p)
		if err != nil {
			return 0, err
		}
		if err := pl.checkColumns(l.info.cols); err != nil {
			return 0, err
		}
		pp = &pagePlan{pl: pl}
		l.plans[key] = pp
	}
	if p.Len() == 0 {
		return 0, nil
	}
	data, err := pp.pl.text(p, l.info.cols)
	if err != nil {
		return 0, err
	}
	if !pp.staged {
		if pp.st, err = pp.pl.stage(ctx, l.tx, l.info.cols, nil); err != nil {
			return 0, err
		}
		pp.staged = true
	} else if _, err := l.tx.Exec(ctx, `TRUNCATE `+pp.st.name.Sanitize()); err != nil {
		return 0, targetError(ctx, "truncate staging table for "+l.table.Sanitize(), err)
	}
	conn, err := pgConnOf(l.tx)
	if err != nil {
		return 0, err
	}
	if _, err := conn.CopyFrom(ctx, bytes.NewReader(data),
		`COPY `+pp.st.name.Sanitize()+` (`+strings.Join(pp.pl.quotedCols(), ", ")+`) FROM STDIN`); err != nil {
		return 0, targetError(ctx, fmt.Sprintf("copy %d rows for %s", p.Len(), l.table.Sanitize()), err)
	}
	return pp.pl.merge(ctx, l.tx, pp.st, l.info.cols, true)
}

// checkColumns refuses a plan naming a column the target lacks.
func (pl plan) checkColumns(cols map[string]column) error {
	for _, c := range pl.cols {
		if _, ok := cols[c]; !ok {
			return etl.Permanent(etl.DataError(fmt.Errorf("target table %s has no column %q", pl.table.Sanitize(), c)))
		}
	}
	return nil
}

// stagingTable is a temporary table (private to the session, dropped at commit) holding one
// load's rows before the upsert.
type stagingTable struct {
	name pgx.Identifier
	// types[i] is the SQL type of plan column i in the staging table, "" when it is the
	// target's own (no cast on the way in).
	types []string
}

// stage creates (or empties) the staging table for the plan's columns. With types nil the
// columns take the target's types; otherwise types[i] (the source's) and the upsert casts.
func (pl plan) stage(ctx context.Context, tx pgx.Tx, cols map[string]column, types []string) (stagingTable, error) {
	h := sha256.New()
	h.Write([]byte(pl.table.Sanitize()))
	for i, c := range pl.cols {
		h.Write([]byte{0})
		h.Write([]byte(c))
		if types != nil {
			h.Write([]byte{1})
			h.Write([]byte(types[i]))
		}
	}
	st := stagingTable{name: pgx.Identifier{"pg_temp", "etl_stage_" + hex.EncodeToString(h.Sum(nil)[:8])}}
	quoted := pl.quotedCols()
	var ddl string
	if types == nil {
		st.types = make([]string, len(pl.cols))
		ddl = `CREATE TEMP TABLE IF NOT EXISTS ` + st.name.Sanitize() + ` ON COMMIT DROP AS SELECT ` +
			strings.Join(quoted, ", ") + ` FROM ` + pl.table.Sanitize() + ` WITH NO DATA`
	} else {
		st.types = make([]string, len(pl.cols))
		defs := make([]string, len(pl.cols))
		for i, c := range pl.cols {
			defs[i] = quoted[i] + " " + types[i]
			if types[i] != cols[c].sqlType {
				st.types[i] = types[i]
			}
		}
		ddl = `CREATE TEMP TABLE IF NOT EXISTS ` + st.name.Sanitize() + ` (` + strings.Join(defs, ", ") + `) ON COMMIT DROP`
	}
	name := pl.table.Sanitize()
	if _, err := tx.Exec(ctx, ddl); err != nil {
		return st, targetError(ctx, "create staging table for "+name, err)
	}
	if _, err := tx.Exec(ctx, `TRUNCATE `+st.name.Sanitize()); err != nil {
		return st, targetError(ctx, "truncate staging table for "+name, err)
	}
	return st, nil
}

func (pl plan) quotedCols() []string {
	quoted := make([]string, len(pl.cols))
	for i, c := range pl.cols {
		quoted[i] = pgx.Identifier{c}.Sanitize()
	}
	return quoted
}

// merge upserts the staging table into the target and returns the rows inserted or changed.
// Rows equal to the target's are left alone (no new row version, no WAL), so re-reading a
// boundary costs reads only. With distinct, rows sharing a key keep the last one staged (the
// staging table is filled by appending, so ctid follows the order of the rows); without it,
// such rows make Postgres refuse the statement (cardinality_violation).
func (pl plan) merge(ctx context.Context, tx pgx.Tx, st stagingTable, cols map[string]column, distinct bool) (int64, error) {
	quoted := pl.quotedCols()
	keys := make([]string, len(pl.keys))
	for i, k := range pl.keys {
		keys[i] = pgx.Identifier{k}.Sanitize()
	}
	keyList := strings.Join(keys, ", ")
	exprs := make([]string, len(pl.cols))
	var set, mine, theirs []string
	for i, c := range pl.cols {
		exprs[i] = "s." + quoted[i]
		if st.types[i] != "" {
			exprs[i] = "CAST(s." + quoted[i] + " AS " + cols[c].sqlType + ")"
		}
		if !slices.Contains(pl.keys, c) {
			set = append(set, quoted[i]+" = excluded."+quoted[i])
			asText := ""
			if !cols[c].equality {
				asText = "::text"
			}
			mine = append(mine, "etl_t."+quoted[i]+asText)
			theirs = append(theirs, "excluded."+quoted[i]+asText)
		}
	}
	action := "DO NOTHING"
	if len(set) > 0 {
		action = "DO UPDATE SET " + strings.Join(set, ", ") + " WHERE ROW(" + strings.Join(mine, ", ") +
			") IS DISTINCT FROM ROW(" + strings.Join(theirs, ", ") + ")"
	}
	sel := "SELECT " + strings.Join(exprs, ", ") + " FROM " + st.name.Sanitize() + " s"
	if distinct {
		sk := make([]string, len(keys))
		for i, k := range keys {
			sk[i] = "s." + k
		}
		sel = "SELECT DISTINCT ON (" + strings.Join(sk, ", ") + ") " + strings.Join(exprs, ", ") + " FROM " +
			st.name.Sanitize() + " s ORDER BY " + strings.Join(sk, ", ") + ", s.ctid DESC"
	}
	tag, err := tx.Exec(ctx, `INSERT INTO `+pl.table.Sanitize()+` AS etl_t (`+strings.Join(quoted, ", ")+`) `+sel+
		` ON CONFLICT (`+keyList+`) `+action)
	if err != nil {
		return 0, targetError(ctx, "upsert into "+pl.table.Sanitize(), err)
	}
	return tag.RowsAffected(), nil
}

// column is a target column's type: the base type's OID (for a domain) and the column's SQL
// type as Postgres prints it (typmod included).
type column struct {
	oid     uint32
	sqlType string
	// array: the column is an array (its values render as array literals).
	array bool
	// equality: the type has a default btree equality, so the upsert compares values as they
	// are; others (json, xml, geometric types, composites) compare by their text.
	equality bool
}

// targetInfo is what a load needs to know of its target table.
type targetInfo struct {
	cols map[string]column
	// uniqueKeys: an immediate, non-partial unique index covers exactly the key columns, so a
	// COPY straight into the table fails on an existing key instead of doubling a row.
	uniqueKeys bool
}

// describeTarget looks up the target table's columns and whether its key columns carry a
// unique index, in one round trip; a missing table (or no target database) is a permanent
// DATA error.
func describeTarget(ctx context.Context, tx pgx.Tx, table pgx.Identifier, keys []string) (targetInfo, error) {
	name := table.Sanitize()
	if tx == nil {
		return targetInfo{}, etl.Permanent(etl.DataError(fmt.Errorf("load %s: the job has no target database", name)))
	}
	rows, err := tx.Query(ctx, `SELECT t.oid IS NOT NULL,
			EXISTS (SELECT FROM pg_index i
				WHERE i.indrelid = t.oid AND i.indisunique AND i.indimmediate AND i.indpred IS NULL
				  AND i.indexprs IS NULL AND i.indnkeyatts = cardinality($2::text[])
				  AND (SELECT array_agg(k.attname::text ORDER BY k.attname::text) FROM pg_attribute k
				       WHERE k.attrelid = i.indrelid AND k.attnum = ANY (i.indkey[0:i.indnkeyatts - 1])) = $2::text[]),
			a.attname::text, bt.oid, format_type(a.atttypid, a.atttypmod), bt.typcategory = 'A',
			bt.typtype IN ('e', 'r', 'm') OR EXISTS (SELECT FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
				WHERE am.amname = 'btree' AND oc.opcdefault
				  AND oc.opcintype = CASE WHEN bt.typcategory = 'A' THEN bt.typelem ELSE bt.oid END)
		FROM (SELECT to_regclass($1)::oid AS oid) t
		LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
		LEFT JOIN pg_type ty ON ty.oid = a.atttypid
		LEFT JOIN pg_type bt ON bt.oid = CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END`,
		name, slices.Sorted(slices.Values(keys)))
	if err != nil {
		return targetInfo{}, targetError(ctx, "look up target table "+name, err)
	}
	info := targetInfo{cols: make(map[string]column)}
	var (
		exists   bool
		col      *string
		oid      *uint32
		sqlType  *string
		array    *bool
		equality *bool
	)
	if _, err := pgx.ForEachRow(rows, []any{&exists, &info.uniqueKeys, &col, &oid, &sqlType, &array, &equality}, func() error {
		if col != nil {
			info.cols[*col] = column{oid: *oid, sqlType: *sqlType, array: *array, equality: *equality}
		}
		return nil
	}); err != nil {
		return targetInfo{}, targetError(ctx, "look up target table "+name, err)
	}
	if !exists {
		return targetInfo{}, etl.Permanent(etl.DataError(fmt.Errorf("target table %s does not exist", name)))
	}
	return info, nil
}

// text renders the page as COPY text data: the values of the plan's fields, converted for
// their column types.
func (pl plan) text(p Page, cols map[string]column) ([]byte, error) {
	var b []byte
	n := 0
	row := func(value func(i int) any) error {
		n++
		for i, c := range pl.cols {
			if i > 0 {
				b = append(b, '\t')
			}
			v, err := convert(value(i), cols[c].oid)
			if err == nil {
				b, err = appendTyped(b, v, cols[c])
			}
			if err != nil {
				return etl.Permanent(etl.DataError(fmt.Errorf("row %d, column %q: %w", n, c, err)))
			}
		}
		b = append(b, '\n')
		return nil
	}
	if len(p.Records) > 0 {
		for _, rec := range p.Records {
			if err := row(func(i int) any { return rec[pl.fields[i]] }); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
	idx := make([]int, len(pl.fields))
	for i, f := range pl.fields {
		idx[i] = slices.Index(p.Fields, f)
		if idx[i] < 0 {
			return nil, etl.Permanent(etl.DataError(fmt.Errorf("columns: source field %q (for target column %q) is not in the source rows", f, pl.cols[i])))
		}
	}
	for j, src := range p.Rows {
		if len(src) != len(p.Fields) {
			return nil, etl.Permanent(etl.DataError(fmt.Errorf("row %d has %d values for %d fields", j+1, len(src), len(p.Fields))))
		}
		if err := row(func(i int) any { return src[idx[i]] }); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// convert adapts a source value to the column type where pgx's binary COPY would
// not: any value into json/jsonb is encoded as JSON (a string becomes a JSON string),
// scalars and JSON values into text become their text, and RFC 3339 strings into
// timestamps are parsed. Everything else goes to pgx as is.
func convert(v any, typ uint32) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch typ {
	case pgtype.JSONOID, pgtype.JSONBOID:
		switch v := v.(type) {
		case json.RawMessage:
			return v, nil
		case []byte:
			return json.RawMessage(v), nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode as JSON: %w", err)
		}
		return json.RawMessage(b), nil
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID:
		switch v := v.(type) {
		case string:
			return v, nil
		case json.Number:
			return string(v), nil
		case bool:
			return strconv.FormatBool(v), nil
		case float64:
			return strconv.FormatFloat(v, 'g', -1, 64), nil
		case int64:
			return strconv.FormatInt(v, 10), nil
		case int32:
			return strconv.FormatInt(int64(v), 10), nil
		case int16:
			return strconv.FormatInt(int64(v), 10), nil
		case int:
			return strconv.Itoa(v), nil
		case time.Time:
			return v.Format(time.RFC3339Nano), nil
		case map[string]any, []any:
			b, err := json.Marshal(v)
			if err != nil {
				return nil, fmt.Errorf("encode as JSON: %w", err)
			}
			return string(b), nil
		}
	case pgtype.TimestamptzOID, pgtype.TimestampOID, pgtype.DateOID:
		if s, ok := v.(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				return t, nil
			}
		}
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
		// A JSON number read as float64 must be whole; pgx would truncate silently.
		if f, ok := v.(float64); ok && (f != math.Trunc(f) || math.IsInf(f, 0)) {
			return nil, fmt.Errorf("%v is not an integer", f)
		}
	}
	return v, nil
}

// targetError describes a failed statement on the target. When ctx is done the
// statement failed because of it, so the context's error is what the executor sees.
func targetError(ctx context.Context, doing string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w (%v)", doing, ctxErr, err)
	}
	err = fmt.Errorf("%s: %w", doing, err)
	if isDataPgError(err) {
		return etl.Permanent(etl.DataError(err))
	}
	return etl.DBError(err)
}

// isDataPgError reports whether Postgres rejected the statement for what it was given
// rather than for its own state: bad values (class 22), violated constraints (23), an
// invalid statement such as an unknown column or missing privilege (42), or a COPY
// that pgx aborted because a value would not encode for its column.
func isDataPgError(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	if !ok {
		return false
	}
	switch {
	case strings.HasPrefix(pgErr.Code, "22"), strings.HasPrefix(pgErr.Code, "23"), strings.HasPrefix(pgErr.Code, "42"):
		return true
	case pgErr.Code == "57014" && strings.HasPrefix(pgErr.Message, "COPY from stdin failed"):
		return true
	}
	return false
}
