package sqlincremental

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/etlexec/etlexec/etl"
)

// horizonMargin is kept below the oldest open transaction's start and the clock: a
// transaction's now() is fixed a moment before pg_stat_activity shows it, and a horizon read
// in that moment must not pass it.
const horizonMargin = time.Second

// pgSource reads a Postgres source over one connection.
type pgSource struct {
	conn *pgx.Conn
	tx   pgx.Tx
	env  string // the variable naming the source, for errors
}

func openPostgres(ctx context.Context, dsn string, cfg *Config) (*pgSource, error) {
	connCfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// The parse error quotes the connection string, password redaction is best
		// effort, so only the variable's name is reported.
		return nil, etl.Permanent(etl.SystemError(fmt.Errorf("sql_incremental: environment variable %s (source_url_env) holds an invalid connection string", cfg.SourceURLEnv)))
	}
	if connCfg.RuntimeParams["application_name"] == "" {
		connCfg.RuntimeParams["application_name"] = "etlexec " + Kind
	}
	// Times travel as UTC, in text as in timestamps without a zone, and text output is ISO.
	connCfg.RuntimeParams["timezone"] = "UTC"
	connCfg.RuntimeParams["datestyle"] = "ISO, YMD"
	conn, err := pgx.ConnectConfig(ctx, connCfg)
	if err != nil {
		return nil, sourceError(ctx, "connect to source", err)
	}
	return &pgSource{conn: conn, env: cfg.SourceURLEnv}, nil
}

func (s *pgSource) close(ctx context.Context) { _ = s.conn.Close(ctx) } // ends the read-only transaction too

func (s *pgSource) ident(name string) string { return pgx.Identifier{name}.Sanitize() }

func (s *pgSource) placeholder(i int) string { return "$" + strconv.Itoa(i) }

// bound reads the source's clock and, for HorizonTransactions, the start of the oldest
// transaction open in the source database (or prepared there). Any row not yet visible was
// written by such a transaction or a later one, and a row's modification time, set by the
// database (now(), a trigger), is never before its transaction's start: so below the result
// every row has committed. It runs outside the snapshot, which begin takes afterwards.
func (s *pgSource) bound(ctx context.Context, horizon string) (bound, error) {
	var (
		clock      time.Time
		oldest     *time.Time
		oldestPID  *int32
		hidden     int64
		prepared   *time.Time
		recovery   bool
		activities string
	)
	err := s.conn.QueryRow(ctx, `SELECT clock_timestamp(), a.oldest, a.pid, a.hidden,
			(SELECT min(prepared) FROM pg_prepared_xacts WHERE database = current_database()),
			pg_is_in_recovery(), current_setting('track_activities')
		FROM (SELECT min(xact_start) AS oldest,
				(array_agg(pid ORDER BY xact_start) FILTER (WHERE xact_start IS NOT NULL))[1] AS pid,
				count(*) FILTER (WHERE query = '<insufficient privilege>') AS hidden
			FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid()
			  AND backend_type NOT IN ('autovacuum worker', 'autovacuum launcher', 'walsender')) a`).
		Scan(&clock, &oldest, &oldestPID, &hidden, &prepared, &recovery, &activities)
	if err != nil {
		return bound{}, sourceError(ctx, "read the source's clock", err)
	}
	b := bound{at: clock, why: "source clock"}
	if horizon == HorizonClock {
		return b, nil
	}
	fix := func(why string) error {
		return etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental: horizon %s: %s; grant it, or set horizon: %s with a lookback",
			HorizonTransactions, why, HorizonClock)))
	}
	switch {
	case recovery:
		return bound{}, fix("the source is a standby, which cannot see the primary's open transactions")
	case activities != "on":
		return bound{}, fix("track_activities is off on the source, so its open transactions are not shown")
	case hidden > 0:
		return bound{}, fix(fmt.Sprintf("the source role cannot see %d other sessions' transactions (it needs pg_read_all_stats)", hidden))
	}
	b.at, b.why = clock.Add(-horizonMargin), "source clock − 1s"
	if oldest != nil && oldest.Add(-horizonMargin).Before(b.at) {
		b.at = oldest.Add(-horizonMargin)
		b.why = fmt.Sprintf("1s before the oldest open source transaction, pid %d, began", *oldestPID)
	}
	if prepared != nil && prepared.Add(-horizonMargin).Before(b.at) {
		b.at, b.why = prepared.Add(-horizonMargin), "1s before the oldest prepared source transaction"
	}
	return b, nil
}

func (s *pgSource) begin(ctx context.Context) error {
	tx, err := s.conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return sourceError(ctx, "begin source transaction", err)
	}
	s.tx = tx
	return nil
}

func (s *pgSource) describe(ctx context.Context, sql string, _ []any) ([]srcColumn, error) {
	sd, err := s.conn.PgConn().Prepare(ctx, "", sql, nil)
	if err != nil {
		return nil, sourceError(ctx, "prepare the query on the source", err)
	}
	cols := make([]srcColumn, len(sd.Fields))
	for i, f := range sd.Fields {
		cols[i] = srcColumn{name: f.Name, oid: f.DataTypeOID, typmod: f.TypeModifier,
			isTime: f.DataTypeOID == timestamptzOID || f.DataTypeOID == timestampOID || f.DataTypeOID == dateOID}
	}
	return cols, nil
}

func (s *pgSource) pass(ctx context.Context, q passQuery, out *copyWriter, chk *rowCheck) error {
	params, err := pgParams(q.args)
	if err != nil {
		return err
	}
	format := int16(pgtype.TextFormatCode)
	if q.binary {
		format = pgtype.BinaryFormatCode
	}
	m := pgtype.NewMap()
	rr := s.conn.PgConn().ExecParams(ctx, q.sql, params, nil, nil, []int16{format})
	var rowErr error
	for rr.NextRow() {
		vals := rr.Values()
		for i, j := range q.keys {
			if vals[j] == nil {
				rowErr = chk.nullKey(i)
				break
			}
		}
		if rowErr != nil {
			break
		}
		var mod time.Time
		if q.mod >= 0 {
			if vals[q.mod] == nil {
				rowErr = chk.nullMod()
				break
			}
			if mod, rowErr = decodeTime(q.modOID, format, vals[q.mod]); rowErr != nil {
				rowErr = etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental: row %d: %s: %w", chk.rows+1, chk.modName, rowErr)))
				break
			}
		}
		if rowErr = chk.row(ctx, mod, q.mod >= 0, func() ([]any, error) {
			key := make([]any, len(q.keys))
			for i, j := range q.keys {
				v, err := decodeValue(m, q.cols[j].oid, format, vals[j])
				if err != nil {
					return nil, etl.DataError(fmt.Errorf("sql_incremental: decode key column %s: %w", chk.keySrc[i], err))
				}
				key[i] = jsonable(v)
			}
			return key, nil
		}); rowErr != nil {
			break
		}
		if rowErr = out.rawRow(vals[:q.copied]); rowErr != nil {
			break
		}
	}
	// Close drains what is left of the result, so the connection stays usable for another
	// pass in the same snapshot.
	_, err = rr.Close()
	if rowErr != nil {
		return rowErr
	}
	if err != nil {
		return sourceError(ctx, "read the query's rows", err)
	}
	return nil
}

// pgParams encodes bind values as text, which Postgres parses as the types it infers.
func pgParams(args []any) ([][]byte, error) {
	out := make([][]byte, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case nil:
		case openBound:
			out[i] = []byte("infinity")
			if v < 0 {
				out[i] = []byte("-infinity")
			}
		case string:
			out[i] = []byte(v)
		case json.Number:
			out[i] = []byte(v)
		case bool:
			out[i] = strconv.AppendBool(nil, v)
		case time.Time:
			out[i] = v.UTC().AppendFormat(nil, time.RFC3339Nano)
		default:
			b, err := json.Marshal(v)
			if err != nil {
				return nil, etl.Permanent(etl.DataError(fmt.Errorf("sql_incremental: bind parameter %d: %w", i+1, err)))
			}
			out[i] = b
		}
	}
	return out, nil
}

// pgEpoch is where Postgres binary timestamps and dates count from.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// decodeTime reads a timestamptz, timestamp (taken as UTC) or date value.
func decodeTime(oid uint32, format int16, v []byte) (time.Time, error) {
	if format == pgtype.BinaryFormatCode {
		switch oid {
		case timestamptzOID, timestampOID:
			if len(v) != 8 {
				return time.Time{}, errors.New("malformed timestamp")
			}
			us := int64(binary.BigEndian.Uint64(v))
			if us == math.MaxInt64 || us == math.MinInt64 {
				return time.Time{}, errors.New("an infinite time is not a modification time")
			}
			return pgEpoch.Add(time.Duration(us) * time.Microsecond), nil
		case dateOID:
			if len(v) != 4 {
				return time.Time{}, errors.New("malformed date")
			}
			days := int32(binary.BigEndian.Uint32(v))
			if days == math.MaxInt32 || days == math.MinInt32 {
				return time.Time{}, errors.New("an infinite date is not a modification time")
			}
			return pgEpoch.AddDate(0, 0, int(days)), nil
		}
		return time.Time{}, fmt.Errorf("type %d is not a time", oid)
	}
	s := string(v)
	for _, layout := range []string{"2006-01-02 15:04:05.999999999Z07:00:00", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07", "2006-01-02 15:04:05.999999999", time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time this kind reads", s)
}

// decodeValue decodes one value into its default Go type; a type pgx does not know reads as
// its text.
func decodeValue(m *pgtype.Map, oid uint32, format int16, v []byte) (any, error) {
	t, ok := m.TypeForOID(oid)
	if !ok {
		if format == pgtype.TextFormatCode {
			return string(v), nil
		}
		return nil, fmt.Errorf("type %d has no decoder", oid)
	}
	return t.Codec.DecodeValue(m, oid, format, v)
}

// jsonable turns a decoded key value into one that reads well in cursor_meta.
func jsonable(v any) any {
	switch v := v.(type) {
	case [16]byte:
		return uuid.UUID(v).String()
	case pgtype.Numeric:
		if b, err := v.MarshalJSON(); err == nil {
			return json.Number(b)
		}
	case time.Time:
		return v.UTC()
	}
	return v
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
