// Package schema is the ledger schema's source of truth (schema.hcl, Atlas HCL) and its
// versioned Atlas migration directory (migrations/), embedded so that every binary can plan,
// apply and check them without the source tree. internal/dbmigrate plans, applies and checks
// them; internal/dbtest builds its template database from them.
//
// The directory stays Atlas CLI-compatible: from the repository root,
//
//	atlas migrate apply --dir file://internal/schema/migrations --url "$DATABASE_URL"
//
// applies what `enqueuer migrate` applies, and `enqueuer migrate diff NAME` (make migrate-diff)
// writes the next file here from schema.hcl.
package schema

import (
	"embed"
	"io/fs"
)

// Where the embedded files sit in the source tree, relative to the repository root. They are the
// defaults of `enqueuer migrate diff --dir/--schema`, which read and write the tree, not the
// embeds, and so run from the repository root (make migrate-diff does).
const (
	HCLPath        = "internal/schema/schema.hcl"
	MigrationsPath = "internal/schema/migrations"
)

// HCL is the desired state of the ledger's Postgres schema in Atlas HCL (schema.hcl).
//
//go:embed schema.hcl
var HCL []byte

//go:embed migrations/*.sql migrations/atlas.sum
var embedded embed.FS

// Migrations is the migration directory in the Atlas directory format: its *.sql files and
// atlas.sum sit at the root of this file system (fs.ReadFile(Migrations, "atlas.sum")).
var Migrations = func() fs.FS {
	dir, err := fs.Sub(embedded, "migrations")
	if err != nil {
		panic(err) // a constant, valid path into a constant embed: cannot fail
	}
	return dir
}()
