package pgtarget

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/etlexec/etlexec/etl"
)

// Stream loads the rows of one source read into a target without holding them: the source
// writes them as COPY data ([CopyWriter]) while the target reads them.
type Stream struct {
	tx   pgx.Tx
	pl   plan
	info targetInfo
}

// NewStream checks the target's names, plans the load of rows carrying the given source
// fields and looks the table up. Its errors are marked as [PageLoader.Load]'s are.
func NewStream(ctx context.Context, tx pgx.Tx, t Target, fields []string) (*Stream, error) {
	table, err := t.check()
	if err != nil {
		return nil, err
	}
	pl, err := t.plan(table, Page{Fields: fields})
	if err != nil {
		return nil, err
	}
	info, err := describeTarget(ctx, tx, table, pl.keys)
	if err != nil {
		return nil, err
	}
	if err := pl.checkColumns(info.cols); err != nil {
		return nil, err
	}
	return &Stream{tx: tx, pl: pl, info: info}, nil
}

// Fields are the source fields each row carries, in the order [CopyWriter] takes them.
func (s *Stream) Fields() []string { return slices.Clone(s.pl.fields) }

// CopyOptions say what a stream's rows are and when the target may take them straight into
// the table rather than through the staging table and the upsert. Straight in needs an
// immediate unique index on exactly the key columns (so a COPY fails on an existing key
// rather than doubling a row) and, for binary rows, the target's own types.
type CopyOptions struct {
	// Binary: the rows are COPY binary data, value i in the binary form of SourceTypes[i],
	// which must be built-in types (their OIDs and binary forms are the same on every server).
	// A column whose type differs from the target's is staged in the source's type, and the
	// upsert casts. Otherwise the rows are COPY text.
	Binary      bool
	SourceTypes []SourceType
	// FirstLoad: nothing has been loaded into the target for this job yet, so the rows are
	// COPYed straight into the table; if a key exists there already that COPY is undone and
	// they go through the staging table.
	FirstLoad bool
	// Whole: the rows are all the source holds (no window), so into an empty table they are
	// COPYed straight in, as for FirstLoad.
	Whole bool
}

// SourceType is a source column's Postgres type: its OID and type modifier (negative: none).
type SourceType struct {
	OID    uint32
	Typmod int32
}

// Copy loads the rows write writes and returns the number of target rows inserted or
// changed, and how they were loaded (for the item's note). Like [PageLoader.Load] it upserts
// on the key columns, the last of rows sharing a key winning, and leaves rows equal to the
// target's alone.
//
// write runs in its own goroutine while the COPY reads, and may run twice (straight into the
// table, then into the staging table after a conflict): each run writes every row from the
// start. An error of write is what Copy returns, as it is; the target's errors are marked.
func (s *Stream) Copy(ctx context.Context, o CopyOptions, write func(*CopyWriter) error) (int64, string, error) {
	pl, cols := s.pl, s.info.cols
	direct := s.info.uniqueKeys && o.FirstLoad
	var stageTypes []string
	if o.Binary {
		// Binary values load only into their own type: the staging table takes the source's
		// types where they differ from the target's, and the upsert casts.
		stageTypes = make([]string, len(pl.cols))
		var differ []int
		for i, c := range pl.cols {
			stageTypes[i] = cols[c].sqlType
			if o.SourceTypes[i].OID != cols[c].oid {
				differ = append(differ, i)
			}
		}
		if len(differ) > 0 {
			direct = false
			if err := sourceTypes(ctx, s.tx, o.SourceTypes, differ, stageTypes); err != nil {
				return 0, "", err
			}
		}
	}
	if s.info.uniqueKeys && o.Whole && (!o.Binary || stageTypesMatch(stageTypes, pl, cols)) {
		var err error
		if direct, err = isEmpty(ctx, s.tx, pl.table); err != nil {
			return 0, "", err
		}
	}
	return s.load(ctx, o.Binary, stageTypes, direct, write)
}

// sourceTypes names the source types at idx, as the target prints them (they are built in,
// so the target knows them), into types.
func sourceTypes(ctx context.Context, tx pgx.Tx, src []SourceType, idx []int, types []string) error {
	oids := make([]uint32, len(idx))
	mods := make([]int32, len(idx))
	for i, j := range idx {
		oids[i], mods[i] = src[j].OID, src[j].Typmod
	}
	rows, err := tx.Query(ctx, `SELECT format_type(o, CASE WHEN m < 0 THEN NULL ELSE m END)
		FROM unnest($1::oid[], $2::int4[]) WITH ORDINALITY AS u(o, m, n) ORDER BY n`, oids, mods)
	if err != nil {
		return targetError(ctx, "name the source's column types", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return targetError(ctx, "name the source's column types", err)
	}
	for i, j := range idx {
		types[j] = names[i]
	}
	return nil
}

// stageTypesMatch reports whether the staging types are the target's own.
func stageTypesMatch(types []string, pl plan, cols map[string]column) bool {
	for i, c := range pl.cols {
		if types[i] != cols[c].sqlType {
			return false
		}
	}
	return true
}

// isEmpty reports whether the table has no rows.
func isEmpty(ctx context.Context, tx pgx.Tx, table pgx.Identifier) (bool, error) {
	var empty bool
	if err := tx.QueryRow(ctx, `SELECT NOT EXISTS (SELECT FROM `+table.Sanitize()+`)`).Scan(&empty); err != nil {
		return false, targetError(ctx, "look into "+table.Sanitize(), err)
	}
	return empty, nil
}

// load streams the rows into the target: straight into the table when direct (falling back
// to the upsert if a key already exists), else through a staging table. It returns the rows
// written and how.
func (s *Stream) load(ctx context.Context, binary bool, stageTypes []string, direct bool,
	write func(*CopyWriter) error) (int64, string, error) {
	pl, tx := s.pl, s.tx
	format := ""
	if binary {
		format = " (FORMAT binary)"
	}
	oids := make([]uint32, len(pl.cols))
	for i, c := range pl.cols {
		oids[i] = s.info.cols[c].oid
	}
	// pass copies the rows into one table; errors of the source (write) are returned as they
	// are, those of the target raw (for isConflict) with fromTarget set.
	pass := func(conn *pgconn.PgConn, into pgx.Identifier) (n int64, fromTarget bool, err error) {
		var srcErr error
		n, err = copyIn(ctx, conn, `COPY `+into.Sanitize()+` (`+strings.Join(pl.quotedCols(), ", ")+`) FROM STDIN`+format,
			func(w io.Writer) error {
				cw, err := newCopyWriter(w, binary, oids)
				if err == nil {
					err = write(cw)
				}
				if err == nil {
					err = cw.close()
				}
				if err != nil && !errors.Is(err, errCopyStopped) {
					srcErr = err
				}
				return err
			})
		if srcErr != nil {
			return 0, false, srcErr
		}
		return n, err != nil, err
	}
	copyFailed := func(err error, fromTarget bool) error {
		if fromTarget {
			return targetError(ctx, "copy into "+pl.table.Sanitize(), err)
		}
		return err
	}

	how := "through a staging table"
	if direct {
		sp, err := tx.Begin(ctx)
		if err != nil {
			return 0, "", targetError(ctx, "savepoint before copying into "+pl.table.Sanitize(), err)
		}
		conn, err := pgConnOf(sp)
		if err != nil {
			return 0, "", err
		}
		n, fromTarget, err := pass(conn, pl.table)
		if err == nil {
			if err := sp.Commit(ctx); err != nil {
				return 0, "", targetError(ctx, "release savepoint", err)
			}
			return n, "by COPY straight into the table", nil
		}
		_ = sp.Rollback(ctx)
		if !fromTarget || !isConflict(err) {
			return 0, "", copyFailed(err, fromTarget)
		}
		how = "through a staging table (a key already existed, so COPY straight in was undone)"
	}
	st, err := pl.stage(ctx, tx, s.info.cols, stageTypes)
	if err != nil {
		return 0, "", err
	}
	conn, err := pgConnOf(tx)
	if err != nil {
		return 0, "", err
	}
	if _, fromTarget, err := pass(conn, st.name); err != nil {
		return 0, "", copyFailed(err, fromTarget)
	}
	// Rows sharing a key are rare; try without sorting them out first.
	sp, err := tx.Begin(ctx)
	if err != nil {
		return 0, "", targetError(ctx, "savepoint before the upsert", err)
	}
	written, err := pl.merge(ctx, sp, st, s.info.cols, false)
	if err == nil {
		err = sp.Commit(ctx)
	} else if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "21000" {
		_ = sp.Rollback(ctx)
		written, err = pl.merge(ctx, tx, st, s.info.cols, true)
	}
	if err != nil {
		return 0, "", err
	}
	return written, how, nil
}

// pgConnOf is the connection under a target transaction, for COPY from a stream.
func pgConnOf(tx pgx.Tx) (*pgconn.PgConn, error) {
	c := tx.Conn()
	if c == nil {
		return nil, etl.DBError(errors.New("the target transaction has no connection"))
	}
	return c.PgConn(), nil
}

// isConflict reports whether the target refused a row for an existing key.
func isConflict(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && (pgErr.Code == "23505" || pgErr.Code == "23P01")
}
