package dbmigrate_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ariga.io/atlas/sql/migrate"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbmigrate"
	etlschema "github.com/etlexec/etlexec/internal/schema"
)

// migrationsPath is the repository's migration directory, relative to this package.
const migrationsPath = "../schema/migrations"

// openDB opens a database/sql handle on u, closed when the test ends.
func openDB(t *testing.T, u string) *sql.DB {
	t.Helper()
	db, err := dbmigrate.Open(u)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

// connect opens a single pgx connection on u, closed when the test ends.
func connect(t *testing.T, u string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), u)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// copyMigrations copies the repository's migration directory into a temp dir the test may change.
func copyMigrations(t *testing.T) (*migrate.LocalDir, string) {
	t.Helper()
	path := t.TempDir()
	entries, err := os.ReadDir(migrationsPath)
	require.NoError(t, err)
	for _, e := range entries {
		if e.IsDir() || !(strings.HasSuffix(e.Name(), ".sql") || e.Name() == migrate.HashFileName) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(migrationsPath, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(path, e.Name()), b, 0o644))
	}
	dir, err := migrate.NewLocalDir(path)
	require.NoError(t, err)
	return dir, path
}

// Changes made to schema.hcl without a migration; changedHCL applies them to the embedded file.
const (
	addedColumn = "owner_team"
	addedIndex  = "dw_etl_run_items_claim_worker_idx"
)

func changedHCL(t *testing.T) []byte {
	t.Helper()
	src := string(etlschema.HCL)
	jobs := "table \"dw_etl_jobs\" {\n  schema  = schema.public\n"
	items := "  index \"dw_etl_run_items_status_idx\" {\n"
	require.Equal(t, 1, strings.Count(src, jobs), "schema.hcl anchor for dw_etl_jobs moved")
	require.Equal(t, 1, strings.Count(src, items), "schema.hcl anchor for dw_etl_run_items moved")
	src = strings.Replace(src, jobs, jobs+"  column \""+addedColumn+"\" {\n    type = text\n    null = true\n  }\n", 1)
	src = strings.Replace(src, items, "  index \""+addedIndex+"\" {\n    columns = [column.claim_worker]\n  }\n"+items, 1)
	return []byte(src)
}

// applyAll migrates the database at u with the embedded directory (or dir, when not nil).
func applyAll(t *testing.T, db *sql.DB, dir migrate.Dir) *dbmigrate.Report {
	t.Helper()
	rep, err := (&dbmigrate.Migrator{DB: db, Dir: dir}).Apply(context.Background())
	require.NoError(t, err)
	return rep
}

// embeddedFiles lists the names of the embedded migration files, in order.
func embeddedFiles(t *testing.T) []string {
	t.Helper()
	dir, err := dbmigrate.Dir()
	require.NoError(t, err)
	files, err := dir.Files()
	require.NoError(t, err)
	var names []string
	for _, f := range files {
		names = append(names, f.Name())
	}
	require.NotEmpty(t, names)
	return names
}
