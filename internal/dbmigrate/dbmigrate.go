// Package dbmigrate owns the evolution of etlexec's Postgres schema (the files of
// internal/schema): it plans the next versioned migration from schema.hcl with the Atlas
// library, applies the migration directory exactly as the Atlas CLI would (same advisory lock, same revisions table, one transaction per
// file), detects and explains the legacy upgrade, and reports drift between a live database
// and schema.hcl.
package dbmigrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"ariga.io/atlas/sql/migrate"
	"ariga.io/atlas/sql/postgres"
	"ariga.io/atlas/sql/schema"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib" // also registers the "pgx" database/sql driver Atlas runs on
	"github.com/rs/zerolog"

	etlschema "github.com/etlexec/etlexec/internal/schema"
)

const (
	// LockName is the advisory lock the Atlas CLI takes around `migrate apply`
	// (fnv32 of the name, then pg_advisory_lock), so our applier and the CLI exclude each other.
	LockName = "atlas_migrate_execute"
	// RevisionSchema and RevisionTable are where the Atlas CLI records applied files by default.
	RevisionSchema = "atlas_schema_revisions"
	RevisionTable  = "atlas_schema_revisions"
	// LockTimeoutDefault bounds how long Apply waits for another migrator to finish.
	LockTimeoutDefault = 5 * time.Minute
	// OperatorVersionDefault is recorded in each revision row, like the CLI records its version.
	OperatorVersionDefault = "etlexec"
)

// ErrLegacyInvalid reports a legacy dw_etl_runs whose rows cannot be upgraded as they are.
var ErrLegacyInvalid = errors.New("legacy dw_etl_runs cannot be upgraded")

// Dir returns the migration directory embedded in the binary.
func Dir() (migrate.Dir, error) {
	entries, err := fs.ReadDir(etlschema.Migrations, ".")
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	dir := &migrate.MemDir{}
	for _, e := range entries {
		b, err := fs.ReadFile(etlschema.Migrations, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read embedded migration %s: %w", e.Name(), err)
		}
		if err := dir.WriteFile(e.Name(), b); err != nil {
			return nil, err
		}
	}
	return dir, nil
}

// Open opens a database/sql handle over pgx for Atlas. It accepts every DATABASE_URL form the
// other commands do: the pool's settings (pool_max_conns, …), which database/sql does not know,
// are parsed off with the pool configuration and the connection settings kept.
func Open(url string) (*sql.DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	return stdlib.OpenDB(*cfg.ConnConfig), nil
}

// Migrator applies a migration directory to one database.
type Migrator struct {
	// DB is the target database.
	DB *sql.DB
	// Dir is the migration directory; Dir() (embedded) when nil.
	Dir migrate.Dir
	// Log receives progress; the zero logger discards.
	Log zerolog.Logger
	// LockTimeout bounds the wait for a concurrent migrator. Defaults to LockTimeoutDefault.
	LockTimeout time.Duration
	// OperatorVersion is stored in each revision row. Defaults to OperatorVersionDefault.
	OperatorVersion string
}

// Revision is one applied (or partly applied) migration file.
type Revision struct {
	Version     string
	Description string
	Applied     int
	Total       int
	ExecutedAt  time.Time
	Error       string
}

// Status is what a database has and lacks.
type Status struct {
	Applied []Revision
	Pending []string // file names, in order
	// Legacy is set when the database holds only a pre-etlexec dw_etl_runs.
	Legacy *LegacyInfo
}

// LegacyInfo describes a legacy dw_etl_runs found before any migration ran.
type LegacyInfo struct {
	Rows        int64
	Jobs        int64
	BadStatuses map[string]int64 // status values outside the allowed list, with counts
	NullJobIDs  int64            // rows without a job_id: no placeholder job can be made for them
}

// Plan says in words what the legacy upgrade will do.
func (l *LegacyInfo) Plan() string {
	return fmt.Sprintf("found a legacy dw_etl_runs with %d rows of %d jobs and no migration history: "+
		"in one transaction the missing columns are added NULLable, duration_ms is backfilled from "+
		"started_at/ended_at, one disabled job row (kind 'legacy') is created per job_id so the foreign "+
		"key can hold, defaults and NOT NULL are set after population, the other tables are created, "+
		"and every existing row is kept", l.Rows, l.Jobs)
}

func (m *Migrator) dir() (migrate.Dir, error) {
	if m.Dir != nil {
		return m.Dir, nil
	}
	return Dir()
}

func (m *Migrator) operator() string {
	if m.OperatorVersion != "" {
		return m.OperatorVersion
	}
	return OperatorVersionDefault
}

// Status reads the revisions and lists the pending files without changing anything.
func (m *Migrator) Status(ctx context.Context) (*Status, error) {
	dir, err := m.dir()
	if err != nil {
		return nil, err
	}
	if err := migrate.Validate(dir); err != nil {
		return nil, fmt.Errorf("validate migration directory: %w", err)
	}
	st := &Status{}
	rrw := &revisions{q: m.DB}
	exists, err := rrw.exists(ctx)
	if err != nil {
		return nil, err
	}
	var revs []*migrate.Revision
	if exists {
		if revs, err = rrw.ReadRevisions(ctx); err != nil {
			return nil, err
		}
	}
	done := make(map[string]bool, len(revs))
	for _, r := range revs {
		st.Applied = append(st.Applied, Revision{r.Version, r.Description, r.Applied, r.Total, r.ExecutedAt, r.Error})
		done[r.Version] = r.Applied == r.Total
	}
	files, err := dir.Files()
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if !done[f.Version()] {
			st.Pending = append(st.Pending, f.Name())
		}
	}
	if len(revs) == 0 {
		if st.Legacy, err = detectLegacy(ctx, m.DB); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// Report is what Apply did.
type Report struct {
	Applied []string // file names applied by this call
	Legacy  *LegacyInfo
}

// Apply runs every pending file, each in its own transaction, under the CLI's advisory lock.
// A second Apply finds nothing pending and returns an empty report; a concurrent one waits.
func (m *Migrator) Apply(ctx context.Context) (*Report, error) {
	dir, err := m.dir()
	if err != nil {
		return nil, err
	}
	if err := migrate.Validate(dir); err != nil {
		return nil, fmt.Errorf("validate migration directory: %w", err)
	}
	drv, err := postgres.Open(m.DB)
	if err != nil {
		return nil, fmt.Errorf("open atlas driver: %w", err)
	}
	timeout := m.LockTimeout
	if timeout <= 0 {
		timeout = LockTimeoutDefault
	}
	unlock, err := drv.(schema.Locker).Lock(ctx, LockName, timeout)
	if err != nil {
		return nil, fmt.Errorf("take migration lock %q: %w", LockName, err)
	}
	defer unlock() //nolint:errcheck // the session ends with the connection anyway

	rrw := &revisions{q: m.DB}
	if err := rrw.create(ctx); err != nil {
		return nil, err
	}
	rep := &Report{}
	revs, err := rrw.ReadRevisions(ctx)
	if err != nil {
		return nil, err
	}
	if len(revs) == 0 {
		if rep.Legacy, err = detectLegacy(ctx, m.DB); err != nil {
			return nil, err
		}
		if rep.Legacy != nil {
			if len(rep.Legacy.BadStatuses) > 0 {
				return nil, fmt.Errorf("%w: status values outside PENDING, RUNNING, SUCCESS, PARTIAL_SUCCESS, FAILED, SKIPPED, CANCELLED: %v; fix them first, nothing was changed",
					ErrLegacyInvalid, rep.Legacy.BadStatuses)
			}
			if rep.Legacy.NullJobIDs > 0 {
				return nil, fmt.Errorf("%w: %d rows have no job_id; fix them first, nothing was changed",
					ErrLegacyInvalid, rep.Legacy.NullJobIDs)
			}
			m.Log.Warn().Int64("rows", rep.Legacy.Rows).Msg(rep.Legacy.Plan())
		}
	}
	opts := []migrate.ExecutorOption{
		migrate.WithOperatorVersion(m.operator()),
		migrate.WithAllowDirty(rep.Legacy != nil),
	}
	ex, err := migrate.NewExecutor(drv, dir, rrw, opts...)
	if err != nil {
		return nil, err
	}
	pending, err := ex.Pending(ctx)
	if errors.Is(err, migrate.ErrNoPendingFiles) {
		return rep, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list pending migrations: %w", err)
	}
	for _, f := range pending {
		start := time.Now()
		if err := m.applyFile(ctx, dir, f, opts); err != nil {
			return rep, fmt.Errorf("apply migration %s: %w", f.Name(), err)
		}
		rep.Applied = append(rep.Applied, f.Name())
		m.Log.Info().Str("file", f.Name()).Dur("elapsed", time.Since(start)).Msg("migration applied")
	}
	return rep, nil
}

// applyFile runs one file and its revision bookkeeping in one transaction, as the CLI's
// default --tx-mode file does: a failing statement leaves neither schema nor revision behind.
func (m *Migrator) applyFile(ctx context.Context, dir migrate.Dir, f migrate.File, opts []migrate.ExecutorOption) error {
	tx, err := m.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	txDrv, err := postgres.Open(tx)
	if err != nil {
		return err
	}
	ex, err := migrate.NewExecutor(txDrv, dir, &revisions{q: tx}, opts...)
	if err != nil {
		return err
	}
	if err := ex.Execute(ctx, f); err != nil {
		return err
	}
	return tx.Commit()
}

// detectLegacy reports a public.dw_etl_runs that predates etlexec: present while
// dw_etl_jobs is not, and with no migration history.
func detectLegacy(ctx context.Context, q querier) (*LegacyInfo, error) {
	var runs, jobs bool
	err := q.QueryRowContext(ctx, `SELECT to_regclass('public.dw_etl_runs') IS NOT NULL, to_regclass('public.dw_etl_jobs') IS NOT NULL`).Scan(&runs, &jobs)
	if err != nil {
		return nil, fmt.Errorf("detect legacy schema: %w", err)
	}
	if !runs || jobs {
		return nil, nil
	}
	info := &LegacyInfo{BadStatuses: map[string]int64{}}
	if err := q.QueryRowContext(ctx, `SELECT count(*), count(DISTINCT job_id), count(*) FILTER (WHERE job_id IS NULL)
		FROM public.dw_etl_runs`).Scan(&info.Rows, &info.Jobs, &info.NullJobIDs); err != nil {
		return nil, fmt.Errorf("count legacy runs: %w", err)
	}
	rows, err := q.QueryContext(ctx, `SELECT coalesce(status, '<NULL>'), count(*) FROM public.dw_etl_runs
		WHERE status IS NULL OR status NOT IN ('PENDING','RUNNING','SUCCESS','PARTIAL_SUCCESS','FAILED','SKIPPED','CANCELLED')
		GROUP BY 1`)
	if err != nil {
		return nil, fmt.Errorf("check legacy statuses: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		info.BadStatuses[s] = n
	}
	return info, rows.Err()
}

type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// revisions is a migrate.RevisionReadWriter over the Atlas CLI's own table, so a team with the
// CLI sees our history and we see theirs. The DDL mirrors what the CLI creates through ent.
type revisions struct{ q querier }

var _ migrate.RevisionReadWriter = (*revisions)(nil)

const revisionsDDL = `CREATE SCHEMA IF NOT EXISTS "atlas_schema_revisions";
CREATE TABLE IF NOT EXISTS "atlas_schema_revisions"."atlas_schema_revisions" (
  "version" character varying NOT NULL,
  "description" character varying NOT NULL,
  "type" bigint NOT NULL DEFAULT 2,
  "applied" bigint NOT NULL DEFAULT 0,
  "total" bigint NOT NULL DEFAULT 0,
  "executed_at" timestamptz NOT NULL,
  "execution_time" bigint NOT NULL,
  "error" text NULL,
  "error_stmt" text NULL,
  "hash" character varying NOT NULL,
  "partial_hashes" jsonb NULL,
  "operator_version" character varying NOT NULL,
  PRIMARY KEY ("version")
)`

// cloudIdentifier is a row the CLI keeps in the same table; it is not a migration.
const cloudIdentifier = ".atlas_cloud_identifier"

func (r *revisions) Ident() *migrate.TableIdent {
	return &migrate.TableIdent{Schema: RevisionSchema, Name: RevisionTable}
}

func (r *revisions) create(ctx context.Context) error {
	for _, stmt := range strings.Split(revisionsDDL, ";\n") {
		if _, err := r.q.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("create revisions table: %w", err)
		}
	}
	return nil
}

func (r *revisions) exists(ctx context.Context) (bool, error) {
	var ok bool
	err := r.q.QueryRowContext(ctx, `SELECT to_regclass('atlas_schema_revisions.atlas_schema_revisions') IS NOT NULL`).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("look up revisions table: %w", err)
	}
	return ok, nil
}

const revisionCols = `version, description, type, applied, total, executed_at, execution_time,
	coalesce(error, ''), coalesce(error_stmt, ''), hash, coalesce(partial_hashes, '[]'::jsonb)::text, operator_version`

func scanRevision(sc interface{ Scan(...any) error }) (*migrate.Revision, error) {
	var (
		rev      migrate.Revision
		typ      int64
		execNS   int64
		partials string
	)
	if err := sc.Scan(&rev.Version, &rev.Description, &typ, &rev.Applied, &rev.Total, &rev.ExecutedAt, &execNS,
		&rev.Error, &rev.ErrorStmt, &rev.Hash, &partials, &rev.OperatorVersion); err != nil {
		return nil, err
	}
	rev.Type = migrate.RevisionType(typ)
	rev.ExecutionTime = time.Duration(execNS)
	if err := jsonUnmarshal(partials, &rev.PartialHashes); err != nil {
		return nil, fmt.Errorf("decode partial_hashes of %s: %w", rev.Version, err)
	}
	return &rev, nil
}

func (r *revisions) ReadRevisions(ctx context.Context) ([]*migrate.Revision, error) {
	rows, err := r.q.QueryContext(ctx, `SELECT `+revisionCols+` FROM atlas_schema_revisions.atlas_schema_revisions
		WHERE version <> $1 ORDER BY version`, cloudIdentifier)
	if err != nil {
		return nil, fmt.Errorf("read revisions: %w", err)
	}
	defer rows.Close()
	var revs []*migrate.Revision
	for rows.Next() {
		rev, err := scanRevision(rows)
		if err != nil {
			return nil, fmt.Errorf("read revisions: %w", err)
		}
		revs = append(revs, rev)
	}
	return revs, rows.Err()
}

func (r *revisions) ReadRevision(ctx context.Context, version string) (*migrate.Revision, error) {
	rev, err := scanRevision(r.q.QueryRowContext(ctx, `SELECT `+revisionCols+`
		FROM atlas_schema_revisions.atlas_schema_revisions WHERE version = $1`, version))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, migrate.ErrRevisionNotExist
	}
	if err != nil {
		return nil, fmt.Errorf("read revision %s: %w", version, err)
	}
	return rev, nil
}

func (r *revisions) WriteRevision(ctx context.Context, rev *migrate.Revision) error {
	partials, err := jsonMarshal(rev.PartialHashes)
	if err != nil {
		return err
	}
	_, err = r.q.ExecContext(ctx, `INSERT INTO atlas_schema_revisions.atlas_schema_revisions
		(version, description, type, applied, total, executed_at, execution_time, error, error_stmt, hash, partial_hashes, operator_version)
		VALUES ($1, $2, $3, $4, $5, $6, $7, nullif($8, ''), nullif($9, ''), $10, $11::jsonb, $12)
		ON CONFLICT (version) DO UPDATE SET description = excluded.description, type = excluded.type,
		  applied = excluded.applied, total = excluded.total, executed_at = excluded.executed_at,
		  execution_time = excluded.execution_time, error = excluded.error, error_stmt = excluded.error_stmt,
		  hash = excluded.hash, partial_hashes = excluded.partial_hashes, operator_version = excluded.operator_version`,
		rev.Version, rev.Description, int64(rev.Type), rev.Applied, rev.Total, rev.ExecutedAt, int64(rev.ExecutionTime),
		rev.Error, rev.ErrorStmt, rev.Hash, partials, rev.OperatorVersion)
	if err != nil {
		return fmt.Errorf("write revision %s: %w", rev.Version, err)
	}
	return nil
}

func (r *revisions) DeleteRevision(ctx context.Context, version string) error {
	if _, err := r.q.ExecContext(ctx, `DELETE FROM atlas_schema_revisions.atlas_schema_revisions WHERE version = $1`, version); err != nil {
		return fmt.Errorf("delete revision %s: %w", version, err)
	}
	return nil
}
