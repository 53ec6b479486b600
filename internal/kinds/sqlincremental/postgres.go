package sqlincremental

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/kinds/incremental"
	"github.com/etlexec/etlexec/internal/kinds/pgtarget"
)

// horizonMargin is kept below the oldest open transaction's start and the clock: a
// transaction's now() is fixed a moment before pg_stat_activity shows it, and a horizon read
// in that moment must not pass it.
const horizonMargin = time.Second

// pgSource reads a Postgres source over one pooled connection.
type pgSource struct {
	conn *pgxpool.Conn
	tx   pgx.Tx
}

// Source connections are pooled per connection string and shared by every item of the process:
// a fresh connection costs a backend start and cold catalog caches, which for small incremental
// items is most of the work.
const (
	// sourceConnsPerProcess bounds one process's connections to one source; items beyond wait.
	sourceConnsPerProcess = 8
	sourceConnIdle        = 30 * time.Second
)

var pgPools = struct {
	sync.Mutex
	byDSN map[string]*pgxpool.Pool
}{byDSN: make(map[string]*pgxpool.Pool)}

// pgApplicationName marks this kind's source sessions, whose read-only transactions the
// horizon need not wait for.
const pgApplicationName = "etlexec " + Kind

func openPostgres(ctx context.Context, dsn string, cfg *Config) (*pgSource, error) {
	pool, err := pgPool(dsn)
	if err != nil {
		// The parse error quotes the connection string, password redaction is best
		// effort, so only the variable's name is reported.
		return nil, etl.Permanent(etl.SystemError(fmt.Errorf("sql_incremental: environment variable %s (source_url_env) holds an invalid connection string", cfg.SourceURLEnv)))
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, sourceError(ctx, "connect to source", err)
	}
	return &pgSource{conn: conn}, nil
}

func pgPool(dsn string) (*pgxpool.Pool, error) {
	pgPools.Lock()
	defer pgPools.Unlock()
	if p, ok := pgPools.byDSN[dsn]; ok {
		return p, nil
	}
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	pc.MaxConns = sourceConnsPerProcess
	pc.MinConns = 0
	pc.MaxConnIdleTime = sourceConnIdle
	rp := pc.ConnConfig.RuntimeParams
	if rp["application_name"] == "" {
		rp["application_name"] = pgApplicationName
	}
	// Times travel as UTC, in text as in timestamps without a zone, and text output is ISO.
	rp["timezone"] = "UTC"
	rp["datestyle"] = "ISO, YMD"
	p, err := pgxpool.NewWithConfig(context.Background(), pc) // connects lazily
	if err != nil {
		return nil, err
	}
	pgPools.byDSN[dsn] = p
	return p, nil
}

// close ends the read-only transaction and returns the connection to the pool (which drops it
// if the item left it busy or broken).
func (s *pgSource) close(ctx context.Context) {
	if s.tx != nil {
		_ = s.tx.Rollback(ctx)
	}
	s.conn.Release()
}

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
			  AND backend_type NOT IN ('autovacuum worker', 'autovacuum launcher', 'walsender')
			  -- other items' read-only snapshots write nothing
			  AND NOT (application_name = $1 AND backend_xid IS NULL)) a`, pgApplicationName).
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
	sd, err := s.conn.Conn().PgConn().Prepare(ctx, "", sql, nil)
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

func (s *pgSource) pass(ctx context.Context, q passQuery, out *pgtarget.CopyWriter, chk *rowCheck) error {
	params, err := pgParams(q.args)
	if err != nil {
		return err
	}
	format := int16(pgtype.TextFormatCode)
	if q.binary {
		format = pgtype.BinaryFormatCode
	}
	rr := s.conn.Conn().PgConn().ExecParams(ctx, q.sql, params, nil, nil, []int16{format})
	keys := rawKeys{m: pgtype.NewMap(), q: &q, format: format, chk: chk}
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
		var rank incremental.Rank
		if rank, rowErr = chk.row(ctx, mod, q.mod >= 0); rowErr != nil {
			break
		}
		if rowErr = keys.track(rank, vals); rowErr != nil {
			break
		}
		if rowErr = out.RawRow(vals[:q.copied]); rowErr != nil {
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
	return keys.finish()
}

// rawKeys keeps the key of the row holding the greatest modification time as raw bytes,
// decoding only to break ties and at the end: rows mostly arrive in ascending time, so each
// would otherwise be decoded.
type rawKeys struct {
	m      *pgtype.Map
	q      *passQuery
	format int16
	chk    *rowCheck
	kept   [][]byte
	keptAt []any // kept decoded, nil until a tie needs it
}

func (k *rawKeys) track(rank incremental.Rank, vals [][]byte) error {
	switch rank {
	case incremental.Above:
		k.keep(vals)
		k.keptAt = nil
	case incremental.Tie:
		cur, err := k.decode(func(i int) []byte { return vals[k.q.keys[i]] })
		if err != nil {
			return err
		}
		if k.keptAt == nil {
			if k.keptAt, err = k.decode(func(i int) []byte { return k.kept[i] }); err != nil {
				return err
			}
		}
		if incremental.CompareKeys(k.chk.keyMap(cur), k.chk.keyMap(k.keptAt), k.chk.keyNames) > 0 {
			k.keep(vals)
			k.keptAt = cur
		}
	}
	return nil
}

func (k *rawKeys) keep(vals [][]byte) {
	if k.kept == nil {
		k.kept = make([][]byte, len(k.q.keys))
	}
	for i, j := range k.q.keys {
		k.kept[i] = append(k.kept[i][:0], vals[j]...)
	}
}

func (k *rawKeys) decode(raw func(i int) []byte) ([]any, error) {
	key := make([]any, len(k.q.keys))
	for i, j := range k.q.keys {
		v, err := decodeValue(k.m, k.q.cols[j].oid, k.format, raw(i))
		if err != nil {
			return nil, etl.DataError(fmt.Errorf("sql_incremental: decode key column %s: %w", k.chk.keySrc[i], err))
		}
		key[i] = jsonable(v)
	}
	return key, nil
}

// finish hands the composite cursor's key to the tally.
func (k *rawKeys) finish() error {
	if k.kept == nil {
		return nil
	}
	key, err := k.decode(func(i int) []byte { return k.kept[i] })
	if err != nil {
		return err
	}
	k.chk.tally.SetKey(k.chk.keyMap(key))
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
