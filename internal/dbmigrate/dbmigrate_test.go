package dbmigrate_test

import (
	"context"
	"strings"
	"testing"

	"ariga.io/atlas/sql/migrate"
	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbmigrate"
	"github.com/etlexec/etlexec/internal/dbtest"
)

// TestDrift is the check that keeps internal/schema's migrations/ and schema.hcl in step: the
// directory applied to an empty database must reach schema.hcl exactly, and an edit of
// schema.hcl without a migration must show up as drift.
func TestDrift(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t, dbtest.EmptyDatabase(t))
	rep := applyAll(t, db, nil)
	require.Equal(t, embeddedFiles(t), rep.Applied)

	t.Run("NoneAfterApply", func(t *testing.T) {
		t.Parallel()
		drift, err := dbmigrate.Drift(ctx, db, dbtest.ServerURL(), nil)
		require.NoError(t, err)
		require.Empty(t, drift, "internal/schema/migrations does not reach internal/schema/schema.hcl; run make migrate-diff")
	})

	t.Run("SchemaChangedWithoutMigration", func(t *testing.T) {
		t.Parallel()
		drift, err := dbmigrate.Drift(ctx, db, dbtest.ServerURL(), changedHCL(t))
		require.NoError(t, err)
		require.Len(t, drift, 2, "drift: %q", drift)
		all := strings.Join(drift, "\n")
		require.Contains(t, all, `ALTER TABLE "public"."dw_etl_jobs" ADD COLUMN "`+addedColumn+`" text NULL`)
		require.Contains(t, all, `CREATE INDEX "`+addedIndex+`" ON "public"."dw_etl_run_items" ("claim_worker")`)
	})
}

func TestPlan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("InSyncReturnsErrNoChanges", func(t *testing.T) {
		t.Parallel()
		dir, _ := copyMigrations(t)
		before, err := dir.Files()
		require.NoError(t, err)
		file, err := dbmigrate.Plan(ctx, dbtest.ServerURL(), dir, "nothing", nil)
		require.ErrorIs(t, err, dbmigrate.ErrNoChanges)
		require.Empty(t, file)
		after, err := dir.Files()
		require.NoError(t, err)
		require.Len(t, after, len(before), "no file may be written when nothing changed")
		require.NoError(t, migrate.Validate(dir))
	})

	t.Run("SchemaChangeWritesNextFile", func(t *testing.T) {
		t.Parallel()
		dir, _ := copyMigrations(t)
		hcl := changedHCL(t)
		file, err := dbmigrate.Plan(ctx, dbtest.ServerURL(), dir, "owner_team", hcl)
		require.NoError(t, err)
		require.True(t, strings.HasSuffix(file, "_owner_team.sql"), file)

		files, err := dir.Files()
		require.NoError(t, err)
		require.Len(t, files, len(embeddedFiles(t))+1)
		last := files[len(files)-1]
		require.Equal(t, file, last.Name(), "the new file must sort after the existing ones")
		body := string(last.Bytes())
		require.Contains(t, body, `ADD COLUMN "`+addedColumn+`" text NULL`)
		require.Contains(t, body, `CREATE INDEX "`+addedIndex+`"`)
		require.NoError(t, migrate.Validate(dir), "atlas.sum must cover the new file")

		// The new directory reaches the changed schema, and planning again finds nothing.
		db := openDB(t, dbtest.EmptyDatabase(t))
		rep := applyAll(t, db, dir)
		require.Len(t, rep.Applied, len(files))
		drift, err := dbmigrate.Drift(ctx, db, dbtest.ServerURL(), hcl)
		require.NoError(t, err)
		require.Empty(t, drift)
		_, err = dbmigrate.Plan(ctx, dbtest.ServerURL(), dir, "again", hcl)
		require.ErrorIs(t, err, dbmigrate.ErrNoChanges)
	})
}

func TestAtlasSum(t *testing.T) {
	t.Parallel()

	t.Run("EmbeddedValidates", func(t *testing.T) {
		t.Parallel()
		dir, err := dbmigrate.Dir()
		require.NoError(t, err)
		require.NoError(t, migrate.Validate(dir))
	})

	t.Run("RepositoryValidatesAndMatchesEmbedded", func(t *testing.T) {
		t.Parallel()
		local, err := migrate.NewLocalDir(migrationsPath)
		require.NoError(t, err)
		require.NoError(t, migrate.Validate(local))
		embedded, err := dbmigrate.Dir()
		require.NoError(t, err)
		want, err := embedded.Checksum()
		require.NoError(t, err)
		got, err := local.Checksum()
		require.NoError(t, err)
		require.Equal(t, want.Sum(), got.Sum(), "the binary embeds a different internal/schema/migrations than the repository holds")
	})

	t.Run("EditedFileIsMismatch", func(t *testing.T) {
		t.Parallel()
		dir, _ := copyMigrations(t)
		files, err := dir.Files()
		require.NoError(t, err)
		f := files[len(files)-1]
		require.NoError(t, dir.WriteFile(f.Name(), append(f.Bytes(), []byte("-- tampered\n")...)))
		require.ErrorIs(t, migrate.Validate(dir), migrate.ErrChecksumMismatch)

		// Re-hashing (`enqueuer migrate diff hash`) accepts the edit.
		require.NoError(t, dbmigrate.Rehash(dir))
		require.NoError(t, migrate.Validate(dir))
	})

	t.Run("AddedFileIsMismatch", func(t *testing.T) {
		t.Parallel()
		dir, _ := copyMigrations(t)
		require.NoError(t, dir.WriteFile("29991231000000_unhashed.sql", []byte("SELECT 1;\n")))
		require.ErrorIs(t, migrate.Validate(dir), migrate.ErrChecksumMismatch)
	})

	t.Run("ApplyRefusesTamperedDirectory", func(t *testing.T) {
		t.Parallel()
		dir, _ := copyMigrations(t)
		files, err := dir.Files()
		require.NoError(t, err)
		require.NoError(t, dir.WriteFile(files[0].Name(), append(files[0].Bytes(), []byte("-- tampered\n")...)))
		u := dbtest.EmptyDatabase(t)
		_, err = (&dbmigrate.Migrator{DB: openDB(t, u), Dir: dir}).Apply(context.Background())
		require.ErrorIs(t, err, migrate.ErrChecksumMismatch)
		var tables int
		require.NoError(t, connect(t, u).QueryRow(context.Background(),
			`SELECT count(*) FROM pg_tables WHERE schemaname IN ('public', 'atlas_schema_revisions')`).Scan(&tables))
		require.Zero(t, tables, "a refused directory must leave the database untouched")
	})
}
