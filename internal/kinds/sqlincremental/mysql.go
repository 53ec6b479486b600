package sqlincremental

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/kinds/pgtarget"
)

// MySQL's DATETIME range stands in for open window bounds in a query's own binds.
var (
	mysqlMinTime = time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC)
	mysqlMaxTime = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
)

// mysqlSource reads a MySQL or MariaDB source over one connection.
type mysqlSource struct {
	db   *sql.DB
	conn *sql.Conn
	tx   *sql.Tx
}

func openMySQL(ctx context.Context, dsn string, cfg *Config) (*mysqlSource, error) {
	mc, err := mysql.ParseDSN(strings.TrimPrefix(dsn, "mysql://"))
	if err != nil {
		// Like Postgres's, the parse error may quote the DSN: name only the variable.
		return nil, etl.Permanent(etl.SystemError(fmt.Errorf("sql_incremental: environment variable %s (source_url_env) holds an invalid MySQL DSN", cfg.SourceURLEnv)))
	}
	// Times travel as UTC both ways: DATETIME values are read as UTC, TIMESTAMP ones converted.
	mc.ParseTime = true
	mc.Loc = time.UTC
	if mc.Params == nil {
		mc.Params = map[string]string{}
	}
	mc.Params["time_zone"] = "'+00:00'"
	mc.InterpolateParams = false // values travel as bind parameters
	connector, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, etl.Permanent(etl.SystemError(fmt.Errorf("sql_incremental: environment variable %s (source_url_env): %w", cfg.SourceURLEnv, err)))
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		_ = db.Close()
		return nil, sourceError(ctx, "connect to source", err)
	}
	return &mysqlSource{db: db, conn: conn}, nil
}

func (s *mysqlSource) close(context.Context) {
	if s.tx != nil {
		_ = s.tx.Rollback()
	}
	_ = s.conn.Close()
	_ = s.db.Close()
}

func (s *mysqlSource) ident(name string) string {
	return "`" + strings.ReplaceAll(name, "`", "``") + "`"
}

func (s *mysqlSource) placeholder(int) string { return "?" }

// bound is the source's clock: MySQL shows no open transaction's start precisely enough to
// hold upper below it, so the lookback covers late commits.
func (s *mysqlSource) bound(ctx context.Context, horizon string) (bound, error) {
	var now time.Time
	if err := s.conn.QueryRowContext(ctx, "SELECT NOW(6)").Scan(&now); err != nil {
		return bound{}, sourceError(ctx, "read the source's clock", err)
	}
	return bound{at: now.UTC(), why: "source clock"}, nil
}

func (s *mysqlSource) begin(ctx context.Context) error {
	tx, err := s.conn.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return sourceError(ctx, "begin source transaction", err)
	}
	s.tx = tx
	return nil
}

func (s *mysqlSource) describe(ctx context.Context, query string, args []any) ([]srcColumn, error) {
	rows, err := s.tx.QueryContext(ctx, query+" LIMIT 0", mysqlArgs(args)...)
	if err != nil {
		return nil, sourceError(ctx, "run the query on the source", err)
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return nil, sourceError(ctx, "describe the query's columns", err)
	}
	cols := make([]srcColumn, len(types))
	for i, ct := range types {
		switch ct.DatabaseTypeName() {
		case "DATETIME", "TIMESTAMP", "DATE":
			cols[i].isTime = true
		}
		cols[i].name = ct.Name()
	}
	return cols, rows.Err()
}

func (s *mysqlSource) pass(ctx context.Context, q passQuery, out *pgtarget.CopyWriter, chk *rowCheck) error {
	rows, err := s.tx.QueryContext(ctx, q.sql, mysqlArgs(q.args)...)
	if err != nil {
		return sourceError(ctx, "run the query on the source", err)
	}
	defer rows.Close()
	vals := make([]any, len(q.cols))
	ptrs := make([]any, len(q.cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return sourceError(ctx, "read a row", err)
		}
		for i, j := range q.keys {
			if vals[j] == nil {
				return chk.nullKey(i)
			}
		}
		var mod time.Time
		if q.mod >= 0 {
			t, ok := vals[q.mod].(time.Time)
			switch {
			case vals[q.mod] == nil:
				return chk.nullMod()
			case !ok:
				return etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental: modified_column %s holds %T, want a DATETIME, TIMESTAMP or DATE", chk.modName, vals[q.mod])))
			}
			mod = t.UTC()
		}
		rank, err := chk.row(ctx, mod, q.mod >= 0)
		if err != nil {
			return err
		}
		chk.tally.TrackKey(rank, chk.keyNames, func() map[string]any {
			key := make([]any, len(q.keys))
			for i, j := range q.keys {
				key[i] = vals[j]
				if b, ok := vals[j].([]byte); ok {
					key[i] = string(b)
				}
			}
			return chk.keyMap(key)
		})
		if err := out.ValueRow(vals[:q.copied]); err != nil {
			return etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental: row %d: %w", chk.rows, err)))
		}
	}
	if err := rows.Err(); err != nil {
		return sourceError(ctx, "read the query's rows", err)
	}
	return nil
}

// mysqlArgs turns bind values into the driver's: JSON numbers become numbers, open window
// bounds DATETIME's extremes, objects JSON text.
func mysqlArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case openBound:
			out[i] = mysqlMaxTime
			if v < 0 {
				out[i] = mysqlMinTime
			}
		case json.Number:
			if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
				out[i] = n
			} else if f, err := v.Float64(); err == nil {
				out[i] = f
			} else {
				out[i] = string(v)
			}
		case map[string]any, []any:
			b, _ := json.Marshal(v)
			out[i] = string(b)
		default:
			out[i] = v
		}
	}
	return out
}
